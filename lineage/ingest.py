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

import collections
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lineage._mapping import Rows, map_batch, mapping_of
from lineage._readers import read_batches
from lineage._runs import stage_sorted
from lineage.gate import Denials
from lineage.records import Record, check_unique
from lineage.sources import TABULAR, Registry, Source, check_locations

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
WORKERS = min(4, _CORES or 1)  # threads mapping columnar batches: the cores this process may use


def iter_rows(source: Source, root: Path) -> Iterator[Rows]:
    """The records of one source, a batch at a time (not yet checked for duplicates)."""
    m = mapping_of(source)
    batches = read_batches(source, root, m.fields.columns())
    if source.format in TABULAR and WORKERS > 1:  # Arrow batches: mapped on threads
        yield from in_order(functools.partial(map_batch, m), batches, WORKERS)
    else:
        yield from (map_batch(m, batch) for batch in batches)


def in_order(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``fn`` of each item on ``workers`` threads, yielded in the items' order.

    A columnar batch is mapped almost entirely in Arrow, polars and numpy,
    which release the GIL, so batches map on every core at once while this
    thread reads the next one and writes the last. At most ``workers`` items
    are in flight beside the one the caller holds, so memory stays bounded
    (with ``ARROW_BATCH`` rows a batch, a million-row ingest on two cores peaked
    about 70 MiB lower at 32k rows than at 64k, and no slower:
    bench/bench_ingest.py). Errors come in the order one thread would meet
    them: a bad row where its batch comes, a read error after the batches read
    before it. On any exit what is still queued is cancelled and ``items`` is
    closed (a reader restores its allocator then).
    """
    items = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="exante-map") as pool:
        pending: collections.deque = collections.deque()
        try:
            unreadable = None
            while unreadable is None:
                try:
                    item = next(items)
                except StopIteration:
                    break
                except Exception as exc:  # what was read before it comes first
                    unreadable = exc
                    break
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
            if unreadable is not None:
                raise unreadable
        finally:
            for future in pending:
                future.cancel()
            if hasattr(items, "close"):
                items.close()


def iter_source(source: Source, root: Path) -> Iterator[Record]:
    """Every record of one source, streamed (not yet checked for duplicates)."""
    for rows in iter_rows(source, root):
        yield from rows.records()


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
    check_locations(registry, root, only)
    sources = [registry.get(only)] if only else list(registry.sources.values())
    staged: dict[Path, Path] = {}
    counts: dict[str, int] = {}
    created = not Path(out_dir).exists()
    try:
        for s in sources:
            lines = _kept_lines(iter_rows(s, root), denials, counts, s.id)
            target = Path(out_dir) / f"{s.id}.jsonl"
            staged[target] = stage_sorted(target, lines)
        for target, tmp in staged.items():
            os.replace(tmp, target)
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if created and Path(out_dir).is_dir() and not any(Path(out_dir).iterdir()):
            Path(out_dir).rmdir()  # leave no trace of a failed first ingest
        raise
    return counts


def _kept_lines(batches: Iterable[Rows], denials: Denials, counts: dict, source_id: str):
    """Each batch's ``(record_id, line)`` pairs, less those the deletion ledger denies.

    Counts what it yields into ``counts[source_id]``.
    """
    from lineage.erasure import is_denied

    counts[source_id] = 0
    for rows in batches:
        keep = None
        if denials.records or denials.subjects:
            pairs = enumerate(zip(rows.ids, rows.subjects, strict=True))
            keep = [i for i, (rid, subjects) in pairs if not is_denied(denials, rid, subjects)]
        lines = rows.lines(keep)
        counts[source_id] += len(lines)
        yield lines
