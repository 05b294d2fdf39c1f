"""Sorted runs in Arrow: the records of a columnar source sorted, spilled and merged as columns.

The same contract as :mod:`lineage._runs` (which calls this when ingest hands
it :class:`~lineage._arrow_rows.ArrowLines`): lines in key order, runs of at
most ``run_bytes`` sorted in memory and spilled to anonymous files in the
destination directory, every duplicate key named. Sorting a run is one
``sort_indices`` (none when it is already in order); a sorted run's lines are
written as the one block of memory they already are. Runs that come in key
order, as from a source already sorted by id, go straight to the output and
are never spilled: only their keys are, in case a later run overlaps them and
a merge needs them back. Overlapping runs are merged a block at a time
(everything up to the smallest last key of the runs' current blocks is final).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lineage._arrow_build import binaries, literal, numbers, strings
from lineage._runs import _disjoint, raise_duplicates
from lineage._writer import BackgroundWriter

BLOCK = 16_384  # rows per spilled key batch, so per run in memory while merging
COPY = 8 << 20  # bytes per read when copying a spilled run's lines
_SCHEMA = pa.schema([("key", pa.string()), ("line", pa.large_binary())])  # 64-bit offsets
_KEYS = pa.schema([("key", pa.string()), ("length", pa.int32())])


class _Run:
    """A sorted run on disk: its lines' bytes as they will be written, its keys and lengths.

    Both files are anonymous (unlinked at once: invisible to others, their bytes
    gone once closed); ``stage_sorted`` closes them through ``file``.
    """

    def __init__(self, spill_dir: Path) -> None:
        self.lines = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - closed by close()
        self.keys = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - closed by close()
        self._writer = pa.ipc.new_stream(self.keys, _KEYS)
        self.first: str | None = None
        self.last: str | None = None
        self.unique = True
        self.file = self  # what stage_sorted closes

    def close(self) -> None:
        self.lines.close()
        self.keys.close()

    def add(self, batch: pa.RecordBatch, *, lines: bool = True) -> None:
        """A sorted batch after what the run holds; ``lines=False``: they went elsewhere."""
        keys = batch.column("key")
        self.unique = self.unique and not _duplicates(keys, self.last)
        self.first = keys[0].as_py() if self.first is None else self.first
        self.last = keys[-1].as_py()
        lengths = numbers(np.diff(_offsets(batch.column("line"))), pa.int32())
        for start in range(0, len(keys), BLOCK):
            part = [keys.slice(start, BLOCK), lengths.slice(start, BLOCK)]
            self._writer.write_batch(pa.RecordBatch.from_arrays(part, schema=_KEYS))
        if lines:
            _write(self.lines, batch)

    def done(self) -> _Run:
        self._writer.close()
        self.keys.seek(0)
        self.lines.seek(0)
        return self

    def blocks(self):
        """The run's ``(key, line)`` batches, read back a block at a time."""
        for part in pa.ipc.open_stream(self.keys):
            offsets = np.zeros(part.num_rows + 1, np.int64)
            lengths = part.column("length")  # as numpy without to_numpy (see _arrow_build)
            np.cumsum(np.frombuffer(lengths.buffers()[1], np.int32, len(lengths),
                                    offset=4 * lengths.offset), out=offsets[1:])  # fmt: skip
            data = pa.py_buffer(self.lines.read(int(offsets[-1])))
            line = pa.Array.from_buffers(
                pa.large_binary(), part.num_rows, [None, pa.py_buffer(offsets), data]
            )
            yield pa.RecordBatch.from_arrays([part.column("key"), line], schema=_SCHEMA)


class _Sorter:
    """Runs as they fill: straight to ``out`` while they come in key order, else spilled."""

    def __init__(self, out, spill_dir: Path, runs: list) -> None:
        self.out, self.spill_dir, self.runs = out, spill_dir, runs
        self.direct = _Run(spill_dir)  # the keys of what went straight to out
        runs.append(self.direct)

    def straight(self, batch: pa.RecordBatch) -> bool:
        """Write ``batch`` straight to ``out`` if it is in key order after all written so far."""
        keys = batch.column("key")
        if not len(keys):
            return True
        if len(self.runs) > 1 or not _increasing(keys):
            return False
        if self.direct.last is not None and keys[0].as_py() <= self.direct.last:
            return False
        self.direct.add(batch, lines=False)
        _write(self.out, batch)
        return True

    def add(self, parts: list[pa.RecordBatch]) -> None:
        """One run: sorted, then written straight through or spilled.

        Spilled a block at a time in sorted order (``take`` of a slice of the
        order), never as a whole sorted copy of the run.
        """
        batch = _concat(parts)
        if self.straight(batch):
            return
        if len(self.runs) == 1:  # the first run out of order: what was written is run 0
            _take_back(self.out, self.direct.lines)
        run = _Run(self.spill_dir)
        self.runs.append(run)
        order = pc.sort_indices(batch.column("key"))
        for start in range(0, batch.num_rows, BLOCK):
            run.add(batch.take(order.slice(start, BLOCK)))

    def finish(self) -> None:
        if len(self.runs) == 1:  # everything came in order and is written
            return
        runs = [run.done() for run in self.runs if run.first is not None]
        if _disjoint(runs):  # ordered pieces after all: concatenation is the merge
            for run in runs:
                shutil.copyfileobj(run.lines, self.out, COPY)
        else:
            _merge(self.out, runs)


def write_sorted(out, batches, run_bytes: int, spill_dir: Path, runs: list) -> None:
    """The lines of ``batches`` written to ``out`` in key order (see the module doc).

    ``out`` is written on a thread of its own (:mod:`lineage._writer`), so the
    copies into the page cache overlap the reading and mapping of the next batches.
    """
    with BackgroundWriter(out) as background:
        _write_sorted(background, batches, run_bytes, spill_dir, runs)


def _write_sorted(out, batches, run_bytes: int, spill_dir: Path, runs: list) -> None:
    sorter = _Sorter(out, spill_dir, runs)
    parts, size = [], 0
    for arrow in map(_as_batch, batches):
        if not parts and sorter.straight(arrow):  # in order: no run to gather, sort or spill
            continue
        parts.append(arrow)
        size += arrow.column("line").nbytes
        if size >= run_bytes:
            sorter.add(parts)
            parts, size = [], 0
    sorter.add(parts)
    sorter.finish()


def _increasing(keys: pa.Array) -> bool:
    n = len(keys)
    return n < 2 or pc.all(pc.less(keys.slice(0, n - 1), keys.slice(1))).as_py()


def _take_back(out, into) -> None:
    """Move what ``out`` holds into the file ``into``, leaving ``out`` empty."""
    out.flush()
    fd, size, at = out.fileno(), out.tell(), 0
    while at < size:
        block = os.pread(fd, min(COPY, size - at), at)
        into.write(block)
        at += len(block)
    out.seek(0)
    out.truncate()


def _as_batch(batch) -> pa.RecordBatch:
    """ArrowLines, or (from a batch the per-row path took) ``(key, line)`` pairs."""
    if isinstance(batch, list):
        keys = strings(k for k, _ in batch)
        lines = binaries(line + b"\n" for _, line in batch)
    else:
        keys, lines = batch.keys, batch.lines.cast(pa.large_binary())
    return pa.RecordBatch.from_arrays([keys, lines], schema=_SCHEMA)


def _concat(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if parts:
        return pa.concat_batches(parts)
    return pa.RecordBatch.from_arrays([strings(()), binaries(())], schema=_SCHEMA)


def _sorted(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    """The parts as one batch in key order (no sort at all when they already are)."""
    batch = _concat(parts)
    if not _increasing(batch.column("key")):
        batch = batch.take(pc.sort_indices(batch.column("key")))
    return batch


def _duplicates(keys, before: str | None = None) -> list[str]:
    """The keys equal to the one before them (in sorted ``keys``, ``before`` leading)."""
    if not len(keys):
        return []
    same = keys.slice(1).filter(pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1)))
    head = [before] if before is not None and before == keys[0].as_py() else []
    return head + same.to_pylist()


def _offsets(lines: pa.Array) -> np.ndarray:
    return np.frombuffer(lines.buffers()[1], np.int64, len(lines) + 1, offset=8 * lines.offset)


def _write(out, batch: pa.RecordBatch) -> None:
    """The line bytes of ``batch`` (sorted), written as the block of memory they already are."""
    lines = batch.column("line")
    if len(lines):
        at = _offsets(lines)
        out.write(lines.buffers()[2].slice(int(at[0]), int(at[-1] - at[0])))


def _merge(out, runs: list[_Run]) -> None:
    """Runs merged a block at a time: rows up to the least last key of the blocks are final."""
    readers = [run.blocks() for run in runs]
    heads = [next(r, None) for r in readers]
    dupes, last = [], None
    while live := [i for i, h in enumerate(heads) if h is not None]:
        cutoff = min(heads[i].column(0)[-1].as_py() for i in live)
        final = []
        for i in live:
            head = heads[i]
            n = pc.sum(pc.less_equal(head.column(0), literal(cutoff))).as_py() or 0
            final.append(head.slice(0, n))
            heads[i] = head.slice(n) if n < head.num_rows else next(readers[i], None)
        batch = _sorted(final)
        dupes += _duplicates(batch.column("key"), last)
        last = batch.column("key")[-1].as_py()
        _write(out, batch)
    raise_duplicates(dupes)
