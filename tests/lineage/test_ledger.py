"""The deletion ledger: appends, status steps, the lock, and every tamper with its own error.

Tampering edits the files as an attacker would, without the trusted key; only
the untrusted-head case re-signs, with a key nobody trusts.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage._canonical import canonical_json, file_sha256, sha256_hex, text_sha256
from lineage.errors import (
    LedgerBusyError,
    LedgerEntryError,
    LineageError,
    MalformedLedgerError,
    MissingLedgerEntryError,
    ReorderedLedgerError,
    SignatureMismatchError,
    TamperedLedgerEntryError,
    TruncatedLedgerError,
    UnsignedLedgerEntryError,
    UntrustedKeyError,
)
from lineage.gate import Denials
from lineage.ledger import (
    GENESIS,
    HEAD,
    LEDGER,
    PREDICATE_TYPE,
    LedgerHead,
    Request,
    append_request,
    append_status,
    ledger_lock,
    roll_back_interrupted_append,
    verify_ledger,
)
from lineage.signing import (
    Signer,
    parse_statement,
    read_envelope,
    sign_envelope,
    subjects_of,
    verify_envelope,
    write_envelope,
)
from lineage.stages import ledger_denials
from tests.conftest import Keys


def digests(*record_ids: str) -> dict[str, str]:
    return {rid: text_sha256(f"the text of {rid}") for rid in record_ids}


def request(lock, keys: Keys, request_id: str, *record_ids: str, subjects=()) -> Request:
    return append_request(
        lock,
        keys.signer,
        keys.trusted,
        request_id=request_id,
        reason=f"ticket {request_id}",
        record_hashes=digests(*record_ids),
        subject_ids=subjects,
    )


def status(lock, keys: Keys, request_id: str, step: str, **more):
    return append_status(
        lock, keys.signer, keys.trusted, request_id=request_id, status=step, **more
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """A ledger of five signed entries: two requests and three status changes."""
    root = tmp_path_factory.mktemp("ledger")
    with ledger_lock(root) as lock:
        request(lock, keys, "req-1", "crm/p0001-email", "crm/p0001-city", subjects=["p0001"])
        status(lock, keys, "req-1", "retraining", shards=[2, 0])
        request(lock, keys, "req-2", "forum/post-00003")
        status(lock, keys, "req-1", "purged")
        status(lock, keys, "req-2", "failed", detail="shard 1 has no clean slice")
    return root


@pytest.fixture
def root(tmp_path: Path, signed: Path) -> Path:
    """A copy of the signed ledger, for one test to change."""
    shutil.copytree(signed / "data", tmp_path / "data")
    return tmp_path


def lines(root: Path) -> list[bytes]:
    return (root / LEDGER).read_bytes().splitlines()


def write_lines(root: Path, new: list[bytes]) -> None:
    (root / LEDGER).write_bytes(b"".join(line + b"\n" for line in new))


def chained(root: Path, **entry) -> None:
    """Append ``entry`` with a correct seq and prev, as a forger who read the ledger would."""
    old = lines(root)
    entry |= {"seq": len(old), "prev": sha256_hex(old[-1])}
    write_lines(root, [*old, canonical_json(entry)])


def sign_head(root: Path, signer: Signer) -> None:
    """A head that matches whatever the ledger now holds."""
    data = (root / LEDGER).read_bytes()
    last = sha256_hex(data.split(b"\n")[-2])
    head = LedgerHead(sha256_hex(data), data.count(b"\n"), last)
    write_envelope(root / HEAD, sign_envelope(head.statement(), signer))


def edit(index: int, old: bytes, new: bytes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        ls = lines(root)
        assert old in ls[index]
        ls[index] = ls[index].replace(old, new)
        write_lines(root, ls)

    return change


# -- an honest ledger ------------------------------------------------------------------


def test_an_untampered_ledger_verifies(root: Path, keys: Keys) -> None:
    ledger = verify_ledger(root, keys.trusted)
    assert [e.seq for e in ledger.entries] == [0, 1, 2, 3, 4]
    assert [r.request_id for r in ledger.requests()] == ["req-1", "req-2"]
    assert ledger.statuses == {"req-1": "purged", "req-2": "failed"}
    assert ledger.status_of("req-2") == "failed"
    assert [r.request_id for r in ledger.pending()] == ["req-1", "req-2"]
    req = ledger.request("req-1")
    assert req.record_ids == ("crm/p0001-city", "crm/p0001-email")
    assert req.record_hashes == digests("crm/p0001-email", "crm/p0001-city")
    assert ledger.entries[1].shards == (0, 2)


def test_each_line_chains_to_the_one_before_and_the_head_signs_the_file(
    root: Path, keys: Keys
) -> None:
    ls = lines(root)
    prevs = [json.loads(line)["prev"] for line in ls]
    assert prevs == [GENESIS, *(sha256_hex(line) for line in ls[:-1])]
    payload = verify_envelope(read_envelope(root / HEAD, what="head"), keys.trusted)
    statement = parse_statement(payload, PREDICATE_TYPE)
    assert subjects_of(statement) == {"data/ledger.jsonl": file_sha256(root / LEDGER)}
    assert statement["predicate"]["entries"] == 5
    assert statement["predicate"]["last_entry_sha256"] == sha256_hex(ls[-1])
    assert verify_ledger(root, keys.trusted).entries[-1].sha256 == sha256_hex(ls[-1])


def test_no_ledger_and_no_head_is_an_empty_ledger(tmp_path: Path, keys: Keys) -> None:
    ledger = verify_ledger(tmp_path, keys.trusted)
    assert ledger.entries == () and ledger.pending() == () and ledger.last_sha256 == GENESIS


def test_a_request_line_is_byte_exact() -> None:
    """Known answer: the line format is fixed, so any verifier can recompute the chain."""
    req = Request(
        0,
        GENESIS,
        "req-17",
        "ticket 17",
        {"crm/p0001-email": "ab" * 32},
        ("p0001",),
        "2026-11-23T10:00:00+00:00",
    )
    assert req.line == (
        b'{"kind":"request","prev":"' + b"0" * 64 + b'","reason":"ticket 17",'
        b'"received_at":"2026-11-23T10:00:00+00:00",'
        b'"record_hashes":{"crm/p0001-email":"' + b"ab" * 32 + b'"},'
        b'"record_ids":["crm/p0001-email"],"request_id":"req-17","schema_version":1,'
        b'"seq":0,"status":"received","subject_ids":["p0001"]}'
    )


def test_a_request_runs_to_complete_and_complete_is_final(tmp_path: Path, keys: Keys) -> None:
    with ledger_lock(tmp_path) as lock:
        request(lock, keys, "r", "crm/p0001-email")
        status(lock, keys, "r", "retraining", shards=[1])
        status(lock, keys, "r", "failed", detail="out of memory")
        for step in ("retraining", "purged", "verified", "complete"):
            status(lock, keys, "r", step)
        with pytest.raises(LedgerEntryError, match=r"nothing \(it is final\)"):
            status(lock, keys, "r", "retraining")
    ledger = verify_ledger(tmp_path, keys.trusted)
    assert ledger.status_of("r") == "complete"
    assert ledger.pending() == ()


def test_metadata_and_times_are_stored_as_plain_utc_json(tmp_path: Path, keys: Keys) -> None:
    cest = timezone(timedelta(hours=2))
    with ledger_lock(tmp_path) as lock:
        append_request(
            lock,
            keys.signer,
            keys.trusted,
            request_id="r",
            reason="ticket 9",
            record_hashes=digests("crm/a"),
            received_at=datetime(2026, 5, 1, 12, tzinfo=cest),
        )
        status(lock, keys, "r", "retraining", meta={"manifest_version": 7, "shards": (3, 1)})
    request_entry, step = verify_ledger(tmp_path, keys.trusted).entries
    assert request_entry.received_at == "2026-05-01T10:00:00+00:00"
    assert step.meta == {"manifest_version": 7, "shards": [3, 1]}
    assert datetime.fromisoformat(step.at).tzinfo == UTC


def step(request_id: str, to: str, **more):
    return lambda lock, k: status(lock, k, request_id, to, **more)


def ask(**fields):
    """An ``append_request`` with fields set by hand (by default a valid new request)."""
    args = {"request_id": "req-3", "reason": "ticket 3", "record_hashes": digests("crm/x")}
    return lambda lock, k: append_request(lock, k.signer, k.trusted, **(args | fields))


REFUSALS = [
    (step("req-2", "purged"), "can move to retraining, not purged"),
    (step("req-1", "failed"), "say why"),
    (step("req-9", "retraining"), "no request 'req-9'"),
    (step("req-1", "received"), "status is 'received'"),
    (step("req-1", "verified", shards=[-1]), "shard numbers"),
    (step("req-1", "verified", meta={"x": float("nan")}), "not plain JSON"),
    (ask(request_id="req-1"), "already in the ledger"),
    (ask(record_hashes={}), "at least one record or subject"),
    (ask(request_id=""), "request_id must be"),
    (ask(record_hashes={"crm/x": "not a digest"}), "sha256 hex"),
    (ask(received_at=datetime(2026, 1, 1)), "no time zone"),
]


@pytest.mark.parametrize(("change", "match"), REFUSALS)
def test_refused_changes_write_nothing(root: Path, keys: Keys, change, match: str) -> None:
    before = (root / LEDGER).read_bytes(), (root / HEAD).read_bytes()
    with ledger_lock(root) as lock, pytest.raises(LedgerEntryError, match=match):
        change(lock, keys)
    assert ((root / LEDGER).read_bytes(), (root / HEAD).read_bytes()) == before


def test_the_gate_denies_what_the_requests_name(root: Path) -> None:
    """Status entries name no ids; ``ledger_denials`` reads them as denying nothing."""
    assert ledger_denials(root / LEDGER) == Denials(
        records=frozenset({"crm/p0001-email", "crm/p0001-city", "forum/post-00003"}),
        subjects=frozenset({"p0001"}),
    )


# -- tampering -------------------------------------------------------------------------


def drop(index: int) -> Callable[[Path], None]:
    return lambda root: write_lines(root, [x for i, x in enumerate(lines(root)) if i != index])


def swap(a: int, b: int) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        ls = lines(root)
        ls[a], ls[b] = ls[b], ls[a]
        write_lines(root, ls)

    return change


def cut(n: int) -> Callable[[Path], None]:
    return lambda root: (root / LEDGER).write_bytes((root / LEDGER).read_bytes()[:-n])


UNSIGNED_STEP = {
    "schema_version": 1,
    "kind": "status",
    "request_id": "req-2",
    "status": "retraining",
    "at": "2026-11-23T10:00:00+00:00",
    "detail": "",
    "shards": [],
    "meta": {},
}
TAMPERS = {
    "an entry removed from the middle": (drop(2), MissingLedgerEntryError, "seq 2"),
    "the first entry removed": (drop(0), MissingLedgerEntryError, "seq 0"),
    "a subject taken off a request": (
        edit(0, b'"subject_ids":["p0001"]', b'"subject_ids":[]'),
        TamperedLedgerEntryError,
        "line 2",
    ),
    "a record digest changed": (
        edit(2, digests("forum/post-00003")["forum/post-00003"].encode(), b"0" * 64),
        TamperedLedgerEntryError,
        "line 4",
    ),
    "the last entry edited": (
        edit(4, b"no clean slice", b"all is well"),
        TamperedLedgerEntryError,
        "ledger.jsonl:5",
    ),
    "two entries swapped": (swap(1, 2), ReorderedLedgerError, "jsonl:3: entry 1 follows entry 2"),
    "an entry repeated": (
        lambda root: write_lines(root, [*lines(root)[:2], *lines(root)[1:]]),
        ReorderedLedgerError,
        "entry 1 follows entry 1",
    ),
    "the last entry cut off": (drop(4), TruncatedLedgerError, "counts 5"),
    "the file cut mid-line": (cut(10), TruncatedLedgerError, "no newline"),
    "the ledger deleted": (
        lambda root: (root / LEDGER).unlink(),
        TruncatedLedgerError,
        "0 entries",
    ),
    "an entry appended without signing": (
        lambda root: chained(root, **UNSIGNED_STEP),
        UnsignedLedgerEntryError,
        "line 6 was appended",
    ),
    "the head deleted": (
        lambda root: (root / HEAD).unlink(),
        UnsignedLedgerEntryError,
        "no signed",
    ),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_each_tamper_raises_its_own_error(root: Path, keys: Keys, name: str) -> None:
    change, error, named = TAMPERS[name]
    change(root)
    with pytest.raises(error) as caught:
        verify_ledger(root, keys.trusted)
    assert type(caught.value) is error
    assert named in str(caught.value)


@pytest.mark.parametrize("name", ["a subject taken off a request", "the last entry cut off"])
def test_an_append_never_signs_over_a_tampered_ledger(root: Path, keys: Keys, name: str) -> None:
    change, error, _ = TAMPERS[name]
    change(root)
    tampered = (root / LEDGER).read_bytes(), (root / HEAD).read_bytes()
    with ledger_lock(root) as lock, pytest.raises(error):
        request(lock, keys, "req-3", "crm/p0002-email")
    assert ((root / LEDGER).read_bytes(), (root / HEAD).read_bytes()) == tampered


def test_a_head_signed_by_an_untrusted_key_is_refused(root: Path, keys: Keys) -> None:
    """The forger un-deletes a subject and re-signs a head that matches, with their own key."""
    edit(0, b'"subject_ids":["p0001"]', b'"subject_ids":[]')(root)
    sign_head(root, keys.stranger)
    with pytest.raises(UntrustedKeyError):
        verify_ledger(root, keys.trusted)


def test_an_edited_head_is_refused(root: Path, keys: Keys) -> None:
    drop(4)(root)
    envelope = json.loads((root / HEAD).read_text())
    payload = base64.b64decode(envelope["payload"]).replace(b'"entries":5', b'"entries":4')
    envelope["payload"] = base64.b64encode(payload).decode()
    (root / HEAD).write_text(json.dumps(envelope))
    with pytest.raises(SignatureMismatchError):
        verify_ledger(root, keys.trusted)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_changed_byte_goes_unnoticed(root: Path, keys: Keys, data: st.DataObject) -> None:
    original = (root / LEDGER).read_bytes()
    i = data.draw(st.integers(0, len(original) - 1), label="offset")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[i]), label="byte")
    try:
        (root / LEDGER).write_bytes(original[:i] + bytes([byte]) + original[i + 1 :])
        with pytest.raises(LineageError):
            verify_ledger(root, keys.trusted)
    finally:
        (root / LEDGER).write_bytes(original)


# -- malformed lines ---------------------------------------------------------------------


def test_a_line_that_is_not_an_entry_is_named(root: Path, keys: Keys) -> None:
    write_lines(root, [*lines(root)[:2], b"{oops", *lines(root)[3:]])
    with pytest.raises(MalformedLedgerError, match=r"ledger\.jsonl:3: not a ledger entry"):
        verify_ledger(root, keys.trusted)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({**UNSIGNED_STEP, "kind": "note"}, "kind is 'note'"),
        ({**UNSIGNED_STEP, "status": "deleted"}, "status is 'deleted'"),
        ({**UNSIGNED_STEP, "record_ids": ["crm/x"]}, "unknown field 'record_ids'"),
        ({**UNSIGNED_STEP, "request_id": "req-1", "status": "complete"}, "line 6: 'req-1' is"),
    ],
)
def test_a_signed_entry_that_breaks_the_rules_is_named(
    root: Path, keys: Keys, entry: dict, match: str
) -> None:
    """Even under a valid signature: a ledger is only what its rules allow."""
    chained(root, **entry)
    sign_head(root, keys.signer)
    with pytest.raises(MalformedLedgerError, match=match):
        verify_ledger(root, keys.trusted)


def test_a_signed_entry_in_another_spelling_is_refused(root: Path, keys: Keys) -> None:
    old = lines(root)
    entry = {**UNSIGNED_STEP, "seq": len(old), "prev": sha256_hex(old[-1])}
    write_lines(root, [*old, json.dumps(entry).encode()])
    sign_head(root, keys.signer)
    with pytest.raises(MalformedLedgerError, match=r"ledger\.jsonl:6: .* not canonical"):
        verify_ledger(root, keys.trusted)


# -- the lock ----------------------------------------------------------------------------


def _hold(root: Path, held, release) -> None:
    with ledger_lock(root):
        held.set()
        release.wait(10)


def _append_three(root: Path, keys: Keys, name: str) -> None:
    for i in range(3):
        with ledger_lock(root, timeout=20) as lock:
            request(lock, keys, f"{name}-{i}", f"crm/{name}-{i}")


def test_the_lock_waits_for_another_process_or_times_out(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    held, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold, args=(tmp_path, held, release))
    holder.start()
    try:
        assert held.wait(10)
        with (
            pytest.raises(LedgerBusyError, match=r"ledger\.lock"),
            ledger_lock(tmp_path, timeout=0.1),
        ):
            pass
        release.set()
        with ledger_lock(tmp_path, timeout=10) as lock:
            assert lock.held
    finally:
        release.set()
        holder.join(10)


def test_concurrent_deletions_lose_no_entry(tmp_path: Path, keys: Keys) -> None:
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_append_three, args=(tmp_path, keys, n)) for n in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0, 0]
    ledger = verify_ledger(tmp_path, keys.trusted)
    assert sorted(r.request_id for r in ledger.requests()) == [
        f"{n}-{i}" for n in "ab" for i in range(3)
    ]


def test_a_released_lock_cannot_append(tmp_path: Path, keys: Keys) -> None:
    with ledger_lock(tmp_path) as lock:
        pass
    with pytest.raises(LedgerEntryError, match="released"):
        request(lock, keys, "r", "crm/a")
    assert not (tmp_path / LEDGER).exists()


def _crash_before_the_head(root: Path, keys: Keys, append) -> bytes:
    """An append whose process died after the ledger rename, before the head's."""
    head = (root / HEAD).read_bytes()
    with ledger_lock(root) as lock:
        append(lock)
    (root / HEAD).write_bytes(head)
    return (root / LEDGER).read_bytes()


def test_an_interrupted_append_is_rolled_back_not_signed(root: Path, keys: Keys) -> None:
    before = (root / LEDGER).read_bytes()
    _crash_before_the_head(root, keys, lambda lock: status(lock, keys, "req-1", "verified"))
    with pytest.raises(UnsignedLedgerEntryError, match="exante delete --resume"):
        verify_ledger(root, keys.trusted)
    with ledger_lock(root) as lock:
        line = roll_back_interrupted_append(lock, keys.trusted)
    assert b'"status":"verified"' in line
    assert (root / LEDGER).read_bytes() == before
    assert verify_ledger(root, keys.trusted).status_of("req-1") == "purged"
    with ledger_lock(root) as lock:
        assert roll_back_interrupted_append(lock, keys.trusted) is None  # nothing left to undo


def test_more_than_one_unsigned_line_is_not_rolled_back(root: Path, keys: Keys) -> None:
    """Two lines past the head is not what a crash leaves: it stays for verify to report."""

    def two(lock) -> None:
        status(lock, keys, "req-1", "verified")
        status(lock, keys, "req-1", "complete")

    after = _crash_before_the_head(root, keys, two)
    with ledger_lock(root) as lock:
        assert roll_back_interrupted_append(lock, keys.trusted) is None
    assert (root / LEDGER).read_bytes() == after
    with pytest.raises(UnsignedLedgerEntryError, match="lines 6 to 7"):
        verify_ledger(root, keys.trusted)


# -- the queue: an ack entry states the deadline; queued requests wait for a flush -------


def ack(lock, keys: Keys, request_id: str, deadline: datetime, **more):
    from lineage.ledger import append_ack

    return append_ack(lock, keys.signer, keys.trusted, request_id=request_id,
                      deadline=deadline, rule="GDPR Art. 12(3)", **more)  # fmt: skip


def test_a_queued_request_is_acknowledged_then_flushed_to_complete(
    tmp_path: Path, keys: Keys
) -> None:
    due = datetime(2027, 1, 3, 10, tzinfo=UTC)
    with ledger_lock(tmp_path) as lock:
        request(lock, keys, "q", "crm/p0001-email")
        entry = ack(lock, keys, "q", due)
        assert verify_ledger(tmp_path, keys.trusted).status_of("q") == "queued"
        for to in ("retraining", "purged", "verified", "complete"):
            status(lock, keys, "q", to)
    ledger = verify_ledger(tmp_path, keys.trusted)
    assert ledger.ack("q") == entry and entry.deadline == "2027-01-03T10:00:00+00:00"
    assert json.loads(lines(tmp_path)[1])["kind"] == "ack"
    assert ledger.pending() == ()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda lock, k: ack(lock, k, "req-9", datetime(2030, 1, 1, tzinfo=UTC)), "no request"),
        (lambda lock, k: ack(lock, k, "req-1", datetime(2030, 1, 1, tzinfo=UTC)), "not queued"),
        (lambda lock, k: ack(lock, k, "req-3", datetime(2020, 1, 1, tzinfo=UTC)), "after"),
        (step("req-3", "queued"), "status is 'queued'"),
    ],
)
def test_an_ack_must_follow_a_received_request_and_lie_ahead(
    root: Path, keys: Keys, change, match: str
) -> None:
    with ledger_lock(root) as lock:
        ask()(lock, keys)  # req-3, received
        before = (root / LEDGER).read_bytes()
        with pytest.raises(LedgerEntryError, match=match):
            change(lock, keys)
    assert (root / LEDGER).read_bytes() == before


def test_an_edited_deadline_breaks_the_chain(root: Path, keys: Keys) -> None:
    with ledger_lock(root) as lock:
        ask()(lock, keys)
        ack(lock, keys, "req-3", datetime(2030, 1, 1, tzinfo=UTC))
    edit(-1, b"2030-01-01", b"2031-01-01")(root)
    with pytest.raises(TamperedLedgerEntryError):
        verify_ledger(root, keys.trusted)
