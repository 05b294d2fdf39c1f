"""Arrow values built from their bytes, never converted from Python objects.

pyarrow imports pandas the first time it converts a Python object (``pa.array``,
``pa.scalar``, a ``str`` handed to a compute function): 0.13-0.19 s of every
ingest process on this project's machines, for a library the ingest of a
columnar source never uses. Values built here from their buffers give the same
arrays and scalars without that import; ``tests/lineage/test_arrow_build.py``
holds them to pyarrow's own conversion and an ingest to not importing pandas.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa


def literal(text: str) -> pa.Scalar:
    """``pa.scalar(text, pa.string())``."""
    return strings((text,))[0]


def strings(values: Iterable[str]) -> pa.Array:
    """``pa.array(values, pa.string())`` (no nulls)."""
    return _varlen(pa.string(), np.int32, [v.encode("utf-8") for v in values])


def binaries(values: Iterable[bytes]) -> pa.Array:
    """``pa.array(values, pa.large_binary())`` (no nulls)."""
    return _varlen(pa.large_binary(), np.int64, list(values))


_INTEGERS = {pa.int32(): np.int32, pa.int64(): np.int64}


def numbers(values, kind: pa.DataType) -> pa.Array:
    """``pa.array(values, kind)`` for ``kind`` int32 or int64 (no nulls); a value out of
    its range is refused (OverflowError), never wrapped around as a numpy cast would."""
    given = np.asarray(values)
    data = np.ascontiguousarray(given, dtype=_INTEGERS[kind])
    if given.size and not np.array_equal(data, given):
        raise OverflowError(f"a value does not fit {kind}")
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def booleans(values) -> pa.Array:
    """``pa.array(values, pa.bool_())`` of a numpy bool array (no nulls)."""
    bits = np.packbits(np.asarray(values, bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _varlen(kind: pa.DataType, width, encoded: list[bytes]) -> pa.Array:
    if sum(map(len, encoded)) > np.iinfo(width).max:
        raise OverflowError(f"more bytes than {kind} offsets hold")
    offsets = np.zeros(len(encoded) + 1, width)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(kind, len(encoded), [None, pa.py_buffer(offsets), data])
