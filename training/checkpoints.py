"""Slice checkpoints, content-addressed by what they have seen.

A checkpoint's address is the hash of the sorted record ids it was trained on,
the training config and the model it started from. After a deletion, the
clean prefix of a shard is found by lookup: every slice whose seen set did not
change has the same address and is reused, bit for bit. A checkpoint is built
in a temporary directory and renamed into place, so a crash never publishes a
partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage._canonical import atomic_write, canonical_json, sha256_hex

if TYPE_CHECKING:  # torch is imported where a checkpoint is saved or loaded, not to hash one
    import torch

META = "exante-checkpoint.json"
OPTIMIZER = "optimizer.pt"
SLICES_FILE = "slices.json"  # a shard directory's list of its slice checkpoints


def seen_digest(
    seen: Iterable[tuple[int, str, str]], *, config_digest: str, start_digest: str
) -> str:
    """The address of the checkpoint that has seen exactly ``(slice, record_id, sha256)``.

    The record's content digest is part of it, so a record edited under the same
    id never reuses weights trained on its old text; the slice is part of it, so
    the address fixes the order in which slices were learned.
    """
    return sha256_hex(
        canonical_json(
            {
                "records": sorted([s, i, h] for s, i, h in seen),
                "config": config_digest,
                "start": start_digest,
            }
        )
    )


@dataclass(frozen=True)
class Checkpoint:
    path: Path

    @property
    def meta(self) -> dict:
        return json.loads((self.path / META).read_text())

    def exists(self) -> bool:
        return (self.path / META).is_file()


def save(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict
) -> Checkpoint:
    """Write model, optimizer, RNG state and metadata; publish by renaming a complete directory."""
    import torch

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save(
            {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
            tmp / OPTIMIZER,
        )
        atomic_write(tmp / META, json.dumps(meta, indent=2, sort_keys=True).encode())
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Checkpoint(directory)


def load_optimizer_state(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    import torch

    state = torch.load(checkpoint.path / OPTIMIZER, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])


def model_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


def dir_digest(directory: Path) -> str:
    """A digest of every file (relative POSIX path and content) in a checkpoint directory."""
    from lineage.sources import model_digest

    if not Path(directory).is_dir():  # nothing there: the digest of no files
        return sha256_hex(canonical_json({}))
    return model_digest(Path(directory))


def prune(ckpt_dir: Path, denied: frozenset[str], *, keep: Iterable[str]) -> list[str]:
    """Delete every checkpoint that has seen a denied record, and any partial one; return names.

    A checkpoint's metadata lists the record ids it was trained on, so one that
    saw a deleted record is found without loading it. Those in ``keep`` (the
    shard's current slices) are never touched.
    """
    keep, removed = set(keep), []
    for d in sorted(Path(ckpt_dir).iterdir()) if Path(ckpt_dir).is_dir() else []:
        if d.name in keep or not d.is_dir():
            continue
        partial = d.name.startswith(".") or not (d / META).is_file()
        if partial or not denied.isdisjoint(Checkpoint(d).meta.get("records", [])):
            shutil.rmtree(d)
            removed.append(d.name)
    return removed


def final_checkpoint(shard_dir: Path) -> Path:
    """The last slice's checkpoint of a shard directory (its ``slices.json`` lists them)."""
    slices = json.loads((Path(shard_dir) / SLICES_FILE).read_text())["slices"]
    return Path(shard_dir) / "ckpt" / slices[-1]
