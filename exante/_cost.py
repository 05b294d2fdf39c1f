"""What a deletion touches and what it costs: shards, slices, characters × epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lineage.errors import LineageError
from lineage.layout import LAYOUT


def plan(root: Path, cfg, record_ids: Sequence[str]) -> dict:
    """Shards and slices holding the records, and the retrain cost against a full retrain.

    Cost is counted as characters × epochs: slice r trains on slices 0..r, for
    ``slice_epochs`` epochs (the last slice up to ``max_epochs``, an upper bound);
    with ``replay``, slice r trains its own characters plus ``replay`` × the earlier
    slices' for up to ``max_epochs``; with ``slice_work: equal``, slice r trains slices
    0..r for up to ``max_epochs × R/(r+1)`` epochs. A shard is retrained from its
    earliest affected slice; earlier slices are reused. ``min_steps`` may raise a
    cap, the more the fewer records a slice keeps: the retrained slices' caps are
    counted on the records that remain, their characters on the current ones, so
    the plan stays an upper bound.
    """
    from exante._progress import per_slice
    from training.partition import read_shard

    paths, wanted = LAYOUT, set(record_ids)
    shards, full, retrain = {}, 0, 0
    for s in range(cfg.shards):
        placed = read_shard(Path(root) / paths.shard_file(s))
        chars, counts = per_slice(placed, cfg.slices)
        costs = [slice_cost(cfg, chars, k, counts) for k in range(cfg.slices)]
        full += sum(costs)
        hit = sorted({q for q, r in placed if r.record_id in wanted})
        if hit:
            shards[s] = {"records": sorted(r.record_id for _, r in placed if r.record_id in wanted),
                         "first_slice": hit[0], "reused_slices": list(range(hit[0]))}  # fmt: skip
            _, left = per_slice(placed, cfg.slices, lambda r: r.record_id not in wanted)
            retrain += sum(slice_cost(cfg, chars, k, left) for k in range(hit[0], cfg.slices))
    base = {r.record_id for _, r in read_shard(Path(root) / paths.base_file())} & wanted
    placed_ids = {i for v in shards.values() for i in v["records"]} | base
    return {
        "records": sorted(wanted),
        "shards": shards,
        "base_records": sorted(base),
        "untrained_records": sorted(wanted - placed_ids),
        "cost": {
            "retrain": retrain,
            "full": full,
            "ratio": retrain / full if full else 0.0,
            "unit": "characters × epochs",
        },
    }


def slice_cost(cfg, chars: Sequence[int], r: int, records: Sequence[int] | None = None) -> float:
    """Characters × epochs of slice r, given each slice's own characters (and records)."""
    from exante._progress import slice_plan

    cap, work = slice_plan(cfg, chars, records)[r]
    return cap * work


def affected(root: Path, cfg, removed: Mapping[str, str]) -> tuple[list[int], float | None]:
    """The shards holding the records, and the plan's cost ratio (None before any partition)."""
    try:
        p = plan(root, cfg, list(removed))
    except (FileNotFoundError, LineageError):
        return [], None
    return sorted(p["shards"]), p["cost"]["ratio"]
