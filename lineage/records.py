"""Records: the unit of lineage. One line of JSONL per record, hashed on its canonical text.

A record may carry its own terms (license, consent basis, TDM opt-out,
retention start) that override its source's. Its digest then covers the text
*and* the terms, so the Merkle leaf the manifest signs binds both; a record
without terms hashes its text alone, as it always has.
"""

from __future__ import annotations

import json
import os
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
from lineage._runs import stage_sorted
from lineage._shape import is_sha256
from lineage.errors import DuplicateRecordError, MalformedRecordError
from lineage.sources import ConsentBasis

SCHEMA_VERSION = 1
CONSENT_BASES = frozenset(get_args(ConsentBasis))
Terms = tuple[tuple[str, str | bool], ...]  # sorted (field, value) pairs; empty: the source's
_json_str = json.encoder.encode_basestring  # a JSON string, non-ASCII kept, as canonical_json
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


def record_line(
    record_id: str, source_id: str, subject_ids, text: str, sha256: str, terms: Terms = ()
) -> bytes:
    """A record's line: its canonical JSON (sorted keys), with no ``terms`` key when it has none.

    Equal to :func:`canonical_json` of the record's fields (a test holds it to
    that), spelled out because ingest writes a million of these.
    """
    subjects = "[" + ",".join(map(_json_str, subject_ids)) + "]"
    own = f',"terms":{canonical_json(dict(terms)).decode()}' if terms else ""
    return (
        f'{{"record_id":{_json_str(record_id)},"sha256":"{sha256}",'
        f'"source_id":{_json_str(source_id)},"subject_ids":{subjects}{own},'
        f'"text":{_json_str(text)}}}'
    ).encode()


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
        return record_line(
            self.record_id, self.source_id, self.subject_ids, self.text, self.sha256, self.terms
        )

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


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Write records sorted by id, atomically, in bounded memory."""
    os.replace(stage_sorted(path, [[(r.record_id, r.to_json()) for r in records]]), path)
