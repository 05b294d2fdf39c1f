"""SISA partition: every allowed record gets a (shard, slice), deterministically and stably.

Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021): train S models on
disjoint shards, each incrementally over R slices, so forgetting a record
retrains one shard from the last slice that never saw it.

All records of one data subject go to the same shard (subjects linked by a
shared record are one group), so deleting a person touches one shard. The
shard comes from a keyed hash of the group and the slice from a keyed hash of
the record id: neither depends on any other record, so deleting one record
moves no other record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lineage._canonical import atomic_write
from lineage.layout import shard_name
from lineage.records import Record


@dataclass(frozen=True, order=True)
class Placement:
    shard: int
    slice: int
    record_id: str


def _bucket(seed: int, kind: str, key: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{kind}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def subject_groups(records: Iterable[Record]) -> dict[str, str]:
    """Union-find over subjects: each subject → the smallest subject id of its group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in records:
        for s in r.subject_ids[1:]:
            a, b = find(r.subject_ids[0]), find(s)
            parent[max(a, b)] = min(a, b)
        for s in r.subject_ids:
            find(s)
    return {s: find(s) for s in parent}


def assign(records: Sequence[Record], *, shards: int, slices: int, seed: int) -> list[Placement]:
    groups = subject_groups(records)
    out = []
    for r in records:
        group = groups[r.subject_ids[0]] if r.subject_ids else f"record:{r.record_id}"
        shard = _bucket(seed, "shard", group, shards)
        out.append(Placement(shard, _bucket(seed, "slice", r.record_id, slices), r.record_id))
    return sorted(out)


def held_out(records: Sequence[Record], holdout: dict[str, str | float], *, seed: int) -> set[str]:
    """The ids of the records no model may train on: the verification's non-members.

    A source held out ``"all"`` gives every one of its records; a fraction gives
    that share of its data subjects (records without one: of its records), each
    chosen by a hash keyed with the seed, so the split is stable across re-ingest
    and independent of the shard count. A person held out is held out whole: their
    records in every other source go too, so no model ever saw them.
    """
    if not holdout:
        return set()
    groups = subject_groups(records)

    def key(r: Record) -> str:
        return groups[r.subject_ids[0]] if r.subject_ids else f"record:{r.record_id}"

    held = set()
    for r in records:
        spec = holdout.get(r.source_id)
        if spec == "all" or (spec is not None and _fraction(seed, key(r)) < float(spec)):
            held.add(key(r))
    return {r.record_id for r in records if key(r) in held}


def _fraction(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00holdout\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shard_file(directory: Path, shard: int) -> Path:
    return Path(directory) / f"{shard_name(shard)}.jsonl"


def write_shards(
    records: Sequence[Record], placements: Sequence[Placement], *, shards: int, out_dir: Path
) -> dict[int, int]:
    """One JSONL per shard: ``{"slice": r, "record": {...}}`` lines, by slice then id.

    Shards whose records did not change keep byte-identical files, so DVC
    re-runs only the training stages of shards that changed.
    """
    by_id = {r.record_id: r for r in records}
    placed: dict[int, list[tuple[int, Record]]] = {s: [] for s in range(shards)}
    for p in placements:
        placed[p.shard].append((p.slice, by_id[p.record_id]))
    for shard, rows in placed.items():
        write_placed(shard_file(out_dir, shard), rows)
    return {s: len(v) for s, v in placed.items()}


def write_placed(path: Path, rows: Sequence[tuple[int, Record]]) -> None:
    """``{"record": {...}, "slice": r}`` per line, atomically."""
    lines = [f'{{"record":{r.to_json().decode("utf-8")},"slice":{s}}}\n'.encode() for s, r in rows]
    atomic_write(Path(path), b"".join(lines))


def read_shard(path: Path) -> list[tuple[int, Record]]:
    import json

    out = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            out.append(
                (
                    int(row["slice"]),
                    Record.from_json(json.dumps(row["record"]), where=f"{path}:{n}"),
                )
            )
    return out
