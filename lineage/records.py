"""Records: the unit of lineage. One line of JSONL per record, hashed on its canonical text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json, canonical_text, text_sha256
from lineage._ids import (
    RAW_ID_FORM,
    RECORD_ID_FORM,
    SOURCE_ID_FORM,
    is_raw_id,
    is_record_id,
    is_source_id,
)
from lineage._shape import is_sha256
from lineage.errors import DuplicateRecordError, MalformedRecordError

SCHEMA_VERSION = 1


@dataclass(frozen=True, order=True)
class Record:
    """A training record: stable id, where it came from, whom it is about, and its digest."""

    record_id: str
    source_id: str
    subject_ids: tuple[str, ...]
    text: str
    sha256: str

    @classmethod
    def make(cls, record_id: str, source_id: str, subject_ids: Iterable[str], text: str) -> Record:
        text = canonical_text(text)
        return cls(record_id, source_id, tuple(sorted(subject_ids)), text, text_sha256(text))

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "record_id": self.record_id,
                "source_id": self.source_id,
                "subject_ids": list(self.subject_ids),
                "text": self.text,
                "sha256": self.sha256,
            }
        )

    @classmethod
    def from_json(cls, line: bytes | str, *, where: str = "record") -> Record:
        try:
            d = json.loads(line)
            if not isinstance(d["subject_ids"], list):  # a bare string would be its characters
                raise TypeError("'subject_ids' must be a list")
            record = cls(
                record_id=d["record_id"],
                source_id=d["source_id"],
                subject_ids=tuple(d["subject_ids"]),
                text=d["text"],
                sha256=d["sha256"],
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
    return problems


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


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Write records sorted by id, atomically."""
    data = b"".join(r.to_json() + b"\n" for r in sorted(records, key=lambda r: r.record_id))
    atomic_write(Path(path), data)
