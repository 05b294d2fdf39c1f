"""A columnar batch's records built in Arrow: checks, digests and JSON lines a column at a time.

Per-row Python work (a check, a canonicalization, a hash and an f-string per
record) bounded ingest at about 8 µs a row, six times what reading the file
costs. Here the checks are regex matches over whole columns, only the rows that
need Python (non-ASCII or ``\\r`` texts to normalize, texts with characters
JSON escapes) get it, every text is hashed in one C-level loop, and the lines
are joined by Arrow. Imported only by the columnar readers' path, so pyarrow
stays out of the hashing and signing core.

The fast path takes only what it reproduces exactly: an ``id`` column and an
optional single-id ``subjects`` column of strings all matching ``RAW_ID``,
texts that are strings, no per-record terms. Anything else, and every bad row,
returns None and the batch goes through :func:`lineage._mapping.map_batch`'s
per-row path, which alone words the errors. A test holds the two paths to the
same bytes.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lineage._canonical import canonical_text
from lineage._ids import RAW_ID
from lineage.records import Record

_ID = f"^{RAW_ID.pattern}$"  # RE2: '$' is the end of the text only, as with fullmatch
_VISIBLE = "[!-~]"  # a printable ASCII character: the text is surely not blank
_json_str = json.encoder.encode_basestring
_ESCAPED = re.compile(r'[\x00-\x1f"\\]').search  # what JSON escapes (non-ASCII it keeps)
_digest = operator.methodcaller("digest")


@dataclass(frozen=True)
class ArrowLines:
    """Records as ``(record_id, line + "\\n")`` columns, for the Arrow sort in ``_runs``."""

    keys: pa.Array  # string
    lines: pa.Array  # binary, each line ending in "\n"

    def __len__(self) -> int:
        return len(self.keys)

    def pairs(self) -> list[tuple[str, bytes]]:
        """As the per-row path's ``(record_id, line)`` pairs (no newline)."""
        lines = [line[:-1] for line in self.lines.to_pylist()]
        return list(zip(self.keys.to_pylist(), lines, strict=True))


@dataclass(frozen=True)
class ArrowRows:
    """One batch's records in Arrow columns; Python lists only when a caller asks for them."""

    source_id: str
    keys: pa.Array  # full record ids
    subject_column: pa.Array | None  # one subject id per row, or no subjects mapped
    texts: pa.Array  # canonical
    digests: pa.Array
    all_lines: pa.Array

    @cached_property
    def ids(self) -> list[str]:
        return self.keys.to_pylist()

    @cached_property
    def subjects(self) -> list[tuple[str, ...]]:
        if self.subject_column is None:
            return [()] * len(self.keys)
        return [(s,) for s in self.subject_column.to_pylist()]

    def records(self):
        texts, digests = self.texts.to_pylist(), self.digests.to_pylist()
        cols = zip(self.ids, self.subjects, texts, digests, strict=True)
        return (Record(i, self.source_id, s, t, d) for i, s, t, d in cols)

    def lines(self, keep=None) -> ArrowLines:
        if keep is None:
            return ArrowLines(self.keys, self.all_lines)
        rows = pa.array(keep, pa.int64())
        return ArrowLines(self.keys.take(rows), self.all_lines.take(rows))


def arrow_rows(m, batch) -> ArrowRows | None:
    """The batch's records, or None where the per-row path must decide (see the module doc)."""
    f = m.fields
    if f.id is None or m.legacy or f.terms_columns():
        return None
    ids, texts = _column(batch, f.id), _column(batch, f.text)
    subjects = _column(batch, f.subjects) if f.subjects else None
    if not (_all_ids(ids) and (not f.subjects or _all_ids(subjects)) and _no_blank(texts)):
        return None
    texts, escaped = _canonical_and_escaped(texts)
    digests = _sha256_hex(texts)
    src = m.source.id
    keys = pc.binary_join_element_wise(f"{src}/", ids, "")
    subj = ('","subject_ids":["', subjects, '"],"text":"') if subjects is not None else ()
    head = ('{"record_id":"', keys, '","sha256":"', digests, f'","source_id":"{src}')
    parts = (*head, *(subj or ('","subject_ids":[],"text":"',)), escaped, '"}\n')
    lines = pc.binary_join_element_wise(*parts, "")
    return ArrowRows(src, keys, subjects, texts, digests, lines.cast(pa.binary()))


def _column(batch, name: str) -> pa.Array | None:
    """A column as one string array, or None when it is not strings (the per-row path decides)."""
    col = batch.arrow.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    return col if pa.types.is_string(col.type) else None


def _all_ids(col: pa.Array | None) -> bool:
    if col is None or col.null_count:
        return False
    return bool(pc.all(pc.match_substring_regex(col, _ID)).as_py() is not False)


def _no_blank(texts: pa.Array | None) -> bool:
    """No null and no blank text; texts with no printable ASCII are checked as Python does."""
    if texts is None or texts.null_count:
        return False
    unsure = pc.invert(pc.match_substring_regex(texts, _VISIBLE))
    return all(map(str.strip, texts.filter(unsure).to_pylist()))


def _canonical_and_escaped(texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The canonical texts, and each as it goes between a JSON string's quotes.

    Only a text with a byte outside printable ASCII or a quote or backslash
    can change (be normalized, or escaped): those rows, found in one pass over
    the column's bytes, are looked at in Python, and only those that do change
    are replaced. Every other row is its own answer.
    """
    odd = np.flatnonzero(_odd_rows(texts))
    if not len(odd):
        return texts, texts
    raw = texts.take(odd).to_pylist()
    canonical = list(map(canonical_text, raw))  # the same object where already canonical
    texts = _replaced(
        texts, odd, [c is not r for c, r in zip(canonical, raw, strict=True)], canonical
    )
    return texts, _replaced(texts, odd, list(map(_ESCAPED, canonical)), canonical, _json_inner)


def _replaced(texts: pa.Array, rows: np.ndarray, which: list, values: list, fn=None) -> pa.Array:
    """``texts`` with ``rows[i]`` set to ``fn(values[i])`` (or ``values[i]``) where ``which[i]``."""
    pick = np.flatnonzero(np.fromiter(map(bool, which), bool, len(which)))
    if not len(pick):
        return texts
    new = [values[i] for i in pick]
    mask = np.zeros(len(texts), bool)
    mask[rows[pick]] = True
    return pc.replace_with_mask(texts, mask, pa.array(map(fn, new) if fn else new, pa.string()))


def _odd_rows(texts: pa.Array) -> np.ndarray:
    """Which rows hold a control character, a byte >= 0x80, '"' or a backslash."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, bool)
    _, offsets, data = texts.buffers()
    at = np.frombuffer(offsets, np.int32, n + 1, offset=4 * texts.offset)
    raw = np.frombuffer(data, np.uint8)[at[0] : at[-1]]
    hit = ((raw - np.uint8(32)) >= 96) | (raw == ord('"')) | (raw == ord("\\"))  # wraps: < 32
    rows = np.searchsorted(at, np.flatnonzero(hit) + at[0], side="right") - 1
    odd = np.zeros(n, bool)
    odd[rows] = True
    return odd


def _json_inner(text: str) -> str:
    return _json_str(text)[1:-1]


def _sha256_hex(texts: pa.Array) -> pa.Array:
    """Each text's SHA-256 as 64 hex characters: one hashing loop, one hex conversion."""
    n = len(texts)
    raw = b"".join(map(_digest, map(hashlib.sha256, texts.cast(pa.binary()).to_pylist())))
    offsets = pa.py_buffer(np.arange(0, 64 * (n + 1), 64, dtype=np.int32))
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(raw.hex().encode())])
