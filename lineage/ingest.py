"""Ingest: turn one registered source into records with stable ids, subjects and digests.

Formats (see README, "Source registry"): ``jsonl``, ``text`` (blank-line
paragraphs numbered from 1), ``parquet``, ``csv``, ``dir`` (files under a
glob) and ``hf`` (a ``datasets`` dataset). The readers live in
:mod:`lineage._readers`; here a source's ``fields`` mapping turns their
columns into records. A ``jsonl`` source without ``fields`` reads ``id``,
``text`` and an optional list ``subject_ids``, exactly as before mappings
existed. A record's id is ``<source id>/<raw id>``, so it stays the same when
other records change; an ``id_from`` id is a digest of the named columns, so it
survives reordering too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from lineage._canonical import canonical_json, canonical_text, sha256_hex
from lineage._ids import RAW_ID, RAW_ID_FORM, is_raw_id
from lineage._readers import MISSING, Batch, read_batches
from lineage.errors import MalformedRecordError, MissingColumnError
from lineage.gate import Denials
from lineage.records import Record, check_unique, stage_records, terms_problems
from lineage.sources import Fields, Registry, Source, check_locations

_SUBJECT_SEPARATORS = re.compile(r"[\s,;]+")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class _Mapping:
    """A source's fields, and whether today's jsonl rules apply (no ``fields`` given)."""

    fields: Fields
    legacy: bool = False


def _mapping(source: Source) -> _Mapping:
    if source.fields is not None:
        return _Mapping(source.fields)
    if source.format == "jsonl":
        return _Mapping(Fields(id="id", text="text", subjects="subject_ids"), legacy=True)
    return _Mapping(Fields(id="id", text="text"))


def _id_error(at: str, column: str, suffix: str = "") -> MalformedRecordError:
    return MalformedRecordError(
        f"{at}: '{column}'{suffix} must match {RAW_ID.pattern} in full ({RAW_ID_FORM}; "
        "no whitespace or line break); fix the raw file and ingest again"
    )


def _value(m: _Mapping, column: str, value, at: str, *, required: bool):
    """A cell; a key one JSON row lacks is None, or an error where a mapping requires it."""
    if value is not MISSING:
        return value
    if required and not m.legacy:
        raise MissingColumnError(f"{at}: mapped column '{column}' is missing from this row")
    return None


def _raw_id(m: _Mapping, value, at: str) -> str:
    if not m.legacy and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # an integer key column names rows too
    if not is_raw_id(value):
        raise _id_error(at, m.fields.id)
    return value


def derived_id(values: Iterable) -> str:
    """The id of a row named by the digest of its ``id_from`` values (128 bits, hex)."""
    canonical = [canonical_text(v) if isinstance(v, str) else _jsonable(v) for v in values]
    return sha256_hex(canonical_json(canonical))[:32]


def _jsonable(value):
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value if isinstance(value, int | float | bool | list | dict | None) else str(value)


def _subjects(m: _Mapping, value, at: str) -> list[str]:
    column = m.fields.subjects
    if value is None:
        return []
    if isinstance(value, str) and not m.legacy:
        value = [s for s in _SUBJECT_SEPARATORS.split(value) if s]
    if not isinstance(value, list):
        raise MalformedRecordError(f"{at}: '{column}' must be a list of ids")
    for i, s in enumerate(value):
        if not is_raw_id(s):
            raise _id_error(at, column, f"[{i}]")
    return value


def _term(field: str, value):
    """A terms cell in its record form; None (or empty) keeps the source's term."""
    if value is None or value == "":
        return None
    if field == "tdm_opt_out" and isinstance(value, str):
        low = value.strip().lower()
        return True if low in _TRUE else False if low in _FALSE else value
    if field == "retention_start" and isinstance(value, datetime):
        return value.date().isoformat()
    if field == "retention_start" and isinstance(value, date):
        return value.isoformat()
    return value


def _terms(m: _Mapping, cells: dict, at: str) -> tuple:
    """A record's own terms (sorted pairs); an empty tuple keeps every source term."""
    terms = {k: v for k, v in ((k, _term(k, cells[k])) for k in cells) if v is not None}
    columns = m.fields.terms_columns()
    if problems := terms_problems(terms, name=lambda k: f"column '{columns[k]}' ({k})"):
        raise MalformedRecordError(f"{at}: per-record terms are malformed:", problems=problems)
    return tuple(sorted(terms.items()))


def _row_terms(m: _Mapping, terms_cols: dict, i: int, at: str) -> tuple:
    if not terms_cols:
        return ()
    cells = {k: _value(m, k, col[i], at, required=False) for k, col in terms_cols.items()}
    return _terms(m, cells, at)


def _row_id(m: _Mapping, cols: dict, key_cols: list, i: int, at: str) -> str:
    f = m.fields
    if f.id is not None:
        return _raw_id(m, _value(m, f.id, cols[f.id][i], at, required=True), at)
    pairs = zip(f.id_from, key_cols, strict=True)
    return derived_id(_value(m, c, col[i], at, required=True) for c, col in pairs)


def _records(source: Source, m: _Mapping, batch: Batch) -> Iterator[Record]:
    """The records of one batch; stops at the first bad row, naming it (never its value)."""
    f, cols = m.fields, batch.columns
    terms_cols = {k: cols[c] for k, c in f.terms_columns().items()}
    key_cols = [cols[c] for c in f.id_from or ()]
    subject_col = cols[f.subjects] if f.subjects is not None else None
    prefix = source.id + "/"
    for i in range(len(batch)):
        at = f"{batch.locate(i)}: source {source.id}"
        raw_id = _row_id(m, cols, key_cols, i, at)
        text = _value(m, f.text, cols[f.text][i], at, required=True)
        if not isinstance(text, str) or not text.strip():
            raise MalformedRecordError(f"{at}: '{f.text}' must be a non-empty string")
        subjects = []
        if subject_col is not None:
            subjects = _subjects(m, _value(m, f.subjects, subject_col[i], at, required=False), at)
        terms = _row_terms(m, terms_cols, i, at)
        yield Record.make(prefix + raw_id, source.id, subjects, text, terms)


def iter_source(source: Source, root: Path) -> Iterator[Record]:
    """Every record of one source, streamed batch by batch (not yet checked for duplicates)."""
    m = _mapping(source)
    for batch in read_batches(source, root, m.fields.columns()):
        yield from _records(source, m, batch)


def read_source(source: Source, root: Path) -> list[Record]:
    """Every record of one source; stops at the first malformed row, naming its line."""
    records = list(iter_source(source, root))
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

    Each source streams into a hidden, sorted temp file beside its records
    file; only when every source has been read and checked are they renamed
    into place, so bad input leaves the previous records untouched. Records
    the deletion ledger denies (by id or subject) are left out, so a deleted
    record never comes back through a re-ingest of a raw file that still holds it.
    """
    from lineage.erasure import is_denied

    check_locations(registry, root, only)
    sources = [registry.get(only)] if only else list(registry.sources.values())
    staged: dict[Path, Path] = {}
    counts: dict[str, int] = {}
    created = not Path(out_dir).exists()
    try:
        for s in sources:
            counted = _Counted(
                r
                for r in iter_source(s, root)
                if not is_denied(denials, r.record_id, r.subject_ids)
            )
            target = Path(out_dir) / f"{s.id}.jsonl"
            staged[target] = stage_records(target, counted)
            counts[s.id] = counted.n
        for target, tmp in staged.items():
            os.replace(tmp, target)
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if created and Path(out_dir).is_dir() and not any(Path(out_dir).iterdir()):
            Path(out_dir).rmdir()  # leave no trace of a failed first ingest
        raise
    return counts


class _Counted:
    """An iterable that counts what passes through it."""

    def __init__(self, items: Iterable) -> None:
        self._items, self.n = items, 0

    def __iter__(self):
        for item in self._items:
            self.n += 1
            yield item
