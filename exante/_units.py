"""Training units run in worker processes (``training.executor``): importable, picklable.

Each takes plain arguments (the project root as a string, params as JSON-ready
dicts), rebuilds what it needs, and returns the unit's metrics dict.
"""

from __future__ import annotations

from pathlib import Path


def train_shard(root: str, cfg: dict, shard: int, lines: bool) -> dict:
    """One SISA shard (``exante train shard``), with progress lines on stderr if asked."""
    from exante.cli import _progress, _shard_plan
    from training.config import TrainConfig
    from training.stages import run_train_shard

    config = TrainConfig.model_validate(cfg)
    on_epoch, close = (None, lambda: None)
    if lines:
        on_epoch, close = _progress(f"train shard {shard}", _shard_plan(config, shard), lines=True)
    try:
        return run_train_shard(Path(root), config, shard, on_epoch=on_epoch)
    finally:
        close()


def build_baseline(root: str, name: str) -> dict:
    """One verification baseline (``exante verify baseline``), built and stamped."""
    import os
    import time

    from exante.params import load_params
    from verify import baselines
    from verify.forget import forget_set
    from verify.policy import load_policy

    os.chdir(root)  # params, policy and the registration are read relative to the project
    params, policy = load_params(), load_policy(Path("."))
    fs = forget_set(Path("."), params.verify)
    start = time.perf_counter()
    info = baselines.build(Path("."), name, params, policy, fs)
    return {"kind": info["kind"], "seconds": time.perf_counter() - start}
