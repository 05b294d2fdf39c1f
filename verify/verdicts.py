r"""Verdicts that fail closed: every check ends pass, fail, inconclusive or not applicable.

A compliance "pass" must mean *measured and within bounds*, never "nothing
was measured". So a check the policy names is judged on every attack it
belongs to; a value that is missing or NaN is ``inconclusive`` (with the
reason), unless the corpus lacks the check's inputs altogether (no planted
canary, no fact to probe), which is ``n/a`` by name.

A measured check is a test of "the subject tells no more about the forget set
than a clean retrain, within the pre-registered margin": it ``fail``\ s only
when its interval (at the Bonferroni-corrected level) lies wholly beyond the
tolerance — a significant excess; it is ``inconclusive`` when the point
estimate is beyond the tolerance but the interval still reaches inside it;
and it ``pass``\ es when the point estimate is within. A pass is therefore
"no significant excess", and is worth what the test's power is: the
verification's planted-leak control must fail, or no pass stands (see
:mod:`verify.judging`), and the report states the minimum detectable leak.
A p-value statistic (forget quality) is itself a test: its threshold is
divided by the number of judged checks (Bonferroni) instead.

A subject is ``fail`` if any check fails, else ``inconclusive`` if any is
inconclusive or none passed, else ``pass``. ``n/a`` checks are listed by name
and do not count either way; a pass under an attack whose positive control
did not fire is reported as ``ineffective`` (not evidence) instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

PASS, FAIL, INCONCLUSIVE, NA, INEFFECTIVE = "pass", "fail", "inconclusive", "n/a", "ineffective"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE, NA, INEFFECTIVE)
RELATIVE = {"privleak", "forget_quality"}  # statistics already measured against the reference
PVALUES = {"forget_quality"}  # the statistic is a p-value: a test of its own

# Which attacks (result labels) each policy check is judged under. A check absent
# here has no metric behind it, and a policy naming it is refused (exit 3).
STATIC = (
    "knowmem_em",
    "knowmem_rank",
    "verbmem_rouge_l",
    "exposure_bits",
    "privleak",
    "forget_quality",
    "record_leak",
    "ppl_retain",
    "ppl_public",
)
DYNAMIC = {"relearn_em": "relearn", "relearn_exposure_bits": "relearn", "extraction": "extraction"}
KNOWN_CHECKS = frozenset(STATIC) | frozenset(DYNAMIC)
# inputs a check needs from the corpus: without them it is not applicable (by name)
NEEDS = {
    "knowmem_em": "probes",
    "knowmem_rank": "probes",
    "exposure_bits": "canaries",
    "relearn_exposure_bits": "relearn_canaries",  # a canary among the half it measures
    "extraction": "secrets",  # verify.extraction.facts among the forget set's probes
    "privleak": "holdout",  # membership inference against the held-out split
    "ppl_public": "public",
}


NEED_TEXT = {
    "probes": "fact to probe",
    "canaries": "planted canary",
    "secrets": "secret to extract",
    "relearn_canaries": "planted canary among the people relearning measures",
    "holdout": "held-out record (registry holdout) to compare members with",
    "public": "public text held out from training (verify.public_play)",
}


@dataclass(frozen=True)
class Verdict:
    subject: str
    attack: str
    check: str
    value: float | None
    reference: float | None
    rule: str
    threshold: float
    outcome: str
    reason: str = ""
    interval: tuple[float, float] | None = None  # of the judged statistic (see ``judged``)
    tolerance: float | None = None  # the bound the statistic was held to (threshold + envelope)

    @property
    def passed(self) -> bool:
        return self.outcome == PASS

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d


def attacks_of(check: str, static_attacks: Sequence[str]) -> tuple[str, ...]:
    """The result labels a policy check is judged under."""
    return (DYNAMIC[check],) if check in DYNAMIC else tuple(static_attacks)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def judged(rule: str, value: float, reference: float | None) -> float:
    """The statistic a rule bounds: subject − reference, subject / reference, or the value."""
    if rule == "max_above":
        return value - reference
    if rule in ("max_ratio", "min_ratio"):
        return value / reference if reference else math.inf
    return abs(value) if rule == "max_abs" else value


def judge(
    check_name: str,
    rule: str,
    threshold: float,
    *,
    subject: str,
    attack: str,
    value,
    reference,
    interval: tuple[float, float] | None = None,
    envelope: float = 0.0,
    absent: str | None = None,
    why_missing: str = "not measured",
    corrections: int = 1,
    statistic: float | None = None,
) -> Verdict:
    """One verdict. ``absent`` names the corpus input the check lacks (→ n/a).

    ``interval`` bounds the judged statistic (see :func:`judged`); ``envelope``
    widens the tolerance by what seed-to-seed retrains differ by (calibration);
    ``corrections`` divides a p-value check's threshold (Bonferroni);
    ``statistic`` overrides :func:`judged` (the statistic ``interval`` is of).
    """
    v = Verdict(subject, attack, check_name, value, reference, rule, threshold, INCONCLUSIVE)
    if absent:
        return replace(
            v, outcome=NA, reason=f"no {NEED_TEXT.get(absent, absent)} in this forget set"
        )
    needs_ref = check_name not in RELATIVE and rule not in ("max_abs", "min")
    if _missing(value) or (needs_ref and _missing(reference)):
        return replace(v, reason=why_missing)
    stat = judged(rule, value, reference) if statistic is None else statistic
    if rule == "max_abs":  # the bound is on |statistic|: so is the interval
        stat, interval = abs(stat), _abs_interval(interval)
    upper = rule in ("max_above", "max_ratio", "max_abs")
    if check_name in PVALUES:
        tol = threshold / corrections
    else:
        tol = threshold + envelope if upper else threshold - envelope
    lo, hi = interval if interval else (stat, stat)
    if upper:
        outcome = FAIL if lo > tol else INCONCLUSIVE if stat > tol else PASS
    else:
        outcome = FAIL if hi < tol else INCONCLUSIVE if stat < tol else PASS
    reason = "" if outcome != INCONCLUSIVE else "beyond the tolerance, but not significantly"
    return replace(v, outcome=outcome, reason=reason, interval=interval, tolerance=tol)


def _abs_interval(iv: tuple[float, float] | None) -> tuple[float, float] | None:
    if iv is None:
        return None
    lo, hi = iv
    return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))


def subject_verdict(verdicts: Iterable[Verdict]) -> dict:
    """A subject's outcome from its checks, with every non-pass listed by name."""
    mine = list(verdicts)
    by = {o: [f"{x.attack}/{x.check}" for x in mine if x.outcome == o] for o in OUTCOMES}
    if by[FAIL]:
        verdict = FAIL
    elif by[INCONCLUSIVE] or not by[PASS]:
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    return {
        "checks": len(mine),
        "verdict": verdict,
        "failed": by[FAIL],
        "inconclusive": by[INCONCLUSIVE],
        "not_applicable": by[NA],
        "ineffective": by[INEFFECTIVE],
        "passed": len(by[PASS]),
    }


def cell_outcome(verdicts: Sequence[dict]) -> str:
    """One subject × attack cell (tables, HTML, MLflow tags): the same rule as a subject's.

    ``none`` where the policy judges nothing there (a note such as in-context).
    """
    outcomes = {v["outcome"] for v in verdicts}
    for o in (FAIL, INCONCLUSIVE, PASS, INEFFECTIVE, NA):
        if o in outcomes:
            return o
    return "none"
