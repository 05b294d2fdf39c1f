"""A columnar batch's records built in Arrow: checks, digests and JSON lines a column at a time.

Per-row Python work (a check, a canonicalization, a hash and an f-string per
record) bounded ingest at about 8 µs a row, six times what reading the file
costs. Here the checks are regex matches over whole columns; only the rows that
need Python get it: texts holding a character NFC may change (``_nfc_stable``:
not a plain accented letter, which is already NFC) or a ``\\r``, and texts with
characters JSON escapes. Every text is hashed in native code (polars-hash) and
the lines are joined by Arrow, so a batch holds the GIL little and
:func:`lineage.ingest.in_order` maps one per core at once. Imported only by the
columnar readers' path, so pyarrow and polars stay out of the hashing and
signing core.

The fast path takes only what it reproduces exactly: an ``id`` column and an
optional single-id ``subjects`` column of strings all matching ``RAW_ID``,
texts that are strings, no per-record terms. Anything else, and every bad row,
returns None and the batch goes through :func:`lineage._mapping.map_batch`'s
per-row path, which alone words the errors. A test holds the two paths to the
same bytes.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import polars_hash
import pyarrow as pa
import pyarrow.compute as pc

from lineage._arrow_build import booleans, literal, numbers, strings
from lineage._canonical import canonical_text
from lineage._ids import RAW_ID
from lineage._nfc_stable import starts_and_ends
from lineage.records import Record

MAX_BYTES = 1 << 28  # of a batch's column: so its lines (escaping may grow a text 6x) < 2 GiB
_ID = f"^{RAW_ID.pattern}$"  # RE2: '$' is the end of the text only, as with fullmatch
_VISIBLE = "[!-~]"  # a printable ASCII character: the text is surely not blank
_json_str = json.encoder.encode_basestring
_SCAN = 1 << 16  # bytes of a text column scanned at once
_ESCAPED = re.compile(r'[\x00-\x1f"\\]').search  # what JSON escapes (non-ASCII it keeps)
_UNSTABLE = starts_and_ends()  # code points NFC may change; None: every one may (see _nfc_stable)
# the least UTF-8 lead byte of a character in that table (0xCC: U+0300 and up); a text
# whose other bytes are below it (ASCII, Latin-1, most accented Latin) needs no lookup
_FIRST_LEAD = 0x80 if _UNSTABLE is None else chr(int(_UNSTABLE[0][0])).encode()[0]


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
        rows = numbers(keep, pa.int64())
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
    keys = pc.binary_join_element_wise(literal(f"{src}/"), ids, _NONE)
    subj = ('","subject_ids":["', subjects, '"],"text":"') if subjects is not None else ()
    head = ('{"record_id":"', keys, '","sha256":"', digests, f'","source_id":"{src}')
    parts = (*head, *(subj or ('","subject_ids":[],"text":"',)), escaped, '"}\n')
    lines = pc.binary_join_element_wise(*map(_arrow, parts), _NONE)
    return ArrowRows(src, keys, subjects, texts, digests, lines.cast(pa.binary()))


_NONE = literal("")


def _arrow(part):
    """A part of a line: a column as it is, a ``str`` as an Arrow scalar (see _arrow_build)."""
    return literal(part) if isinstance(part, str) else part


def _column(batch, name: str) -> pa.Array | None:
    """A column as one string array, or None when it is not strings (the per-row path decides).

    Or None when it is too large for 32-bit offsets once made into lines.
    """
    col = batch.arrow.column(name)
    if col.nbytes > MAX_BYTES:
        return None
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    col = batch.utf8(name, col)
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

    Only a text with a ``\\r`` or a character NFC may change can change when
    canonicalized, and only one with a control character, a quote or a
    backslash when escaped: those rows, found in one pass over the column's
    bytes (:func:`_scan`), are done in Python
    (and only the texts that do change are replaced). Every other row is its
    own answer.
    """
    canon, escape = _scan(texts)
    if len(canon):
        raw = texts.take(numbers(canon, pa.int64())).to_pylist()
        canonical = list(map(canonical_text, raw))  # the same object where already canonical
        changed = np.fromiter(map(operator.is_not, canonical, raw), bool, len(raw))
        if changed.any():  # look for escapes again in what is written, for changed rows
            rows, new = canon[changed], [c for c, x in zip(canonical, changed, strict=True) if x]
            texts = _replaced(texts, rows, new)
            redo = np.fromiter(map(bool, map(_ESCAPED, new)), bool, len(new))
            escape = np.union1d(np.setdiff1d(escape, rows), rows[redo])
    if not len(escape):
        return texts, texts
    inner = map(_json_inner, texts.take(numbers(escape, pa.int64())).to_pylist())
    return texts, _replaced(texts, escape, inner)


def _replaced(texts: pa.Array, rows: np.ndarray, values) -> pa.Array:
    """``texts`` with ``texts[rows[i]]`` replaced by ``values[i]`` (``rows`` ascending)."""
    mask = np.zeros(len(texts), bool)
    mask[rows] = True
    return pc.replace_with_mask(texts, booleans(mask), strings(values))


def _scan(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The rows (ascending) that may change when canonicalized, and those JSON escapes.

    The first hold a ``\\r`` or a character NFC may change (:func:`_may_change`:
    not a plain accented letter, which is already NFC); the second a control
    character, a quote or a backslash. Scanned a slice at a time, so the
    scratch arrays stay small and warm (fresh megabytes cost a page fault
    each, on every batch) whatever the share of non-ASCII text.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    _, offsets, data = texts.buffers()
    at = np.frombuffer(offsets, np.int32, n + 1, offset=4 * texts.offset)
    raw = np.frombuffer(data, np.uint8)[at[0] : at[-1]]
    canon, escape = [], []
    for i in range(0, len(raw), _SCAN):
        part = raw[i : i + _SCAN]
        hits = np.flatnonzero((part >= _FIRST_LEAD) | (part == 0x0D)) + i
        canon.append(hits[_may_change(raw, hits)])
        escape.append(np.flatnonzero((part < 0x20) | (part == 0x22) | (part == 0x5C)) + i)
    return _rows_of(at, np.concatenate(canon)), _rows_of(at, np.concatenate(escape))


def _may_change(raw: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Which of the bytes at ``hits`` may make canonicalization change a text.

    ``hits`` are ``\\r`` or bytes from ``_FIRST_LEAD`` up (never an ASCII byte
    but ``\\r``); what counts is a ``\\r`` and each UTF-8 lead byte whose
    character is in the NFC table (:mod:`lineage._nfc_stable`), decoded here
    from the bytes that follow it (in ``raw``, past the slice if need be).
    Without a table for this Python's Unicode data, every hit.
    """
    if _UNSTABLE is None or not len(hits):
        return np.ones(len(hits), bool)
    b0 = raw[hits].astype(np.int32)
    after = [raw[np.minimum(hits + k, len(raw) - 1)].astype(np.int32) & 0x3F for k in (1, 2, 3)]
    cp = np.where(b0 >= 0xF0, (b0 & 0x07) << 18 | after[0] << 12 | after[1] << 6 | after[2],
         np.where(b0 >= 0xE0, (b0 & 0x0F) << 12 | after[0] << 6 | after[1],
                  (b0 & 0x1F) << 6 | after[0]))  # fmt: skip
    starts, ends = _UNSTABLE
    i = np.searchsorted(starts, cp, side="right") - 1
    unstable = (i >= 0) & (cp <= ends[np.maximum(i, 0)])
    return (b0 == 0x0D) | unstable  # every other hit is a lead byte (>= _FIRST_LEAD)


def _rows_of(at: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The rows that the byte positions ``found`` (relative to the first row) fall in."""
    return np.unique(np.searchsorted(at, found + at[0], side="right") - 1)


def _json_inner(text: str) -> str:
    return _json_str(text)[1:-1]


def _sha256_hex(texts: pa.Array) -> pa.Array:
    """Each text's SHA-256 as 64 hex characters, hashed in native code (polars-hash).

    ``hashlib`` costs about 0.7 µs a text in Python calls alone, more than the
    whole read of a row; ``polars_hash`` runs RustCrypto's SHA-256 over the
    column's buffers. A test holds it to ``hashlib`` on the tricky texts.
    """
    frame = pl.from_arrow(pa.table({"t": texts}))
    digests = frame.select(polars_hash.col("t").chash.sha2_256()).get_column("t")
    return digests.to_arrow().cast(pa.string())
