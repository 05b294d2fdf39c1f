"""Sorting more lines than fit in memory: sorted runs spilled to anonymous files, then merged.

Ingest writes each records file sorted by id, and a source may be larger than
memory. Lines are gathered up to ``RUN_BYTES``, sorted, and spilled to an
anonymous file in the *destination* directory — never a shared temp dir, so no
copy of a record's text outlives the project — then merged (or, when the runs
do not overlap, as for a source already in id order, simply concatenated).
"""

from __future__ import annotations

import heapq
import itertools
import operator
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from lineage.errors import DuplicateRecordError

RUN_BYTES = 64 << 20  # bytes of lines sorted in memory at once
_second = operator.itemgetter(1)


def stage_sorted(
    path: Path, batches: Iterable[list[tuple[str, bytes]]], *, run_bytes=RUN_BYTES
) -> Path:
    """Write the lines of batches of ``(key, line)`` pairs in key order to a hidden temp file.

    Returns the temp file, unpublished (the caller renames it). A key seen twice
    raises :class:`DuplicateRecordError` and leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    runs: list[_Run] = []
    try:
        with os.fdopen(fd, "wb") as out:
            _write_sorted(out, batches, run_bytes, path.parent, runs)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        for run in runs:
            run.file.close()
    return Path(tmp)


class _Run(NamedTuple):
    """A sorted run spilled to an anonymous file of ``key<TAB>line`` lines."""

    file: BinaryIO
    first: str
    last: str
    unique: bool


def _write_sorted(out, batches, run_bytes: int, spill_dir: Path, runs: list[_Run]) -> None:
    batches = iter(batches)
    first = next(batches, [])
    if not isinstance(first, list):  # Arrow columns (a columnar source): sorted in Arrow
        from lineage._arrow_runs import write_sorted

        write_sorted(out, itertools.chain([first], batches), run_bytes, spill_dir, runs)
        return
    chunk, size = [], 0
    for batch in itertools.chain([first], batches):
        batch = batch if isinstance(batch, list) else batch.pairs()
        chunk += batch
        size += sum(map(len, map(_second, batch)))
        if size >= run_bytes:
            runs.append(_spill(chunk, spill_dir))
            chunk, size = [], 0
    chunk.sort()
    if not runs:
        _write_chunk(out, chunk)
        return
    if chunk:
        runs.append(_spill(chunk, spill_dir))
    if _disjoint(runs):  # the input came in key order (or in ordered pieces)
        for run in runs:
            _copy_run(out, run)
    else:
        _write_unique(out, heapq.merge(*(_read_run(run) for run in runs)))


def _strictly_increasing(keys: list[str]) -> bool:
    return all(map(str.__lt__, keys, keys[1:]))


def _write_chunk(out, chunk: list[tuple[str, bytes]]) -> None:
    """One sorted chunk: written whole, or through the duplicate check that names them."""
    if _strictly_increasing([k for k, _ in chunk]):
        out.writelines(line + b"\n" for _, line in chunk)
    else:
        _write_unique(out, chunk)


def _spill(chunk: list[tuple[str, bytes]], spill_dir: Path) -> _Run:
    chunk.sort()
    keys = [k for k, _ in chunk]
    run = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - closed by stage_sorted
    # unlinked at once: invisible to others, and its bytes are gone once closed
    run.writelines(k.encode("utf-8") + b"\t" + line + b"\n" for k, line in chunk)
    run.seek(0)
    return _Run(run, keys[0], keys[-1], _strictly_increasing(keys))


def _disjoint(runs: list[_Run]) -> bool:
    """Each run free of duplicates and wholly before the next: concatenation is the merge."""
    ordered = all(a.last < b.first for a, b in itertools.pairwise(runs))
    return ordered and all(run.unique for run in runs)


def _copy_run(out, run: _Run) -> None:
    """A run's lines without their keys, a few MiB at a time."""
    while block := run.file.readlines(8 << 20):
        out.write(b"".join(raw[raw.index(b"\t") + 1 :] for raw in block))


def _read_run(run: _Run) -> Iterator[tuple[str, bytes]]:
    for raw in run.file:
        key, _, line = raw[:-1].partition(b"\t")
        yield key.decode("utf-8"), line


def _write_unique(out, pairs: Iterable[tuple[str, bytes]]) -> None:
    """Pairs in key order, line by line; every key seen twice is named."""
    dupes, last = [], None
    for key, line in pairs:
        if key == last:
            dupes.append(key)
            continue
        last = key
        out.write(line + b"\n")
    raise_duplicates(dupes)


def raise_duplicates(keys: list[str]) -> None:
    """A DuplicateRecordError naming (the first 20 of) ``keys``, each seen twice, if any."""
    if keys:
        problems = [f"{k} (in {k.partition('/')[0]} and {k.partition('/')[0]})" for k in keys]
        raise DuplicateRecordError("record ids must be unique:", problems=problems[:20])
