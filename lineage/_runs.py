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
    runs: list = []
    try:
        with os.fdopen(fd, "wb") as out:
            _write_unique(out, _in_order(batches, run_bytes, path.parent, runs))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        for run in runs:
            run.close()
    return Path(tmp)


def _in_order(batches, run_bytes: int, spill_dir: Path, runs: list):
    """The pairs in key order: one sorted chunk, or the sorted runs merged."""
    chunk, size, bounds = [], 0, []
    for batch in batches:
        chunk += batch
        size += sum(map(len, map(_second, batch)))
        if size >= run_bytes:
            runs.append(_spill(chunk, spill_dir, bounds))
            chunk, size = [], 0
    chunk.sort()
    if not runs:
        return chunk
    runs.append(_spill(chunk, spill_dir, bounds))
    readers = [_read_run(run) for run in runs]
    disjoint = all(bounds[i][1] < bounds[i + 1][0] for i in range(len(bounds) - 1))
    return itertools.chain(*readers) if disjoint else heapq.merge(*readers)


def _spill(chunk: list[tuple[str, bytes]], spill_dir: Path, bounds: list):
    chunk.sort()
    if chunk:
        bounds.append((chunk[0][0], chunk[-1][0]))
    run = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 - closed by stage_sorted
    # unlinked at once: invisible to others, and its bytes are gone once closed
    run.writelines(key.encode("utf-8") + b"\t" + line + b"\n" for key, line in chunk)
    run.seek(0)
    return run


def _read_run(run) -> Iterator[tuple[str, bytes]]:
    for raw in run:
        key, _, line = raw[:-1].partition(b"\t")
        yield key.decode("utf-8"), line


def _write_unique(out, pairs: Iterable[tuple[str, bytes]]) -> None:
    if isinstance(pairs, list):  # one sorted chunk: check and write it whole
        keys = [k for k, _ in pairs]
        if all(map(str.__lt__, keys, keys[1:])):
            out.write(b"".join(line + b"\n" for _, line in pairs))
            return
    dupes, last = [], None
    for key, line in pairs:
        if key == last:
            source = key.partition("/")[0]
            dupes.append(f"{key} (in {source} and {source})")
            continue
        last = key
        out.write(line + b"\n")
    if dupes:
        raise DuplicateRecordError("record ids must be unique:", problems=dupes[:20])
