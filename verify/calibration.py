"""Uncertainty for every judged number: bootstrap over people, seed envelopes, a leak test.

- **Intervals.** Each judged statistic (subject − reference, a ratio, PrivLeak,
  forget quality, the relearning curve's worst point) is recomputed on
  bootstrap resamples of the *people* (forget and holdout people resampled
  independently; retain and public texts for utility), paired: the subject and
  the reference are scored on the same resample. The interval is the point ±
  z·se, se the bootstrap standard error, at level ``1 − α/m``: α pre-registered
  in the policy, ``m`` the subject's judged checks (Bonferroni). Efron &
  Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 6 and 13.
- **Envelopes.** K retrain references differ only in their training seed; how
  far another seed's statistic strays from the reference's (its largest
  deviation from "no difference") is the null envelope a subject's tolerance
  is widened by: a clean model must not fail for being another seed.
- **Record leak test.** Per forget record, the loss-MIA score (mean token
  log-prob) of the subject minus the reference's: the record's *rise*. A
  clean retrain of another seed rises by chance within the larger of
  ``z · scale``, the scale being the spread of the calibration references'
  rises (robust: 1.4826 × their median absolute value, pooled over records)
  and ``z`` the normal critical value at ``α / (m · n)`` (Bonferroni over
  checks and records), and the envelope: the largest absolute difference of
  any record in any calibration reference. The envelope is what holds in an
  ensemble, where most records do not depend on the forget shard at all (their
  differences are exactly 0, so the robust scale is 0) while a few depend on it
  heavily: on the demo a clean retrain moved 5 of 33 records, by up to 0.62
  nats, and a rule on the robust scale alone failed 5 of 20 clean retrains
  (docs/benchmarks.md). The largest rise must stay within that noise plus the
  policy's margin (nats): a record the subject was trained on rises far above.
  Carlini et al., "Membership Inference Attacks From First Principles"
  (S&P 2022) motivate per-example calibration against reference models.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from verify.metrics import auc, forget_quality
from verify.verdicts import PVALUES

Weights = Mapping[str, int]  # person (or text) id -> multiplicity in a resample


@dataclass(frozen=True)
class Owners:
    """Who each scored item belongs to: records and probes → person; texts → themselves."""

    forget: Mapping[str, str]  # forget record/probe id -> person
    holdout: Mapping[str, str]  # holdout text/probe id -> person

    @property
    def forget_people(self) -> list[str]:
        return sorted(set(self.forget.values()))

    @property
    def holdout_people(self) -> list[str]:
        return sorted(set(self.holdout.values()))


@dataclass(frozen=True)
class Resample:
    forget: Weights
    holdout: Weights
    text_seed: int | None  # how retain/public texts are resampled; None = every text once


def identity(owners: Owners) -> Resample:
    return Resample(Counter(owners.forget_people), Counter(owners.holdout_people), None)


def resamples(owners: Owners, n: int, seed: int) -> list[Resample]:
    rng = random.Random(f"bootstrap:{seed}")
    f, h = owners.forget_people, owners.holdout_people
    return [
        Resample(
            Counter(rng.choices(f, k=len(f))),
            Counter(rng.choices(h, k=len(h))),
            rng.randrange(1 << 30),
        )
        for _ in range(n)
    ]


# -- per-check statistics on a resample: (subject result, reference result) -> number ---------


def weighted_mean(
    rows: Sequence[dict], field: str, owner: Mapping[str, str], w: Weights
) -> float | None:
    num = den = 0.0
    for r in rows:
        k = w.get(owner.get(r["id"], ""), 0)
        x = r.get(field)
        if k and x is not None:
            num, den = num + k * float(x), den + k
    return num / den if den else None


def _examples(res: dict, key: str) -> list[dict]:
    return res.get("examples", {}).get(key, [])


def _diff(key: str, field: str):
    def stat(s: dict, r: dict, o: Owners, w: Resample) -> float | None:
        a = weighted_mean(_examples(s, key), field, o.forget, w.forget)
        b = weighted_mean(_examples(r, key), field, o.forget, w.forget)
        return None if a is None or b is None else a - b

    return stat


def _rank_ratio(s, r, o: Owners, w: Resample):
    a = weighted_mean(_examples(s, "knowmem"), "rank", o.forget, w.forget)
    b = weighted_mean(_examples(r, "knowmem"), "rank", o.forget, w.forget)
    return None if a is None or not b else a / b


def mia_auc(res: dict, o: Owners, w: Resample) -> float | None:
    ex = res.get("examples", {})
    pos = [
        (x, w.forget.get(o.forget.get(i, ""), 0))
        for i, x in zip(
            ex.get("mia_forget_ids", []), ex.get("mia_forget", {}).get("loss", []), strict=True
        )
    ]
    neg = [
        (x, w.holdout.get(o.holdout.get(i, ""), 0))
        for i, x in zip(
            ex.get("mia_holdout_ids", []), ex.get("mia_holdout", {}).get("loss", []), strict=True
        )
    ]
    return weighted_auc(pos, neg)


def weighted_auc(pos: Sequence[tuple[float, int]], neg: Sequence[tuple[float, int]]):
    """Mann–Whitney AUC with multiplicities (ties count one half); None when a side is empty.

    One pass over the scores in order: O(n log n), not one comparison per pair.
    """
    wp, wn = sum(k for _, k in pos), sum(k for _, k in neg)
    if not wp or not wn:
        return None
    marked = sorted([(x, k, 0) for x, k in neg if k] + [(x, k, 1) for x, k in pos if k])
    u = below = 0.0
    i = 0
    while i < len(marked):
        j, tp, tn = i, 0.0, 0.0
        while j < len(marked) and marked[j][0] == marked[i][0]:
            tp, tn = (tp + marked[j][1], tn) if marked[j][2] else (tp, tn + marked[j][1])
            j += 1
        u += tp * (below + tn / 2)
        below, i = below + tn, j
    return u / (wp * wn)


def _privleak(s, r, o, w):
    a, b = mia_auc(s, o, w), mia_auc(r, o, w)
    return None if a is None or not b else auc.privleak(a, b)


def _losses(res: dict, o: Owners, w: Resample) -> list[float]:
    ex = res.get("examples", {})
    ids, xs = ex.get("mia_forget_ids", []), ex.get("mia_forget", {}).get("loss", [])
    return [
        x for i, x in zip(ids, xs, strict=True) for _ in range(w.forget.get(o.forget.get(i, ""), 0))
    ]


def _forget_quality(s, r, o, w):
    a, b = _losses(s, o, w), _losses(r, o, w)
    return forget_quality.forget_quality(a, b) if a and b else None


def _ppl(key: str):
    def stat(s, r, o, w: Resample):
        a, b = s.get("examples", {}).get(key), r.get("examples", {}).get(key)
        if not a or not b:
            return None
        pick = _text_weights(len(a), w)
        return _perplexity(a, pick) / _perplexity(b, pick)

    return stat


def _text_weights(n: int, w: Resample) -> list[int]:
    if w.text_seed is None:
        return [1] * n
    rng = random.Random(w.text_seed)
    c = Counter(rng.randrange(n) for _ in range(n))
    return [c.get(i, 0) for i in range(n)]


def _perplexity(rows: Sequence[Sequence[float]], weights: Sequence[int]) -> float:
    nll = sum(k * row[0] for row, k in zip(rows, weights, strict=True))
    count = sum(k * row[1] for row, k in zip(rows, weights, strict=True))
    return math.exp(nll / count)


def _extraction(s, r, o, w):
    def rate(res):
        rows = [
            {"id": x["id"], "hit": x["first_hit"] is not None} for x in _examples(res, "extraction")
        ]
        return weighted_mean(rows, "hit", o.forget, w.forget)

    a, b = rate(s), rate(r)
    return None if a is None or b is None else a - b


def _relearn(field: str):
    """The worst point of the curve: the largest gap over the reference at any budget k."""

    def stat(s, r, o, w):
        gaps = []
        for ps, pr in zip(s.get("curve", []), r.get("curve", []), strict=False):
            a = weighted_mean(ps.get("examples", []), field, o.forget, w.forget)
            b = weighted_mean(pr.get("examples", []), field, o.forget, w.forget)
            if a is not None and b is not None:
                gaps.append(a - b)
        return max(gaps) if gaps else None

    return stat


STATISTICS: dict[str, Callable] = {
    "knowmem_em": _diff("knowmem", "known"),
    "knowmem_rank": _rank_ratio,
    "verbmem_rouge_l": _diff("verbmem", "rouge_l"),
    "exposure_bits": _diff("exposure", "bits"),
    "privleak": _privleak,
    "forget_quality": _forget_quality,
    "ppl_retain": _ppl("ppl_retain_texts"),
    "ppl_public": _ppl("ppl_public_texts"),
    "extraction": _extraction,
    "relearn_em": _relearn("known"),
    "relearn_exposure_bits": _relearn("bits"),
}


def interval(
    check: str, s: dict, r: dict, owners: Owners, draws: Sequence[Resample], level: float
) -> tuple[float, float] | None:
    """The percentile interval of ``check``'s statistic over ``draws`` at ``level``.

    None for a p-value (forget quality): it is a test of its own, judged at a
    corrected level (:mod:`verify.verdicts`), and a percentile interval of
    p-values has no meaning.
    """
    fn = STATISTICS.get(check)
    if fn is None or not draws or check in PVALUES:
        return None
    centre = fn(s, r, owners, identity(owners))
    if centre is None:
        return None
    return bootstrap_interval((fn(s, r, owners, d) for d in draws), level, centre)


def bootstrap_interval(values: Iterable[float | None], level: float, point: float | None = None):
    """A normal interval at ``level`` around the point, with the bootstrap standard error.

    A percentile interval cannot reach a Bonferroni-corrected level: at α/m of
    1e-4, 400 resamples have no such tail, and their min and max cover far
    less. ``point ± z·se`` does (under approximate normality of the
    statistic), at a cost that does not grow with the level. None when fewer
    than 20 (or half) of the resamples could be scored. Without ``point``, the
    resamples' mean is the centre.
    """
    got = list(values)
    kept = [x for x in got if x is not None]
    if len(kept) < max(20, len(got) // 2):
        return None
    centre = statistics.fmean(kept) if point is None else point
    half = NormalDist().inv_cdf(1 - (1 - level) / 2) * statistics.stdev(kept)
    return (centre - half, centre + half)


def point(check: str, s: dict, r: dict, owners: Owners) -> float | None:
    fn = STATISTICS.get(check)
    return None if fn is None else fn(s, r, owners, identity(owners))


def envelope(deviations: Sequence[float | None]) -> float:
    """The largest deviation from "no difference" among the calibration references."""
    xs = [abs(x) for x in deviations if x is not None and not math.isnan(x)]
    return max(xs) if xs else 0.0


# -- the record leak test -----------------------------------------------------------------


@dataclass(frozen=True)
class LeakTest:
    scale: float  # robust sd of a clean retrain's per-record score difference
    critical: float  # z a record must exceed to count as leaked
    records: int
    envelope: float = 0.0  # the largest |difference| of one record in a calibration reference

    @property
    def noise(self) -> float:
        """How far one record of a clean retrain may rise by chance (nats): critical z × scale,
        or the calibration references' largest per-record difference where that is more."""
        return max(self.scale * self.critical, self.envelope)


def _record_scores(res: dict) -> dict[str, float]:
    ex = res.get("examples", {})
    return dict(
        zip(ex.get("mia_forget_ids", []), ex.get("mia_forget", {}).get("loss", []), strict=True)
    )


def leak_test(reference: dict, calibration: Sequence[dict], *, alpha: float, checks: int):
    """Fit the per-record scale on the calibration references; None without any.

    The scale is the spread around 0 (as the rise is taken), so a clean
    retrain's overall shift widens it instead of making other clean models
    look leaky. Where the subject's forget shard moves only a few records'
    scores (an ensemble whose other shards outweigh it on most), the scale is
    near 0 and the envelope (the largest difference seen) bounds the noise;
    where it moves none, both are 0 and the policy's margin (in nats) is what a
    leak must exceed.
    """
    ref = _record_scores(reference)
    diffs = [c[i] - ref[i] for c in map(_record_scores, calibration) for i in ref if i in c]
    if len(diffs) < 2:
        return None
    scale = 1.4826 * statistics.median(abs(d) for d in diffs)
    n = max(len(ref), 1)
    critical = NormalDist().inv_cdf(1 - alpha / (max(checks, 1) * n))
    return LeakTest(scale, critical, n, envelope=max(abs(d) for d in diffs))


def leak_rise(subject: dict, reference: dict) -> tuple[float | None, str | None]:
    """The largest rise of one forget record's score over the reference's, and which record."""
    s, r = _record_scores(subject), _record_scores(reference)
    rises = {i: s[i] - r[i] for i in r if i in s}
    if not rises:
        return None, None
    worst = max(rises, key=rises.get)
    return rises[worst], worst
