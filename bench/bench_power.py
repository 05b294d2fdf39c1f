"""Benchmark: the verification's error rates — does a single-record leak fail, a clean retrain pass?

Run it in a project where the pipeline has run (``make run``): the release, the
baselines and the registration must exist. For each of ``--seeds`` N draws i it
trains, into a temporary directory (the project is not touched):

- ``planted-i``: the forget shard retrained without the forget set but for ONE
  forget record (chosen by a key derived from i), with a training seed of its
  own, so the leak hides among seed noise as a real one would;
- ``heldout-i``: a clean retrain with another seed never used by calibration.

Then one verification run judges all 2N models as extra subjects against the
same reference, calibration and policy as ``exante verify`` (``verify.run``,
no signing or MLflow). It prints, per draw, each verdict and the record-leak
statistic, and the two rates against the targets: a planted leak fails in at
least 19 of 20 draws, a clean retrain passes in at least 19 of 20.

    python bench/bench_power.py --seeds 20          # the 20-draw measurement
    python bench/bench_power.py --seeds 20 --first 20   # 20 fresh draws (20..39)
    python bench/bench_power.py --seeds 3 --check   # a quick look; exit 1 on a miss
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
from training.sisa import dp_secret_for, final_checkpoint, train_shard
from training.stages import Paths
from verify.baselines import _base, planted_set
from verify.policy import load_policy
from verify.run import forget_set, run
from verify.seeds import _derive, calibration_seeds, heldout_seed, keyed_choice


def _train(root: str, cfg: dict, planted: str | None, out: str) -> str:
    """One draw's model (a worker process): the forget shard without the forget set, but for
    ``planted`` (one forget record left in) when given."""
    root_path = Path(root)
    params = load_params(root_path / "params.yaml")
    config = TrainConfig.model_validate(cfg)
    fs = forget_set(root_path, params.verify)
    placed = planted_set(fs, planted) if planted else fs.remaining()
    set_determinism(config)
    train_shard(fs.shard, placed, config, base=_base(root_path, Paths()), out_dir=Path(out),
                dp_secret=dp_secret_for(config, root_path))  # fmt: skip
    return str(final_checkpoint(Path(out)))


def _seed(kind: str, i: int, taken: set[int]) -> int:
    n = 0
    while (s := _derive("bench-power", kind, i, n)) in taken:
        n += 1
    taken.add(s)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument(
        "--first",
        type=int,
        default=0,
        help="the first draw's index: --first 20 draws 20..39, fresh keys and seeds",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    root = args.project.resolve()
    os.chdir(root)
    params, policy = load_params(root / "params.yaml"), load_policy(root)
    cfg = params.train
    fs = forget_set(root, params.verify)
    k = policy.policy.calibration.references
    taken = {cfg.seed, heldout_seed(cfg.seed), *calibration_seeds(cfg.seed, k)}
    probed = sorted({p.record_id for p in fs.forget_probes}) or sorted(fs.forget_record_ids)
    work = Path(tempfile.mkdtemp(prefix="bench-power-"))
    planted, jobs, t0 = {}, {}, time.perf_counter()
    try:
        for i in range(args.first, args.first + args.seeds):
            record = keyed_choice(_derive("bench-power", "record", i), probed)
            planted[f"planted-{i}"] = record
            leak = cfg.model_copy(update={"seed": _seed("planted", i, taken)})
            jobs[f"planted-{i}"] = (str(root), leak.model_dump(mode="json"), record,
                                    str(work / f"planted-{i}"))  # fmt: skip
            clean = cfg.model_copy(update={"seed": _seed("heldout", i, taken)})
            jobs[f"heldout-{i}"] = (str(root), clean.model_dump(mode="json"), None,
                                    str(work / f"heldout-{i}"))  # fmt: skip
        print(f"training {len(jobs)} models, {cfg.workers} at a time", flush=True)
        done = run_units(_train, list(jobs.values()), names=list(jobs), **pool_of(cfg))
        extra = {name: Path(d) for name, d in zip(jobs, done, strict=True)}
        trained = time.perf_counter() - t0
        print(f"[{trained:6.0f} s] trained; judging {len(extra)} subjects", flush=True)
        results = run(root, params, policy, extra=extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    judged = time.perf_counter() - t0 - trained
    return _report(results, planted, args, trained, judged)


def _report(results, planted, args, trained: float, judged: float) -> int:
    summary = results["summary"]
    z = {v["subject"]: v for v in results["verdicts"]
         if v["check"] == "record_leak" and v["attack"] == "none"}  # fmt: skip
    print(f"{'draw':>4s}  {'planted record':24s} {'verdict':>12s} {'rise':>7s}   "
          f"{'clean retrain':>13s} {'rise':>7s}   (largest record rise in nats)")  # fmt: skip
    fails = passes = 0
    for i in range(args.first, args.first + args.seeds):
        p, h = f"planted-{i}", f"heldout-{i}"
        fails += summary[p]["verdict"] == "fail"
        passes += summary[h]["verdict"] == "pass"
        print(f"{i:4d}  {planted[p]:24s} {summary[p]['verdict']:>12s} {_z(z.get(p)):>7s}   "
              f"{summary[h]['verdict']:>13s} {_z(z.get(h)):>7s}")  # fmt: skip
    n = args.seeds
    need = -(-19 * n // 20)  # 19 of 20, rounded up
    noise = z.get(f"planted-{args.first}", {}).get("reference")
    margin = z.get(f"planted-{args.first}", {}).get("threshold")
    print(f"a record fails beyond seed noise {_z({'value': noise})} + margin "
          f"{_z({'value': margin})} nats; α {results['calibration']['alpha']}, "
          f"{results['calibration']['references']} reference(s)")  # fmt: skip
    print(f"planted single-record leak failed: {fails}/{n} (target ≥ {need}) "
          f"{'met' if fails >= need else 'MISSED'}")  # fmt: skip
    print(f"clean held-out-seed retrain passed: {passes}/{n} (target ≥ {need}) "
          f"{'met' if passes >= need else 'MISSED'}")  # fmt: skip
    for name, s in summary.items():
        if name.startswith("heldout-") and s["verdict"] != "pass":
            print(f"  {name}: {s['verdict']} — failed {s['failed']}, inconclusive "
                  f"{s['inconclusive']}")  # fmt: skip
    print(f"training {trained:.0f} s, judging {judged:.0f} s")
    return 1 if args.check and (fails < need or passes < need) else 0


def _z(v) -> str:
    x = (v or {}).get("value")
    return "—" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
