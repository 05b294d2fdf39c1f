"""The deletion ledger: every erasure request and its progress, append-only and hash-chained.

``data/ledger.jsonl`` holds one canonical-JSON entry per line. Each names its
position (``seq``) and the SHA-256 of the previous line's bytes (``prev``; 64
zeros for the first), so removing, editing or moving an entry breaks a link.
``data/ledger.head.dsse.json`` signs the file's digest, its entry count and its
last line's hash, so cutting entries off the end, or appending unsigned ones,
breaks the head. A queued request (``exante delete --enqueue``) is followed by
an ``ack`` entry stating its deadline (:mod:`lineage.acknowledgement`) and waits
as ``queued`` until a flush processes it. A request keeps record ids and the digests of their text,
never the text: the ledger outlives the data it deletes. Its ``record_ids``
and ``subject_ids`` are what the gate denies (:func:`lineage.stages.ledger_denials`).

An append is read-verify-write: a deletion holds :func:`ledger_lock` while it
runs, and each append verifies the ledger before it re-signs the head, so a
tampered ledger is never signed over.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

from lineage._canonical import atomic_write, canonical_json, sha256_hex
from lineage._shape import (
    is_count,
    is_sha256,
    is_sorted_set,
    is_strs,
    is_utc,
    key_problems,
    shown,
)
from lineage.errors import (
    EnvelopeFormatError,
    LedgerBusyError,
    LedgerEntryError,
    MalformedLedgerError,
    MissingLedgerEntryError,
    ReorderedLedgerError,
    TamperedLedgerEntryError,
    TruncatedLedgerError,
    UnsignedLedgerEntryError,
)
from lineage.layout import LAYOUT
from lineage.signing import (
    Signer,
    make_statement,
    parse_statement,
    read_envelope,
    sign_envelope,
    subjects_of,
    verify_envelope,
    write_envelope,
)

LEDGER = LAYOUT.ledger
HEAD = LAYOUT.ledger_head
LOCK = LAYOUT.ledger_lock
PREDICATE_TYPE = "https://exante.dev/attestations/deletion-ledger/v1"
SCHEMA_VERSION = 1
GENESIS = "0" * 64
CHAIN_RULE = "prev = sha256(previous line's bytes, without its newline); 64 zeros for seq 0"
WHAT = "ledger head"
_POLL_S = 0.05

# A request is ``received`` when appended; each status entry moves it one step.
# An ``ack`` entry moves it to ``queued`` (it waits for a flush);
# ``failed`` may resume at ``retraining``; ``complete`` is final.
NEXT = {
    "received": frozenset({"queued", "retraining", "failed"}),
    "queued": frozenset({"retraining", "failed"}),
    "retraining": frozenset({"purged", "failed"}),
    "purged": frozenset({"verified", "failed"}),
    "verified": frozenset({"complete", "failed"}),
    "failed": frozenset({"retraining"}),
    "complete": frozenset(),
}
STEPS = ("retraining", "purged", "verified", "complete", "failed")
_COMMON = ("schema_version", "seq", "prev", "kind", "request_id", "status")
_KEYS = {
    "request": frozenset(
        (*_COMMON, "reason", "record_ids", "subject_ids", "record_hashes", "received_at")
    ),
    "status": frozenset((*_COMMON, "at", "detail", "shards", "meta")),
    "ack": frozenset((*_COMMON, "at", "deadline", "rule")),
}


# -- entries ------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """What every entry has; subclasses say what else, in ``to_dict``."""

    seq: int
    prev: str
    request_id: str

    def _common(self) -> dict:
        """The fields every entry has (``_COMMON``); each kind adds its own."""
        return {
            "schema_version": SCHEMA_VERSION,
            "seq": self.seq,
            "prev": self.prev,
            "kind": self.kind,
            "request_id": self.request_id,
            "status": self.status,
        }

    @property
    def line(self) -> bytes:
        """The entry's line in the ledger, without its newline."""
        return canonical_json(self.to_dict())

    @property
    def sha256(self) -> str:
        """What the next entry's ``prev`` names, and a receipt cites."""
        return sha256_hex(self.line)


@dataclass(frozen=True)
class Request(_Entry):
    """An erasure request: the records (by id and text digest) and the subjects to delete."""

    reason: str
    record_hashes: Mapping[str, str]  # record id -> sha256 of its canonical text
    subject_ids: tuple[str, ...]
    received_at: str
    kind: ClassVar[str] = "request"
    status: ClassVar[str] = "received"

    @property
    def record_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.record_hashes))

    def to_dict(self) -> dict:
        return self._common() | {
            "reason": self.reason,
            "record_ids": list(self.record_ids),
            "subject_ids": list(self.subject_ids),
            "record_hashes": dict(self.record_hashes),
            "received_at": self.received_at,
        }


@dataclass(frozen=True)
class StatusChange(_Entry):
    """One step of a request; ``failed`` says why in ``detail``."""

    status: str
    at: str
    detail: str = ""
    shards: tuple[int, ...] = ()
    meta: Mapping = field(default_factory=dict)  # small JSON facts for an auditor
    kind: ClassVar[str] = "status"

    def to_dict(self) -> dict:
        return self._common() | {
            "at": self.at,
            "detail": self.detail,
            "shards": list(self.shards),
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class Ack(_Entry):
    """A queued request's acknowledgement: when it was acknowledged, and its receipt deadline.

    ``rule`` names where the deadline comes from (GDPR Art. 12(3): one month of receipt).
    """

    at: str
    deadline: str
    rule: str
    kind: ClassVar[str] = "ack"
    status: ClassVar[str] = "queued"

    def to_dict(self) -> dict:
        return self._common() | {"at": self.at, "deadline": self.deadline, "rule": self.rule}


Entry = Request | StatusChange | Ack


def _entry(d: dict) -> Entry:
    """The entry ``d`` describes; ``d`` has passed :func:`entry_problems`."""
    common = d["seq"], d["prev"], d["request_id"]
    if d["kind"] == "ack":
        return Ack(*common, d["at"], d["deadline"], d["rule"])
    if d["kind"] == "request":
        hashes, subjects = dict(d["record_hashes"]), tuple(d["subject_ids"])
        return Request(*common, d["reason"], hashes, subjects, d["received_at"])
    return StatusChange(*common, d["status"], d["at"], d["detail"], tuple(d["shards"]), d["meta"])


def entry_problems(d: dict) -> list[str]:
    """Every way ``d`` is not a valid entry (beyond ``seq`` and ``prev``); empty if none."""
    keys = _KEYS.get(d.get("kind")) if isinstance(d.get("kind"), str) else None
    if keys is None:
        return [f"kind is {shown(d.get('kind'))}, not one of {', '.join(sorted(_KEYS))}"]
    if problems := key_problems(d, keys, what=f"a {d['kind']} entry"):
        return problems
    if d["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {shown(d['schema_version'])}, not {SCHEMA_VERSION}")
    rid = d["request_id"]
    if not isinstance(rid, str) or not rid or not rid.isprintable():
        problems.append("request_id must be a non-empty printable string")
    check = {"request": _request_problems, "status": _status_problems, "ack": _ack_problems}
    return problems + check[d["kind"]](d)


def _request_problems(d: dict) -> list[str]:
    problems = []
    if d["status"] != "received":
        problems.append("a request's status is 'received'")
    if not isinstance(d["reason"], str):
        problems.append("reason must be a string")
    for name in ("record_ids", "subject_ids"):
        if not (is_strs(d[name]) and is_sorted_set(d[name])):
            problems.append(f"{name} must be a sorted list of distinct strings")
    hashes = d["record_hashes"]
    if not isinstance(hashes, dict) or not all(is_sha256(h) for h in hashes.values()):
        problems.append("record_hashes must map record ids to sha256 hex digests")
    elif sorted(hashes) != d["record_ids"]:
        problems.append("record_hashes must have exactly the record_ids as keys")
    if not d["record_ids"] and not d["subject_ids"]:
        problems.append("a request names at least one record or subject")
    if not is_utc(d["received_at"]):
        problems.append("received_at must be an ISO 8601 time in UTC")
    return problems


def _status_problems(d: dict) -> list[str]:
    problems = []
    if d["status"] not in STEPS:
        problems.append(f"status is {shown(d['status'])}, not one of {', '.join(STEPS)}")
    if not is_utc(d["at"]):
        problems.append("at must be an ISO 8601 time in UTC")
    if not isinstance(d["detail"], str) or (d["status"] == "failed" and not d["detail"]):
        problems.append("detail must be a string, and say why when the status is 'failed'")
    shards = d["shards"]
    if not isinstance(shards, list) or not all(map(is_count, shards)) or not is_sorted_set(shards):
        problems.append("shards must be a sorted list of distinct shard numbers")
    if not isinstance(d["meta"], dict):
        problems.append("meta must be an object")
    return problems


def _ack_problems(d: dict) -> list[str]:
    problems = [] if d["status"] == "queued" else ["an ack's status is 'queued'"]
    if not (is_utc(d["at"]) and is_utc(d["deadline"])):
        problems.append("at and deadline must be ISO 8601 times in UTC")
    elif datetime.fromisoformat(d["deadline"]) <= datetime.fromisoformat(d["at"]):
        problems.append("the deadline must come after the acknowledgement")
    if not isinstance(d["rule"], str) or not d["rule"]:
        problems.append("rule must say where the deadline comes from")
    return problems


def _step(statuses: dict[str, str], entry: Entry) -> str | None:
    """Apply ``entry`` to ``statuses``, or say why it cannot follow what came before."""
    current = statuses.get(entry.request_id)
    if isinstance(entry, Request):
        if current is not None:
            return f"request {shown(entry.request_id)} is already in the ledger"
    elif current is None:
        return f"no request {shown(entry.request_id)} precedes this status"
    elif entry.status not in NEXT[current]:
        allowed = " or ".join(sorted(NEXT[current])) or "nothing (it is final)"
        return (
            f"{shown(entry.request_id)} is {current}: it can move to {allowed}, not {entry.status}"
        )
    statuses[entry.request_id] = entry.status
    return None


# -- the ledger and its head --------------------------------------------------


@dataclass(frozen=True)
class LedgerHead:
    """What the head signs: the file's digest, its entry count and its last line's hash.

    Count and last hash pin every entry through the chain (and with it the
    file's bytes); the file's digest is the subject so that any in-toto
    verifier can check the file without exante.
    """

    ledger_sha256: str
    entries: int
    last_entry_sha256: str

    def statement(self) -> bytes:
        predicate = {
            "schema_version": SCHEMA_VERSION,
            "entries": self.entries,
            "last_entry_sha256": self.last_entry_sha256,
            "chain": CHAIN_RULE,
        }
        return make_statement({LEDGER.as_posix(): self.ledger_sha256}, PREDICATE_TYPE, predicate)

    @classmethod
    def from_statement(cls, statement: dict) -> LedgerHead:
        p, digest = statement["predicate"], subjects_of(statement).get(LEDGER.as_posix())
        if not (
            p.get("schema_version") == SCHEMA_VERSION
            and is_count(p.get("entries"))
            and is_sha256(p.get("last_entry_sha256"))
            and is_sha256(digest)
        ):
            raise EnvelopeFormatError(f"{WHAT}: its predicate or subject is malformed")
        return cls(digest, p["entries"], p["last_entry_sha256"])


@dataclass(frozen=True)
class Ledger:
    """A verified ledger: its entries in order, and where each request stands."""

    entries: tuple[Entry, ...] = ()
    statuses: Mapping[str, str] = field(default_factory=dict)  # request id -> latest status

    @property
    def last_sha256(self) -> str:
        return self.entries[-1].sha256 if self.entries else GENESIS

    def requests(self) -> tuple[Request, ...]:
        return tuple(e for e in self.entries if isinstance(e, Request))

    def request(self, request_id: str) -> Request:
        for r in self.requests():
            if r.request_id == request_id:
                return r
        raise LedgerEntryError(f"no request {request_id!r} in the ledger")

    def status_of(self, request_id: str) -> str:
        if request_id not in self.statuses:
            raise LedgerEntryError(f"no request {request_id!r} in the ledger")
        return self.statuses[request_id]

    def ack(self, request_id: str) -> Ack | None:
        """The request's acknowledgement, if it was queued."""
        acks = (e for e in self.entries if isinstance(e, Ack) and e.request_id == request_id)
        return next(acks, None)

    def pending(self) -> tuple[Request, ...]:
        """Requests not yet complete, oldest first: what a resumed deletion must finish."""
        return tuple(r for r in self.requests() if self.statuses[r.request_id] != "complete")


def verify_ledger(root: Path, trusted: Mapping) -> Ledger:
    """Check the signed head and every link; return the entries.

    A removed, moved, edited, cut-off or unsigned entry each raise their own
    :class:`~lineage.errors.VerificationError` subclass; a line that is not an
    entry raises :class:`~lineage.errors.MalformedLedgerError` naming file:line.
    No ledger and no head is an empty ledger.
    """
    root = Path(root)
    path = root / LEDGER
    head = _load_head(root / HEAD, trusted)
    data = _read(path)
    if head is None:
        if data:
            raise UnsignedLedgerEntryError(f"{path} has entries but no signed head {HEAD}")
        return Ledger()
    lines = _lines(data, path)
    documents = [_decode(line, path, n) for n, line in enumerate(lines, 1)]
    _check_sequence([d["seq"] for d in documents], path)
    hashes = [sha256_hex(line) for line in lines]
    _check_chain([d["prev"] for d in documents], hashes, path, signed=head.entries)
    _check_head(head, hashes, path)
    pairs = zip(documents, lines, strict=True)
    entries = tuple(_parse(d, line, f"{path}:{n}") for n, (d, line) in enumerate(pairs, 1))
    return Ledger(entries, _replay(entries, path))


def _load_head(path: Path, trusted: Mapping) -> LedgerHead | None:
    if not path.exists():
        return None
    payload = verify_envelope(read_envelope(path, what=WHAT), trusted, what=WHAT)
    return LedgerHead.from_statement(parse_statement(payload, PREDICATE_TYPE, what=WHAT))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _lines(data: bytes, path: Path) -> list[bytes]:
    """The lines of ``data``; every line ends with a newline, so a last one without was cut."""
    if data and not data.endswith(b"\n"):
        raise TruncatedLedgerError(f"{path}: the last line has no newline; the file was cut short")
    return data.split(b"\n")[:-1]


def _decode(line: bytes, path: Path, n: int) -> dict:
    """A line's JSON object, provided it has the ``seq`` and ``prev`` the chain checks need."""
    try:
        d = json.loads(line)
    except (ValueError, RecursionError):  # bad UTF-8/JSON, a huge int, deep nesting
        d = None
    if not isinstance(d, dict) or not is_count(d.get("seq")) or not is_sha256(d.get("prev")):
        raise MalformedLedgerError(
            f"{path}:{n}: not a ledger entry (a JSON object with a seq and a sha256 prev)"
        )
    return d


def _check_sequence(seqs: list[int], path: Path) -> None:
    for i in range(1, len(seqs)):
        if seqs[i] <= seqs[i - 1]:
            raise ReorderedLedgerError(
                f"{path}:{i + 1}: entry {seqs[i]} follows entry {seqs[i - 1]}; "
                "entries were moved or repeated"
            )
    gaps = [(a + 1, b - 1) for a, b in pairwise([-1, *seqs]) if b > a + 1]
    if gaps:
        raise MissingLedgerEntryError(
            f"{path}: entries were removed; restore the ledger from a copy whose head verifies:",
            problems=[f"seq {a}" if a == b else f"seq {a} to {b}" for a, b in gaps],
        )


def _check_chain(prevs: list[str], hashes: list[str], path: Path, *, signed: int) -> None:
    """Each ``prev`` names the line before; a break with lines missing is a removal, not an edit."""
    expected = [GENESIS, *hashes]
    broken = [n for n, prev in enumerate(prevs, 1) if prev != expected[n - 1]]
    if broken and len(hashes) < signed:
        raise MissingLedgerEntryError(
            f"{path}: entries were removed before line {broken[0]} and the rest renumbered "
            f"(the signed head counts {signed} entries, the file has {len(hashes)}; line "
            f"{broken[0]}'s prev names no line here); restore the ledger from a copy whose "
            "head verifies"
        )
    if broken:
        raise TamperedLedgerEntryError(
            f"{path}: entries were edited after they were chained; "
            "restore the ledger from a copy whose head verifies:",
            problems=[f"line {n}: prev is not the hash of the line before it" for n in broken],
        )


def _check_head(head: LedgerHead, hashes: list[str], path: Path) -> None:
    n, m = len(hashes), head.entries
    if n < m:
        raise TruncatedLedgerError(
            f"{path} has {n} entries but its signed head counts {m}: entries were cut off "
            "the end, or removed elsewhere with the rest renumbered and re-chained, "
            "or an older ledger was put back"
        )
    if (hashes[m - 1] if m else GENESIS) != head.last_entry_sha256:
        raise TamperedLedgerEntryError(
            f"{path}:{m}: the last signed entry differs from the one its head signed"
        )
    if n > m:
        which = f"line {n} was" if n == m + 1 else f"lines {m + 1} to {n} were"
        hint = (
            "; if a deletion was interrupted, `exante delete --resume` rolls that one entry back"
            if n == m + 1
            else ""
        )
        raise UnsignedLedgerEntryError(
            f"{path}: {which} appended after the head was signed; "
            f"only a deletion appends, and it signs the head{hint}"
        )


def _parse(d: dict, line: bytes, where: str) -> Entry:
    if problems := entry_problems(d):
        raise MalformedLedgerError(f"{where}: not a valid ledger entry:", problems=problems)
    entry = _entry(d)
    if entry.line != line:
        raise MalformedLedgerError(f"{where}: the entry is not canonical JSON (sorted keys)")
    return entry


def _replay(entries: tuple[Entry, ...], path: Path) -> dict[str, str]:
    statuses: dict[str, str] = {}
    problems = []
    for n, entry in enumerate(entries, 1):
        if problem := _step(statuses, entry):
            problems.append(f"line {n}: {problem}")
    if problems:
        raise MalformedLedgerError(
            f"{path}: entries that cannot follow the ones before:", problems=problems
        )
    return statuses


# -- appending ------------------------------------------------------------------


class LedgerLock:
    """Held while its ``with ledger_lock(...)`` block runs; appends require one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.held = True


@contextmanager
def ledger_lock(root: Path, *, timeout: float | None = None) -> Iterator[LedgerLock]:
    """Serialize deletions across processes with ``flock`` on ``.exante/locks/ledger.lock``.

    Blocks until the lock is free, or raises :class:`~lineage.errors.LedgerBusyError`
    after ``timeout`` seconds. The kernel releases the lock if its holder dies.
    """
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    lock = LedgerLock(Path(root))
    try:
        _acquire(fd, path, timeout)
        yield lock
    finally:
        lock.held = False
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LedgerBusyError(
                    f"another deletion has held {path} for over {timeout:g}s; "
                    "run again when it has finished"
                ) from None
            time.sleep(_POLL_S)


def append_request(
    lock: LedgerLock,
    signer: Signer,
    trusted: Mapping,
    *,
    request_id: str,
    reason: str,
    record_hashes: Mapping[str, str],
    subject_ids: Iterable[str] = (),
    received_at: datetime | None = None,
) -> Request:
    """Record an erasure request; ``record_hashes`` maps record ids to their text's sha256.

    ``reason`` is a reference (a ticket number), not the requester's words: the
    ledger outlives the data, so it holds no personal data beyond ids.
    """
    fields = {
        "kind": "request",
        "request_id": request_id,
        "status": "received",
        "reason": reason,
        "record_ids": sorted(record_hashes),
        "subject_ids": sorted(set(subject_ids)),
        "record_hashes": dict(record_hashes),
        "received_at": _utc(received_at),
    }
    return _append(lock, signer, trusted, fields)


def append_status(
    lock: LedgerLock,
    signer: Signer,
    trusted: Mapping,
    *,
    request_id: str,
    status: str,
    detail: str = "",
    shards: Iterable[int] = (),
    meta: Mapping | None = None,
) -> StatusChange:
    """Move a request one step (see ``NEXT``); ``failed`` needs a ``detail`` saying why.

    ``meta`` holds small JSON facts for an auditor (a manifest version, model digests).
    """
    fields = {
        "kind": "status",
        "request_id": request_id,
        "status": status,
        "at": _utc(None),
        "detail": detail,
        "shards": sorted(set(shards)),
        "meta": _plain(meta or {}),
    }
    return _append(lock, signer, trusted, fields)


def append_ack(
    lock: LedgerLock,
    signer: Signer,
    trusted: Mapping,
    *,
    request_id: str,
    deadline: datetime,
    rule: str,
    at: datetime | None = None,
) -> Ack:
    """Queue a ``received`` request: acknowledge it with its receipt deadline."""
    fields = {
        "kind": "ack",
        "request_id": request_id,
        "status": "queued",
        "at": _utc(at),
        "deadline": _utc(deadline),
        "rule": rule,
    }
    return _append(lock, signer, trusted, fields)


def _utc(t: datetime | None) -> str:
    t = datetime.now(UTC) if t is None else t
    if t.utcoffset() is None:
        raise LedgerEntryError(f"{t.isoformat()} has no time zone; pass an aware datetime")
    return t.astimezone(UTC).replace(microsecond=0).isoformat()


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _plain(meta: Mapping) -> dict:
    """``meta`` as a reader parses it back (tuples become lists); refuse what JSON cannot hold."""
    try:
        return json.loads(canonical_json(dict(meta)), parse_constant=_refuse)
    except (TypeError, ValueError) as exc:
        raise LedgerEntryError(f"meta is not plain JSON: {exc}") from None


def _append(lock: LedgerLock, signer: Signer, trusted: Mapping, fields: dict) -> Entry:
    if not lock.held:
        raise LedgerEntryError("the ledger lock was released; append inside `with ledger_lock()`")
    ledger = verify_ledger(lock.root, trusted)
    d = {"schema_version": SCHEMA_VERSION, "seq": len(ledger.entries), "prev": ledger.last_sha256}
    d |= fields
    if problems := entry_problems(d):
        raise LedgerEntryError(
            f"refused a ledger entry for {d['request_id']!r}:", problems=problems
        )
    entry = _entry(d)
    if problem := _step(dict(ledger.statuses), entry):
        raise LedgerEntryError(f"refused a ledger entry: {problem}")
    _write(lock.root, (*ledger.entries, entry), signer)
    return entry


def roll_back_interrupted_append(lock: LedgerLock, trusted: Mapping) -> bytes | None:
    """Drop the one entry a crash left between writing the ledger and signing its head.

    An append renames the new ledger into place and then the new head, so a
    kill between the two leaves exactly one line the head does not cover. It
    was never acknowledged, and an unsigned line cannot be told from a forged
    one, so it is removed (the step it recorded is redone by ``--resume``),
    never signed. The rest must be exactly the bytes the head signed; anything
    else is left for :func:`verify_ledger` to report. Returns the line removed.
    """
    if not lock.held:
        raise LedgerEntryError("the ledger lock was released; recover inside `with ledger_lock()`")
    root = Path(lock.root)
    head = _load_head(root / HEAD, trusted)
    data = _read(root / LEDGER)
    if head is None or not data.endswith(b"\n"):
        return None
    lines = data.split(b"\n")[:-1]
    if len(lines) != head.entries + 1:
        return None
    kept = b"".join(line + b"\n" for line in lines[:-1])
    if sha256_hex(kept) != head.ledger_sha256:
        return None
    atomic_write(root / LEDGER, kept)
    return lines[-1]


def _write(root: Path, entries: tuple[Entry, ...], signer: Signer) -> None:
    """Sign the head first, so that the two renames follow each other closely."""
    data = b"".join(e.line + b"\n" for e in entries)
    head = LedgerHead(sha256_hex(data), len(entries), entries[-1].sha256)
    envelope = sign_envelope(head.statement(), signer)
    atomic_write(root / LEDGER, data)
    write_envelope(root / HEAD, envelope)
