"""A source's field mapping applied to a batch of raw columns: checked record columns out.

Work is done a column at a time over a batch (tens of thousands of rows), not a
row at a time through layers of calls: that per-row overhead, not reading or
hashing, is what bounds ingest speed in Python. Every check names the row (file
and line or row number), the source and the column, never the value.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

from lineage._canonical import canonical_json, canonical_text, sha256_hex
from lineage._ids import RAW_ID, RAW_ID_FORM
from lineage._readers import MISSING, Batch
from lineage.errors import MalformedRecordError, MissingColumnError
from lineage.records import Record, record_digest, terms_problems
from lineage.sources import Fields, Source

_SUBJECT_SEPARATORS = re.compile(r"[\s,;]+")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})
_is_id = RAW_ID.fullmatch
_hexdigest = operator.methodcaller("hexdigest")
_json_str = json.encoder.encode_basestring  # as canonical_json spells a string


@dataclass(frozen=True)
class Mapping:
    """A source's fields, and whether today's jsonl rules apply (no ``fields`` given)."""

    source: Source
    fields: Fields
    legacy: bool = False


def mapping_of(source: Source) -> Mapping:
    if source.fields is not None:
        return Mapping(source, source.fields)
    if source.format == "jsonl":
        return Mapping(source, Fields(id="id", text="text", subjects="subject_ids"), legacy=True)
    return Mapping(source, Fields(id="id", text="text"))


@dataclass(frozen=True)
class Rows:
    """One batch's records as parallel columns: full ids, subjects, canonical texts, digests."""

    source_id: str
    ids: list[str]
    subjects: list[tuple[str, ...]]
    texts: list[str]
    digests: list[str]
    terms: list[tuple]

    def records(self) -> Iterator[Record]:
        cols = zip(self.ids, self.subjects, self.texts, self.digests, self.terms, strict=True)
        return (Record(i, self.source_id, s, t, d, tm) for i, s, t, d, tm in cols)

    def lines(self, keep: Iterable[int] | None = None) -> list[tuple[str, bytes]]:
        """``(record_id, line)`` of every row, or of the rows in ``keep``.

        The bytes are :func:`~lineage.records.record_line`'s (a test holds them
        equal), built inline: ids and subjects were checked against ``RAW_ID``,
        whose characters JSON never escapes, so only the text needs escaping.
        """
        cols = (self.ids, self.subjects, self.texts, self.digests, self.terms)
        rows = (
            zip(*cols, strict=True) if keep is None else (tuple(c[i] for c in cols) for i in keep)
        )
        mid, text = f'","source_id":"{self.source_id}","subject_ids":', _json_str
        return [
            (i, (f'{{"record_id":"{i}","sha256":"{d}{mid}{_json_list(s)}{_terms_json(tm)}'
                 f',"text":{text(t)}}}').encode())
            for i, s, t, d, tm in rows
        ]  # fmt: skip


def _json_list(ids: tuple[str, ...]) -> str:
    return '["' + '","'.join(ids) + '"]' if ids else "[]"


def _terms_json(terms: tuple) -> str:
    return f',"terms":{canonical_json(dict(terms)).decode()}' if terms else ""


def map_batch(m: Mapping, batch: Batch) -> Rows:
    """The batch's records, or the error naming its first bad row."""
    if getattr(batch, "arrow", None) is not None:  # a columnar batch: try it in Arrow first
        from lineage._arrow_rows import arrow_rows

        if (rows := arrow_rows(m, batch)) is not None:
            return rows
    f, at = m.fields, _locator(m.source, batch)
    cols = _present(m, batch, at)
    n = len(batch)
    ids = _ids(m, cols, at)
    texts = _texts(f.text, cols[f.text], at)
    subjects = _subjects(m, cols[f.subjects], at) if f.subjects else [()] * n
    terms = _terms(m, cols, at) if f.terms_columns() else [()] * n
    if any(terms):
        digests = [record_digest(t, tm) for t, tm in zip(texts, terms, strict=True)]
    else:
        hashes = map(hashlib.sha256, map(str.encode, texts))  # a C-level loop, no per-row frame
        digests = list(map(_hexdigest, hashes))
    prefix = m.source.id + "/"
    return Rows(m.source.id, [prefix + i for i in ids], subjects, texts, digests, terms)


def _locator(source: Source, batch: Batch):
    return lambda i: f"{batch.locate(i)}: source {source.id}"


def _present(m: Mapping, batch: Batch, at) -> dict[str, list]:
    """The columns, with a key a JSON row lacks as None, or an error if the mapping needs it."""
    if not batch.sparse:
        return batch.columns
    f, cols = m.fields, dict(batch.columns)
    required = {f.id, f.text, *(f.id_from or ())}
    for name, values in cols.items():
        missing = next((i for i, v in enumerate(values) if v is MISSING), None)
        if missing is None:
            continue
        if name in required and not m.legacy:
            raise MissingColumnError(
                f"{at(missing)}: mapped column '{name}' is missing from this row"
            )
        cols[name] = [None if v is MISSING else v for v in values]
    return cols


def _id_error(at: str, column: str, suffix: str = "") -> MalformedRecordError:
    return MalformedRecordError(
        f"{at}: '{column}'{suffix} must match {RAW_ID.pattern} in full ({RAW_ID_FORM}; "
        "no whitespace or line break); fix the raw file and ingest again"
    )


def _ids(m: Mapping, cols: dict, at) -> list[str]:
    f = m.fields
    if f.id is None:
        return [derived_id(values) for values in zip(*(cols[c] for c in f.id_from), strict=True)]
    ids = cols[f.id]
    if not m.legacy and any(type(v) is int for v in ids):
        ids = [str(v) if type(v) is int else v for v in ids]  # an integer key names rows too
    if not _all_hold(_is_id, ids):
        bad = next(i for i, v in enumerate(ids) if type(v) is not str or not _is_id(v))
        error = _id_error(at(bad), f.id)
        if m.source.format == "dir":  # the id is the file's path: say how to keep the name
            error = MalformedRecordError(
                f"{error}, or name records by their content: fields: {{id_from: [text]}}"
            )
        raise error
    return ids


def _all_hold(check, values: list[str]) -> bool:
    """``check`` is truthy for every value, all of them strings (a C-speed loop)."""
    try:
        return all(map(check, values))
    except TypeError:  # a value that is not a string
        return False


def derived_id(values: Iterable) -> str:
    """The id of a row named by the digest of its ``id_from`` values (128 bits, hex)."""
    canonical = [canonical_text(v) if isinstance(v, str) else _jsonable(v) for v in values]
    return sha256_hex(canonical_json(canonical))[:32]


def _jsonable(value):
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value if isinstance(value, int | float | bool | list | dict | None) else str(value)


def _texts(column: str, texts: list, at) -> list[str]:
    if not _all_hold(str.strip, texts):
        bad = next(i for i, t in enumerate(texts) if type(t) is not str or not t.strip())
        raise MalformedRecordError(f"{at(bad)}: '{column}' must be a non-empty string")
    return [t if t.isascii() and "\r" not in t else canonical_text(t) for t in texts]


class _BadSubject(Exception):
    def __init__(self, index: int | None) -> None:
        self.index = index  # None: the cell is not a list at all


def _subjects(m: Mapping, values: list, at) -> list[tuple[str, ...]]:
    """Sorted subject ids per row: a list, or (mapped) a string of ids split at , ; or space."""
    split = not m.legacy
    if split and _all_hold(_is_id, values):
        return [(v,) for v in values]  # one subject id per row: the common case, at C speed
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_subject_tuple(v, split))
        except _BadSubject as bad:
            column = m.fields.subjects
            if bad.index is None:
                raise MalformedRecordError(f"{at(i)}: '{column}' must be a list of ids") from None
            raise _id_error(at(i), column, f"[{bad.index}]") from None
    return out


def _subject_tuple(value, split: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if split and type(value) is str:
        value = [s for s in _SUBJECT_SEPARATORS.split(value) if s]
    if not isinstance(value, list):
        raise _BadSubject(None)
    for k, s in enumerate(value):
        if type(s) is not str or not _is_id(s):
            raise _BadSubject(k)
    return tuple(sorted(value))


def _terms(m: Mapping, cols: dict, at) -> list[tuple]:
    """Each row's own terms (sorted pairs); an empty tuple keeps every term of the source."""
    columns = m.fields.terms_columns()
    named = {k: f"column '{c}' ({k})" for k, c in columns.items()}
    out = []
    for i, cells in enumerate(zip(*(cols[c] for c in columns.values()), strict=True)):
        terms = {
            k: v for k, v in zip(columns, map(_term, columns, cells), strict=True) if v is not None
        }
        if problems := terms_problems(terms, name=named.__getitem__):
            raise MalformedRecordError(
                f"{at(i)}: per-record terms are malformed:", problems=problems
            )
        out.append(tuple(sorted(terms.items())))
    return out


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
