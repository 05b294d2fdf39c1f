"""Benchmark: SISA training against one plainly trained model, measured side by side.

Run it in a project where the pipeline has run (``make run``): it reads the
signed partition, the base model and the CRM facts, and trains everything it
compares into a temporary directory (the project's models are not touched).

(a) throughput: tokens/s of ``run_train_shard`` (admission checks, slices,
    checkpoints) vs the same model trained by a plain loop (no SISA, no gate)
    on the same shard, same batch size; target >= 0.9x;
(b) DP-SGD step time (Opacus, Poisson sampling) vs a non-private step on the
    same data, both timed after the first epoch (the one-off noise calibration
    is printed apart); target <= 2.0x on CPU;
(c) knowledge: the four shards (trained here, the pipeline's schedule) under
    each ensemble rule vs one model trained on all their data with the same
    schedule: exact match on the retained people, mean canary exposure, and
    total training cost; targets: exact match >= 0.9, exposure within 1 bit of
    the single model's, cost <= 1.5x.

    python bench/bench_training.py              # all three
    python bench/bench_training.py --only a,b   # the quick ones
    python bench/bench_training.py --check      # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from exante.params import load_params
from training.config import TrainConfig
from training.dp import train_private
from training.dp_secret import DPSecret
from training.ensemble import RULES, Ensemble
from training.knowledge import (
    canary_exposure,
    ensemble_scorer,
    exact_match,
    model_scorer,
    probes_of,
    read_probes,
)
from training.loop import batches, collate, make_optimizer, train, windows
from training.model import load_model, set_determinism
from training.partition import read_shard, shard_file
from training.sisa import final_checkpoint
from training.stages import Paths, run_train_shard
from training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def shard_records(root: Path, shard: int):
    return [r for _, r in read_shard(root / shard_file(Paths().shards, shard))]


def plain_loop(
    model, examples, batch_size: int, epochs: int, lr: float, *, pool: int = 8, on_epoch=None
) -> tuple[int, float, int]:
    """The baseline: shuffle, batch, step. No slices, no checkpoints, no gate, no LR schedule.

    ``pool=8`` buckets by length as training does; ``pool=1`` pads random batches,
    as Poisson-sampled DP batches must be. Returns tokens, seconds and steps.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    tokens, steps, start = 0, 0, time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for group in batches(examples, batch_size, gen, pool=pool):
            batch = collate([examples[j] for j in group], TOK.pad_id)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tokens += int((batch["labels"][:, 1:] != -100).sum())
            steps += 1
        if on_epoch:
            on_epoch(steps)
    return tokens, time.perf_counter() - start, steps


class EpochClock:
    """Per-step time over the epochs after the first: no setup, no warm-up epoch."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def __call__(self, steps_so_far: int) -> None:
        self.marks.append((time.perf_counter(), steps_so_far))

    def per_step(self) -> float:
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (t1 - t0) / (s1 - s0)


def bench_throughput(root: Path, cfg: TrainConfig, tmp: Path, epochs: int) -> float:
    shard_cfg = cfg.shard.model_copy(
        update={
            "max_epochs": epochs,
            "target_loss": 0.0,
            "slice_epochs": max(1, epochs // 4),
            "slice_work": "epochs",
        }
    )
    sisa_cfg = cfg.model_copy(update={"shard": shard_cfg})
    paths = Paths().moving(shard_models=tmp / "throughput")
    m = run_train_shard(root, sisa_cfg, 0, paths)
    sisa = sum(e["tokens"] for e in m["epochs"]) / m["wall_seconds"]
    examples = windows([r.text for r in shard_records(root, 0)], TOK, cfg.model.n_positions)
    model = load_model(root / Paths().base / "model")
    tokens, wall, _ = plain_loop(model, examples, cfg.shard.batch_size, epochs, cfg.shard.lr)
    plain = tokens / wall
    ratio = sisa / plain
    print(f"(a) shard training {sisa:,.0f} tokens/s vs plain loop {plain:,.0f} tokens/s "
          f"→ {ratio:.2f}x (target ≥ 0.90x)")  # fmt: skip
    return ratio


def bench_dp(
    root: Path, cfg: TrainConfig, batch_sizes: list[int], epochs: int = 4, rounds: int = 3
) -> float:
    """Per-step time of DP-SGD vs a plain step on random batches of the same expected size.

    Poisson sampling cannot bucket by length, so the plain baseline pads random
    batches too (``pool=1``); the bucketed plain step is printed for reference.
    Both are timed over the epochs after the first, so neither the first
    epoch's warm-up nor Opacus's one-off noise calibration (printed apart: it
    is paid once per slice, not per step) counts as step time. Plain and DP
    runs alternate for ``rounds`` rounds and the medians are compared, so a
    burst of load hits both. The first batch size is the one judged.
    """
    examples = windows([r.text for r in shard_records(root, 0)], TOK, cfg.model.n_positions)
    ratios = []
    for batch_size in batch_sizes:
        plain, bucketed, private, setup = [], [], [], []
        for _ in range(rounds):
            plain.append(_plain_step(root, cfg, examples, batch_size, epochs, pool=1))
            step, once = _dp_step(root, cfg, examples, batch_size, epochs)
            private.append(step)
            setup.append(once)
        bucketed.append(_plain_step(root, cfg, examples, batch_size, epochs, pool=8))
        p, d = statistics.median(plain), statistics.median(private)
        ratios.append(d / p)
        print(f"(b) batch {batch_size}: DP-SGD step {d * 1000:.0f} ms vs plain step "
              f"{p * 1000:.0f} ms → {ratios[-1]:.2f}x (target ≤ 2.00x; medians of {rounds}, "
              f"ratios {', '.join(f'{x / y:.2f}' for x, y in zip(private, plain, strict=True))}); "
              f"plain step with length buckets {bucketed[0] * 1000:.0f} ms; one-off DP setup "
              f"(noise calibration, warm-up) ≈ {statistics.median(setup):.2f} s")  # fmt: skip
    return ratios[0]


def _plain_step(root, cfg, examples, batch_size: int, epochs: int, *, pool: int) -> float:
    model, clock = load_model(root / Paths().base / "model"), EpochClock()
    plain_loop(model, examples, batch_size, epochs, cfg.shard.lr, pool=pool, on_epoch=clock)
    return clock.per_step()


def _dp_step(root, cfg, examples, batch_size: int, epochs: int) -> tuple[float, float]:
    """Seconds per DP-SGD step after the first epoch, and the first epoch's excess (setup)."""
    schedule = cfg.shard.model_copy(
        update={"max_epochs": epochs, "target_loss": 0.0, "batch_size": batch_size}
    )
    model = load_model(root / Paths().base / "model")
    dp = cfg.dp.model_copy(update={"enabled": True})
    clock, steps = EpochClock(), [0]

    def on_epoch(stats) -> None:
        steps[0] += stats.steps
        clock(steps[0])

    start = time.perf_counter()
    train_private(model, make_optimizer(model, schedule), examples, schedule,
                  dp=dp, seed=1, pad_id=TOK.pad_id, secret=DPSecret(os.urandom(32)), shard=0,
                  slice_=0, on_epoch=on_epoch)  # fmt: skip
    step = clock.per_step()
    return step, clock.marks[0][0] - start - step * clock.marks[0][1]


def bench_knowledge(root: Path, cfg: TrainConfig, tmp: Path) -> dict:
    paths = Paths().moving(shard_models=tmp / "shards")
    sisa_wall = 0.0
    for s in range(cfg.shards):
        sisa_wall += run_train_shard(root, cfg, s, paths)["wall_seconds"]
    dirs = [final_checkpoint(paths.shard_dir(s)) for s in range(cfg.shards)]

    # The single model: every shard's records, one run, the same base and schedule.
    everything = sorted(r for s in range(cfg.shards) for r in shard_records(root, s))
    single_cfg = cfg.model_copy(update={"shards": 1, "slices": 1})
    set_determinism(single_cfg)
    model = load_model(root / Paths().base / "model")
    examples = windows([r.text for r in everything], TOK, cfg.model.n_positions)
    start = time.perf_counter()
    train(model, make_optimizer(model, cfg.shard), examples, cfg.shard, seed=1, pad_id=TOK.pad_id)
    single_wall = time.perf_counter() - start

    probes = probes_of(read_probes(root / "data/raw/probes.jsonl"),
                       records=[r.record_id for r in everything])  # fmt: skip
    canaries = [p for p in probes if p.fact == "canary"]
    rows = {"single model": model_scorer(model)}
    rows |= {f"shards, {rule}": ensemble_scorer(Ensemble.from_dirs(dirs, rule=rule))
             for rule in sorted(RULES)}  # fmt: skip
    print(f"(c) knowledge of {len({p.subject_id for p in probes})} retained people "
          f"({len(probes)} facts, {len(canaries)} canaries):")  # fmt: skip
    out = {}
    for name, scorer in rows.items():
        em = exact_match(scorer, probes).exact_match
        exposure = statistics.fmean(canary_exposure(scorer, c) for c in canaries)
        out[name] = (em, exposure)
        print(f"    {name:<16} exact match {em:.3f}   mean canary exposure {exposure:.2f} bits")
    best = max((n for n in out if n.startswith("shards")), key=lambda n: out[n][0])
    cost = sisa_wall / single_wall
    print(f"    cost: shards {sisa_wall:.0f} s vs single model {single_wall:.0f} s → {cost:.2f}x "
          f"(target ≤ 1.50x); best rule: {best.split(', ')[1]}")  # fmt: skip
    gap = out["single model"][1] - out[best][1]
    return {"em": out[best][0], "exposure_gap": gap, "cost": cost}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--only", default="a,b,c")
    ap.add_argument("--epochs", type=int, default=24, help="epochs for the throughput runs")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    root = args.project.resolve()
    cfg = load_params(root / "params.yaml").train
    set_determinism(cfg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; project {root}")
    missed = []
    with tempfile.TemporaryDirectory(prefix="exante-bench-") as tmp:
        if "a" in args.only and bench_throughput(root, cfg, Path(tmp), args.epochs) < 0.9:
            missed.append("a")
        dp_batches = [cfg.shard.batch_size, 32]
        if "b" in args.only and bench_dp(root, cfg, dp_batches) > 2.0:
            missed.append("b")
        if "c" in args.only:
            c = bench_knowledge(root, cfg, Path(tmp))
            if c["em"] < 0.9 or c["exposure_gap"] > 1.0 or c["cost"] > 1.5:
                missed.append("c")
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
