"""Ingest: turn one registered source into records with stable ids, subjects and digests.

Raw formats: ``jsonl`` (one object per line with ``id``, ``text`` and optional
``subject_ids``; other fields are source metadata and are not ingested) and
``text`` (a plain file split into records at blank lines, numbered from 1).
A record's id is ``<source id>/<raw id>``, so it stays the same when other
records change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from lineage._ids import RAW_ID, RAW_ID_FORM, is_raw_id
from lineage.errors import MalformedRecordError
from lineage.gate import Denials
from lineage.records import Record, check_unique, write_records
from lineage.sources import Registry, Source, check_locations


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge int, deep nesting
                raise MalformedRecordError(f"{where}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise MalformedRecordError(f"{where}: expected a JSON object")
            yield where, row


def _text_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecordError(f"{path}: not UTF-8 ({exc})") from None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    for n, para in enumerate(paragraphs, 1):
        yield f"{path}:para {n}", {"id": f"{n:06d}", "text": para}


def _record(source: Source, where: str, row: dict) -> Record:
    """One record, or an error naming the file, line, source and field (never the value)."""
    raw_id, text, subjects = row.get("id"), row.get("text"), row.get("subject_ids", [])
    at = f"{where}: source {source.id}"
    if not is_raw_id(raw_id):
        raise MalformedRecordError(
            f"{at}: 'id' must match {RAW_ID.pattern} in full ({RAW_ID_FORM}; "
            "no whitespace or line break); fix the raw file and ingest again"
        )
    if not isinstance(text, str) or not text.strip():
        raise MalformedRecordError(f"{at}: 'text' must be a non-empty string")
    if not isinstance(subjects, list):
        raise MalformedRecordError(f"{at}: 'subject_ids' must be a list of ids")
    for i, s in enumerate(subjects):
        if not is_raw_id(s):
            raise MalformedRecordError(
                f"{at}: 'subject_ids'[{i}] must match {RAW_ID.pattern} in full ({RAW_ID_FORM}; "
                "no whitespace or line break); fix the raw file and ingest again"
            )
    return Record.make(f"{source.id}/{raw_id}", source.id, subjects, text)


def read_source(source: Source, root: Path) -> list[Record]:
    """Every record of one source; stops at the first malformed row, naming its line."""
    path = source.path(root)
    rows = _jsonl_rows(path) if source.format == "jsonl" else _text_rows(path)
    records = [_record(source, where, row) for where, row in rows]
    check_unique(records)
    return records


def ingest(
    registry: Registry,
    root: Path,
    out_dir: Path,
    *,
    only: str | None = None,
    denials: Denials = Denials(),
) -> dict:
    """Write ``<out_dir>/<source>.jsonl`` for every source (or ``only``); return counts.

    All sources are read and checked before any file is written, so bad input
    leaves the previous records untouched. Records the deletion ledger denies
    (by id or subject) are left out, so a deleted record never comes back
    through a re-ingest of a raw file that still holds it.
    """
    from lineage.erasure import is_denied

    check_locations(registry, root, only)
    sources = [registry.get(only)] if only else list(registry.sources.values())
    batches = {
        s.id: [
            r for r in read_source(s, root) if not is_denied(denials, r.record_id, r.subject_ids)
        ]
        for s in sources
    }
    for source_id, records in batches.items():
        write_records(Path(out_dir) / f"{source_id}.jsonl", records)
    return {source_id: len(records) for source_id, records in batches.items()}
