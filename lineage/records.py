"""Records: the unit of lineage. One line of JSONL per record, hashed on its canonical text.

A record may carry its own terms (license, consent basis, TDM opt-out,
retention start) that override its source's. Its digest then covers the text
*and* the terms, so the Merkle leaf the manifest signs binds both; a record
without terms hashes its text alone, as it always has.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import get_args

from lineage._canonical import (
    canonical_json,
    canonical_text,
    sha256_hex,
    text_sha256,
)
from lineage._ids import (
    RAW_ID_FORM,
    RECORD_ID_FORM,
    SOURCE_ID_FORM,
    is_raw_id,
    is_record_id,
    is_source_id,
)
from lineage._licenses import is_known_license
from lineage._shape import is_sha256
from lineage.errors import DuplicateRecordError, MalformedRecordError
from lineage.sources import ConsentBasis

SCHEMA_VERSION = 1
CONSENT_BASES = frozenset(get_args(ConsentBasis))
Terms = tuple[tuple[str, str | bool], ...]  # sorted (field, value) pairs; empty: the source's
_TERM_FORMS = {
    "license": (str, is_known_license, "an SPDX id or LicenseRef-<name>"),
    "consent_basis": (
        str,
        CONSENT_BASES.__contains__,
        f"one of {', '.join(sorted(CONSENT_BASES))}",
    ),
    "tdm_opt_out": (bool, lambda v: True, "true or false"),
    "retention_start": (str, lambda v: _is_iso_date(v), "an ISO date (YYYY-MM-DD)"),
}


def terms_problems(terms: dict, *, name=lambda k: f"'terms.{k}'") -> list[str]:
    """What is wrong with a record's own terms, by ``name(field)`` (never echoing the value)."""
    problems = [f"{name(k)} is not a record term" for k in terms if k not in _TERM_FORMS]
    for key, (kind, ok, form) in _TERM_FORMS.items():
        if key in terms and not (isinstance(terms[key], kind) and ok(terms[key])):
            problems.append(f"{name(key)} must be {form}")
    return problems


def _is_iso_date(value: str) -> bool:
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def record_digest(text: str, terms: Terms = ()) -> str:
    """sha256 of the canonical text; of canonical ``{"terms", "text"}`` JSON when terms are set."""
    if not terms:
        return text_sha256(text)
    return sha256_hex(canonical_json({"terms": dict(terms), "text": canonical_text(text)}))


@dataclass(frozen=True, order=True)
class Record:
    """A training record: stable id, where it came from, whom it is about, and its digest."""

    record_id: str
    source_id: str
    subject_ids: tuple[str, ...]
    text: str
    sha256: str
    terms: Terms = ()

    @classmethod
    def make(
        cls,
        record_id: str,
        source_id: str,
        subject_ids: Iterable[str],
        text: str,
        terms: Terms = (),
    ) -> Record:
        text = canonical_text(text)
        subjects = tuple(sorted(subject_ids))
        return cls(record_id, source_id, subjects, text, record_digest(text, terms), terms)

    def digest_matches(self) -> bool:
        """Whether the stored digest is still that of the text (and terms)."""
        return record_digest(self.text, self.terms) == self.sha256

    def to_json(self) -> bytes:
        d = {
            "record_id": self.record_id,
            "source_id": self.source_id,
            "subject_ids": list(self.subject_ids),
            "text": self.text,
            "sha256": self.sha256,
        }
        if self.terms:  # absent, not empty: records without terms keep their bytes
            d["terms"] = dict(self.terms)
        return canonical_json(d)

    @classmethod
    def from_json(cls, line: bytes | str, *, where: str = "record") -> Record:
        try:
            d = json.loads(line)
            if not isinstance(d["subject_ids"], list):  # a bare string would be its characters
                raise TypeError("'subject_ids' must be a list")
            terms = d.get("terms", {})
            if not isinstance(terms, dict) or ("terms" in d and not terms):
                raise TypeError("'terms' must be a non-empty object when present")
            record = cls(
                record_id=d["record_id"],
                source_id=d["source_id"],
                subject_ids=tuple(d["subject_ids"]),
                text=d["text"],
                sha256=d["sha256"],
                terms=tuple(sorted(terms.items())),
            )
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # ValueError: JSON, UTF-8
            raise MalformedRecordError(f"{where}: not a record: {exc!r}") from None
        if problems := record_problems(record):
            raise MalformedRecordError(
                f"{where}: not a well-formed record; re-run `exante ingest`:", problems=problems
            )
        return record


def record_problems(record: Record) -> list[str]:
    """Every field of ``record`` whose form is wrong, named by field (never by its value).

    The one check every reader of a records file applies (manifest, gate,
    training), so the manifest never signs a record the gate cannot read.
    """
    problems = []
    if not is_record_id(record.record_id):
        problems.append(f"'record_id' must be {RECORD_ID_FORM} in full, with no line break")
    if not is_source_id(record.source_id):
        problems.append(f"'source_id' must be {SOURCE_ID_FORM}")
    for i, subject in enumerate(record.subject_ids):
        if not is_raw_id(subject):
            problems.append(f"'subject_ids'[{i}] must be {RAW_ID_FORM}, with no line break")
    if not isinstance(record.text, str):
        problems.append("'text' must be a string")
    if not is_sha256(record.sha256):
        problems.append("'sha256' must be 64 lowercase hex characters")
    return problems + terms_problems(dict(record.terms))


def read_records(path: Path) -> Iterator[Record]:
    """Stream the records of one JSONL file, naming the line of any malformed one."""
    path = Path(path)
    if not path.is_file():
        raise MalformedRecordError(f"{path} does not exist; run `exante ingest` first")
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield Record.from_json(line, where=f"{path}:{n}")


def records_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def read_all(directory: Path) -> list[Record]:
    """Every record under ``directory``, in file then line order."""
    return [r for p in records_files(directory) for r in read_records(p)]


def check_unique(records: Iterable[Record]) -> None:
    seen: dict[str, str] = {}
    dupes = []
    for r in records:
        if r.record_id in seen:
            dupes.append(f"{r.record_id} (in {seen[r.record_id]} and {r.source_id})")
        seen[r.record_id] = r.source_id
    if dupes:
        raise DuplicateRecordError("record ids must be unique:", problems=dupes[:20])


RUN_SIZE = 100_000  # records sorted in memory at once; more are merged from sorted runs


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Write records sorted by id, atomically."""
    os.replace(stage_records(path, records), path)


def stage_records(path: Path, records: Iterable[Record], *, run_size: int = RUN_SIZE) -> Path:
    """Write records sorted by id to a hidden temp file beside ``path``; return it unpublished.

    Memory stays bounded by ``run_size``: larger inputs are sorted in runs spilled
    to anonymous files in the same directory (never a shared temp dir, so no copy
    of a record's text outlives the project), then merged. Duplicate ids raise
    :class:`DuplicateRecordError` and leave nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    runs: list = []
    try:
        with os.fdopen(fd, "wb") as out:
            _write_unique(out, _merged(records, run_size, path.parent, runs))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        for run in runs:
            run.close()
    return Path(tmp)


def _merged(records: Iterable[Record], run_size: int, spill_dir: Path, runs: list):
    """``(record_id, line)`` in id order: one sorted chunk, or a merge of sorted runs."""
    chunk = []
    for r in records:
        chunk.append((r.record_id, r.to_json()))
        if len(chunk) >= run_size:
            chunk.sort()
            runs.append(_spill(chunk, spill_dir))
            chunk = []
    chunk.sort()
    if not runs:
        return chunk
    runs.append(_spill(chunk, spill_dir))
    return heapq.merge(*(_read_run(run) for run in runs))


def _spill(chunk: list[tuple[str, bytes]], spill_dir: Path):
    run = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - closed by stage_records
    # unlinked at once: invisible to others, and its bytes are gone once closed
    run.writelines(rid.encode("utf-8") + b"\t" + line + b"\n" for rid, line in chunk)
    run.seek(0)
    return run


def _read_run(run) -> Iterator[tuple[str, bytes]]:
    for raw in run:
        rid, _, line = raw.rstrip(b"\n").partition(b"\t")
        yield rid.decode("utf-8"), line


def _write_unique(out, lines: Iterable[tuple[str, bytes]]) -> None:
    dupes, last = [], None
    for rid, line in lines:
        if rid == last:
            dupes.append(f"{rid} (in {rid.partition('/')[0]} and {rid.partition('/')[0]})")
            continue
        last = rid
        out.write(line + b"\n")
    if dupes:
        raise DuplicateRecordError("record ids must be unique:", problems=dupes[:20])
