"""Benchmark: measuring one subject, as the verification did and as it does now.

Run it in a project where the pipeline has run (``make run``). It loads the
released shards as the verification does and measures the released ensemble
(``original``, no attack: every static metric, as each part of ``exante verify
run`` measures each subject) three ways per round, in a rotating order,
``--repeat`` rounds, on one thread as a verification worker has:

* ``before``: the stock activation (``transformers``' ``NewGELUActivation``,
  seven tensor ops) and every scored sequence run whole;
* ``fused``: :func:`verify.subjects.fused_activations` (torch's one-kernel
  tanh-GELU), sequences still run whole;
* ``now``: fused, and sequences that share a prompt (a fact's candidate
  answers, a canary's alternatives) run it once
  (:func:`verify.subjects.prompt_shared_logprobs`).

It prints each round's seconds, the medians and their ratios to ``before``,
and how far ``now`` is from ``before``: the largest difference of any metric or
membership score, and whether every per-record knowledge flag agrees (exit 1
if one does not).

    python bench/bench_measure.py --project <a make-run project> [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from pathlib import Path

import torch

from exante.params import load_params
from training.model import set_determinism
from training.stages import released_dirs
from training.tokenizer import tokenizer_for
from verify.forget import forget_set
from verify.measure import MeasureSettings, measure
from verify.subjects import Component, ScoreCache, Subject, load_component


class _Whole(ScoreCache):
    """The cache as it was: every sequence run whole, whatever prompt it shares."""

    def logprobs(self, c, seqs, prompts=None):
        return super().logprobs(c, seqs)


def _timed(components, params, fs, s, cache: ScoreCache) -> tuple[float, dict]:
    cfg = params.train
    subject = Subject("original", components, rule=cfg.ensemble, cache=cache,
                      tokenizer=tokenizer_for(cfg.model))  # fmt: skip
    start = time.perf_counter()
    out = measure(subject, fs, s)
    return time.perf_counter() - start, out


def _stock(c: Component) -> Component:
    """The same weights with the activation modules ``transformers`` builds (not fused)."""
    from transformers.activations import GELUTanh, NewGELUActivation

    model = copy.deepcopy(c.model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is GELUTanh:
                setattr(module, name, NewGELUActivation())
    return Component(model, c.key + "+stock")


def _largest_difference(a: dict, b: dict) -> tuple[float, list[str]]:
    worst, unequal = 0.0, []
    for k, x in a["metrics"].items():
        y = b["metrics"][k]
        if isinstance(x, float) and isinstance(y, float):
            worst = max(worst, abs(x - y))
        elif x != y:
            unequal.append(k)
    known = [e["known"] for e in a["examples"]["knowmem"]]
    if known != [e["known"] for e in b["examples"]["knowmem"]]:
        unequal.append("knowmem examples (known)")
    for side in ("mia_forget", "mia_holdout"):
        for m, xs in a["examples"][side].items():
            ys = b["examples"][side][m]
            worst = max([worst, *(abs(x - y) for x, y in zip(xs, ys, strict=True))])
    return worst, unequal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = args.project.resolve()
    os.chdir(root)
    params = load_params(root / "params.yaml")
    set_determinism(params.train)
    torch.set_num_threads(params.train.threads)
    v = params.verify
    fs = forget_set(root, v)
    s = MeasureSettings(v.prefix_bytes, v.max_new_tokens, v.exposure_candidates)
    fused = [load_component(d) for d in released_dirs(root, params.train)]
    stock = [_stock(c) for c in fused]
    ways = {"before": (stock, _Whole), "fused": (fused, _Whole), "now": (fused, ScoreCache)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    outs = {}
    names = list(ways)
    for r in range(args.repeat):
        order = names[r % 3 :] + names[: r % 3]
        for name in order:
            components, cache = ways[name]
            sec, outs[name] = _timed(components, params, fs, s, cache())
            times[name].append(sec)
        print(f"round {r + 1}: " + ", ".join(f"{w} {times[w][-1]:.1f} s" for w in order),
              flush=True)  # fmt: skip
    med = {w: statistics.median(times[w]) for w in ways}
    worst, unequal = _largest_difference(outs["before"], outs["now"])
    print(f"measure() of the released ensemble, {len(fused)} shards, {args.repeat} rounds, "
          f"{params.train.threads} thread(s)")  # fmt: skip
    for w, label in (("before", "stock gelu_new, whole sequences"),
                     ("fused", "fused tanh-GELU, whole sequences"),
                     ("now", "fused tanh-GELU, shared prompts run once")):  # fmt: skip
        print(f"  {label:42s} median {med[w]:6.1f} s   {med['before'] / med[w]:5.2f}x")
    print(
        f"  now vs before, largest difference of a metric or a membership score: {worst:.3g}"
        + ("" if math.isfinite(worst) else " (not finite)")
    )
    print(
        "  every per-record knowledge flag and every other metric equal: "
        + ("yes" if not unequal else f"NO: {', '.join(unequal)}")
    )
    return 0 if not unequal else 1


if __name__ == "__main__":
    raise SystemExit(main())
