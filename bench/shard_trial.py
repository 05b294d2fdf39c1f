"""Trial: one shard under another schedule, its knowledge and a deletion's share of its work.

Run it in a project where the pipeline has run up to the base model (``dvc
repro train_base``). It trains one shard from the project's base with
``train.shard`` overridden (``--set key=value``) into a scratch directory, and
prints, per slice, the epochs, the final loss and the exact match of the
shard's own people seen so far; then the share of the shard's work (optimizer
steps and tokens, which unlike wall times do not depend on what else the
machine runs) that deleting one of its CRM records retrains, averaged over
them, and that share divided by S (the deletion bench's ratio, for this shard).

    python bench/shard_trial.py --set slice_epochs=null replay=0.25
    python bench/shard_trial.py --shard 2 --set max_epochs=80 target_loss=0.08
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from exante.params import load_params
from training.config import TrainConfig
from training.knowledge import exact_match, model_scorer, probes_of, read_probes
from training.model import load_model
from training.partition import read_shard, shard_file
from training.sisa import dp_secret_for, train_shard


def overridden(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    update = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        update[key] = None if value == "null" else json.loads(value)
    shard = cfg.shard.model_dump() | update
    return TrainConfig.model_validate(cfg.model_dump() | {"shard": shard})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="train.shard overrides, key=value")
    args = ap.parse_args()
    root = args.project.resolve()
    cfg = overridden(load_params(root / "params.yaml").train, args.set)
    placed = read_shard(root / shard_file(Path("data/shards"), args.shard))
    probes = probes_of(
        read_probes(root / "data/raw/probes.jsonl"), records=[r.record_id for _, r in placed]
    )
    with tempfile.TemporaryDirectory(prefix="exante-trial-") as tmp:
        start = time.perf_counter()
        result = train_shard(args.shard, placed, cfg, base=root / "models/base/model",
                             out_dir=Path(tmp), dp_secret=dp_secret_for(cfg, root))  # fmt: skip
        wall = time.perf_counter() - start
        print(f"shard {args.shard}: {len(placed)} records, {len(probes)} facts; {cfg.shard}")
        for r, name in enumerate(result.slices):
            seen = {x.record_id for s, x in placed if s <= r}
            known = exact_match(model_scorer(load_model(Path(tmp) / "ckpt" / name)),
                                [p for p in probes if p.record_id in seen])  # fmt: skip
            epochs = [e for e in result.epochs if e["slice"] == r]
            print(f"  slice {r}: {len(epochs)} epochs, loss {epochs[-1]['loss']:.3f}, "
                  f"exact match of the people seen so far {known.exact_match:.3f}, "
                  f"{result.seconds[r]:.1f} s")  # fmt: skip
    print(f"  {wall:.1f} s in all (wall time: depends on the machine's other work)")
    slices = {r.record_id: s for s, r in placed}
    crm = [slices[p.record_id] for p in probes]
    for unit in ("steps", "tokens"):
        work = [sum(e[unit] for e in result.epochs if e["slice"] == r) for r in range(cfg.slices)]
        share = statistics.fmean(sum(work[s:]) for s in crm) / sum(work)
        print(f"  {unit}: {sum(work)} ({', '.join(f'{w / sum(work):.0%}' for w in work)} by "
              f"slice); a deletion retrains {share:.3f} of the shard -> ratio "
              f"{share / cfg.shards:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
