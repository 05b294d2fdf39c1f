"""Benchmark: the verification stage alone, on models that are already trained.

Run it in a project where the pipeline has run (``make run``): the release and
the baselines (``models/verify``) must exist. It runs the measurement and the
verdicts as the ``verify`` stage does (no signing, no MLflow: those are
seconds and not what is timed) and prints the wall time of each attack, its
share of the total, and the total against the target.

    python bench/bench_verification.py            # the project's own params
    python bench/bench_verification.py --check    # exit 1 when the total exceeds the target
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from exante.params import load_params
from training.model import set_determinism
from verify.policy import load_policy
from verify.run import run

TARGET_SECONDS = 240.0  # the verify stage at the demo's defaults, on 2 cores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    ap.add_argument("--verbose", action="store_true", help="a line per subject and attack")
    args = ap.parse_args()
    root = args.project.resolve()
    os.chdir(root)
    params = load_params(root / "params.yaml")
    set_determinism(params.train)
    start = time.perf_counter()
    t0 = time.perf_counter()
    progress = (
        (lambda line: print(f"[{time.perf_counter() - t0:6.1f} s] {line}", flush=True))
        if args.verbose
        else (lambda line: None)
    )
    results = run(root, params, load_policy(root), progress=progress)
    total = time.perf_counter() - start
    timings = results["timings_seconds"]
    subjects = len(results["subjects"])
    print(f"verification stage on {root.name}: {subjects} subjects, forget set of "
          f"{len(results['forget_set']['forget_people'])} people "
          f"({len(results['forget_set']['forget_records'])} records), "
          f"threads {params.train.threads}")  # fmt: skip
    print(f"{'attack':14s} {'seconds':>8s} {'share':>7s}")
    for name, sec in timings.items():
        if name != "total":
            print(f"{name:14s} {sec:8.1f} {sec / total:7.1%}")
    print(f"{'setup':14s} {total - sum(s for k, s in timings.items() if k != 'total'):8.1f}")
    print(
        f"{'total':14s} {total:8.1f}   target <= {TARGET_SECONDS:.0f} s: "
        f"{'met' if total <= TARGET_SECONDS else 'MISSED'} ({total / TARGET_SECONDS:.2f}x)"
    )
    print(
        f"scores reused across subjects: {results['cache']['hits']} of "
        f"{results['cache']['hits'] + results['cache']['misses']} component passes"
    )
    return 1 if args.check and total > TARGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
