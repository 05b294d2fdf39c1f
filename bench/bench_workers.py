"""Benchmark: the demo's shards trained by a pool of workers against one after another.

Run it in a project where the pipeline has run (``make run``): it trains every
shard from scratch into a temporary directory (the project is not touched),
twice, side by side in one run:

(a) sequential: one process, shard after shard, with all the pool's threads
    (``train.threads × train.workers``): what one stage per shard did before;
(b) the pool: ``train.workers`` processes with ``train.threads`` threads each
    (``exante train shards``, the ``train`` stage), or Ray tasks with
    ``--executor ray`` (a local cluster started for the run, its start-up counted).

It prints each wall time and the ratio (a)/(b); on 2 cores two one-thread
workers against one two-thread process. The two runs use different thread
counts, so their weights differ in the last bits; that a shard trains to the
same bits in the pool as alone with the same threads is a test
(tests/training/test_executor.py), not a benchmark.

    python bench/bench_workers.py
    python bench/bench_workers.py --executor ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from exante.params import load_params
from training.config import TrainConfig
from training.executor import pool_of, run_units
from training.model import set_determinism
from training.partition import read_shard, shard_file
from training.sisa import dp_secret_for, train_shard
from training.stages import Paths


def _train(root: str, cfg: dict, shard: int, out: str) -> float:
    config = TrainConfig.model_validate(cfg)
    root_path, paths = Path(root), Paths()
    placed = read_shard(root_path / shard_file(paths.shards, shard))
    set_determinism(config)
    start = time.perf_counter()
    train_shard(shard, placed, config, base=root_path / paths.base / "model", out_dir=Path(out),
                dp_secret=dp_secret_for(config, root_path))  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--executor", choices=["local", "ray"], help="default: train.executor")
    args = ap.parse_args()
    root = args.project.resolve()
    os.chdir(root)
    cfg = load_params(root / "params.yaml").train
    if args.executor:
        cfg = cfg.model_copy(update={"executor": args.executor})
    if cfg.workers < 2:
        print("train.workers is 1: nothing to compare; set it to the pool size to measure")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        alone = cfg.model_copy(update={"threads": cfg.threads * cfg.workers, "workers": 1})
        t0 = time.perf_counter()
        seq = [_train(str(root), alone.model_dump(mode="json"), s, str(work / f"a{s}"))
               for s in range(cfg.shards)]  # fmt: skip
        sequential = time.perf_counter() - t0
        jobs = [(str(root), cfg.model_dump(mode="json"), s, str(work / f"b{s}"))
                for s in range(cfg.shards)]  # fmt: skip
        t0 = time.perf_counter()
        pooled = run_units(_train, jobs, **pool_of(cfg))
        pool = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{cfg.shards} shards on {os.cpu_count()} cores")
    print(f"(a) sequential, 1 process x {alone.threads} threads: {sequential:6.1f} s "
          f"(shards {', '.join(f'{x:.0f}' for x in seq)} s)")  # fmt: skip
    print(f"(b) {cfg.executor}, {cfg.workers} workers x {cfg.threads} thread(s): {pool:6.1f} s "
          f"(shards {', '.join(f'{x:.0f}' for x in pooled)} s, each on shared cores)")  # fmt: skip
    print(f"speed-up (a)/(b): {sequential / pool:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
