"""Judging a verification's measurements: verdicts, controls and per-subject outcomes.

The roles (see :mod:`verify.run`): ``retrain`` is the reference every subject
is compared with, and is itself judged *absolutely* against people no model
saw (the holdout null); ``calib:<seed>`` retrains give the seed envelopes and
the record-leak scale and are not judged; ``heldout`` (a clean retrain with an
unused seed) must pass and ``planted`` (the reference retrained with one forget
record left in) must fail — the run's power controls. Every attack has a
positive control, a subject where it should recover something; an attack
whose control does not fire is reported ineffective, and passes under it are
not evidence. ``exact``'s bit-identity with the reference is its own check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from verify import calibration as cal
from verify.metrics import auc
from verify.verdicts import (
    FAIL,
    INCONCLUSIVE,
    INEFFECTIVE,
    NEEDS,
    PASS,
    PVALUES,
    Verdict,
    attacks_of,
    judge,
    subject_verdict,
)

REFERENCE = "retrain"
SHARD = "shard"  # the white-box attack: the subject's forget-shard model alone
CALIBRATION = "calib:"
HELDOUT, PLANTED = "heldout", "planted"
UTILITY = {"ppl_retain", "ppl_public"}  # a utility check failing is no detected leak
NEUTRAL = {"max_above": 0.0, "max_abs": 0.0, "max_ratio": 1.0, "min_ratio": 1.0}


@dataclass(frozen=True)
class Settings:
    alpha: float
    bootstrap: int
    seed: int
    static_attacks: tuple[str, ...]  # result labels of the static metrics (none, int4, shard, …)


def judged_names(results: Mapping) -> list[str]:
    """Subjects held to the policy: everyone but the reference and the calibration retrains."""
    return [n for n in results if n != REFERENCE and not n.startswith(CALIBRATION)]


def judge_all(
    results: Mapping,
    policy,
    owners: cal.Owners,
    inputs: Mapping[str, bool],
    s: Settings,
    *,
    digests: Mapping[str, str],
    planted_record: str | None = None,
    why_missing: Mapping[str, str] = {},
) -> dict:
    """Every verdict, the controls, and each subject's outcome.

    ``inputs`` says which corpus inputs exist (``probes``, ``canaries``);
    ``digests`` are the subjects' forget-shard weights digests; ``why_missing``
    gives, per attack, why a value could not be measured.
    """
    checks = policy.policy.checks
    ref = results[REFERENCE]
    calib = [results[n] for n in results if n.startswith(CALIBRATION)]
    # utility is the deployed ensemble's: a shard attacked alone is judged on leaks only
    pairs = [(a, c) for c in checks for a in attacks_of(c, s.static_attacks)
             if not (a == SHARD and c in UTILITY)]  # fmt: skip
    m = max(1, len(pairs))
    level = 1 - s.alpha / m
    leak = {
        a: cal.leak_test(ref[a], [c[a] for c in calib if a in c], alpha=s.alpha, checks=m)
        for a in s.static_attacks
        if a in ref
    }
    draws = cal.resamples(owners, s.bootstrap, s.seed)
    envelopes = _envelopes(checks, pairs, ref, calib, owners)
    ctx = _Ctx(results, owners, inputs, leak, draws, level, envelopes, why_missing, m)
    verdicts = [
        _one(ctx, name, attack, check, checks[check])
        for name in judged_names(results)
        for attack, check in pairs
    ]
    verdicts += _reference_null(ref, checks, owners, inputs, draws, level)
    verdicts += _identity(digests)
    margin = checks["record_leak"].rule[1] if "record_leak" in checks else 0.0
    controls = attack_controls(results, s.static_attacks, leak, margin)
    verdicts = [_downgrade(v, controls) for v in verdicts]
    summary = {
        n: subject_verdict(v for v in verdicts if v.subject == n)
        for n in [REFERENCE, *judged_names(results)]
    }
    summary[REFERENCE]["role"] = "reference (judged against people no model saw)"
    power = _power(summary, planted_record, leak.get("none"), margin)
    _apply_power(summary, power)
    _explain_exact(summary, digests)
    return {
        "verdicts": verdicts,
        "summary": summary,
        "controls": controls,
        "power": power,
        "calibration": {
            "alpha": s.alpha,
            "correction": "bonferroni",
            "judged_checks": m,
            "interval_level": level,
            "bootstrap": s.bootstrap,
            "references": 1 + len(calib),
            "envelopes": {f"{a}/{c}": e for (a, c), e in sorted(envelopes.items())},
            "leak_test": {
                a: None
                if t is None
                else {
                    "scale": t.scale,
                    "critical_z": t.critical,
                    "records": t.records,
                    "envelope_nats": t.envelope,
                    "noise_nats": t.noise,
                }
                for a, t in leak.items()
            },
        },
    }


def _envelopes(checks, pairs, ref, calib, owners) -> dict:
    out = {}
    for attack, check in pairs:
        rule = checks[check].rule[0]
        if rule not in NEUTRAL or check not in cal.STATISTICS:
            continue
        devs = [
            cal.point(check, c[attack], ref[attack], owners)
            for c in calib
            if attack in c and attack in ref
        ]
        out[(attack, check)] = cal.envelope(
            [None if d is None else d - NEUTRAL[rule] for d in devs]
        )
    return out


@dataclass(frozen=True)
class _Ctx:
    """What every verdict of one run is judged with."""

    results: Mapping
    owners: cal.Owners
    inputs: Mapping[str, bool]
    leak: Mapping
    draws: Sequence
    level: float
    envelopes: Mapping
    why_missing: Mapping[str, str]
    checks: int  # judged per subject: the Bonferroni divisor


def _one(ctx: _Ctx, name: str, attack: str, check: str, rule_of) -> Verdict:
    rule, threshold = rule_of.rule
    need = NEEDS.get(check)
    absent = need if need and not ctx.inputs.get(need, False) else None
    mine, ref = ctx.results[name].get(attack), ctx.results[REFERENCE].get(attack)
    base = dict(
        subject=name,
        attack=attack,
        absent=absent,
        corrections=ctx.checks,
        why_missing=ctx.why_missing.get(attack, "not measured"),
    )
    if mine is None or ref is None:
        return judge(check, rule, threshold, value=None, reference=None, **base)
    if check == "record_leak":
        leak = ctx.leak.get(attack)
        if not leak:
            base["why_missing"] = "no calibration reference to scale the test"
        rise, record = cal.leak_rise(mine, ref) if leak else (None, None)
        v = judge(check, rule, threshold, value=rise, reference=leak.noise if leak else None,
                  **base)  # fmt: skip
        return replace(v, reason=v.reason or (f"largest on {record}" if record else ""))
    iv = None if absent else cal.interval(check, mine, ref, ctx.owners, ctx.draws, ctx.level)
    # the judged statistic from the same function as its interval (for relearning, the
    # largest gap over the reference at any budget, not the gap of the two maxima)
    stat = None if absent else cal.point(check, mine, ref, ctx.owners)
    v = judge(check, rule, threshold, value=mine["metrics"].get(check),
              reference=ref["metrics"].get(check), interval=iv, statistic=stat,
              envelope=ctx.envelopes.get((attack, check), 0.0), **base)  # fmt: skip
    if iv is None and v.outcome in (PASS, FAIL) and _wants_interval(check):
        return replace(v, outcome=INCONCLUSIVE,
                       reason="no interval: too few people could be resampled")  # fmt: skip
    return v


def _wants_interval(check: str) -> bool:
    return check in cal.STATISTICS and check not in PVALUES


def _reference_null(ref, checks, owners, inputs, draws, level) -> list[Verdict]:
    """The reference against people no model saw: knowledge, exposure, membership AUC."""
    none = ref.get("none", {})
    ex = none.get("examples", {})
    out = []
    for check, key, field, need in (
        ("knowmem_em", "knowmem", "known", "probes"),
        ("exposure_bits", "exposure", "bits", "canaries"),
    ):
        if check not in checks:
            continue
        rule, threshold = checks[check].rule

        def stat(w, key=key, field=field):
            a = cal.weighted_mean(ex.get(key, []), field, owners.forget, w.forget)
            b = cal.weighted_mean(ex.get(f"holdout_{key}", []), field, owners.holdout, w.holdout)
            return None if a is None or b is None else a - b

        point, iv = _stat_interval(stat, owners, draws, level)
        absent = None if inputs.get(need, False) else need
        out.append(_null_verdict(check, rule, threshold, point, iv, absent))
    if "privleak" in checks:
        rule, threshold = checks["privleak"].rule

        def leak(w):
            a = cal.mia_auc(none, owners, w)
            return None if a is None else auc.privleak(a, 0.5)

        point, iv = _stat_interval(leak, owners, draws, level)
        absent = None if inputs.get("holdout", False) else "holdout"
        out.append(_null_verdict("privleak", rule, threshold, point, iv, absent))
    return out


def _stat_interval(fn, owners, draws, level):
    point = fn(cal.identity(owners))
    return point, None if point is None else cal.bootstrap_interval(map(fn, draws), level, point)


def _null_verdict(check, rule, threshold, point, iv, absent) -> Verdict:
    """The reference against the holdout null: a band, not an equivalence test.

    The statistic is already relative to people no model saw (compare it with 0
    for max_above; PrivLeak against an AUC of 0.5 for max_abs). The reference
    fails only when it is significantly outside the band (its interval wholly
    beyond the tolerance); an estimate beyond it whose interval reaches inside
    is within the null band for these people, and passes, saying so.
    """
    above = rule == "max_above"
    v = judge(check, rule, threshold, subject=REFERENCE, attack="null", value=point,
              reference=0.0 if above and point is not None else None, interval=iv,
              absent=absent)  # fmt: skip
    if v.outcome == INCONCLUSIVE and v.interval is not None:
        return replace(v, outcome=PASS, reason="within the null band (not significantly above)")
    return v


def _identity(digests: Mapping[str, str]) -> list[Verdict]:
    """``exact`` equals the retrain reference bit for bit (sha256 of the weights)."""
    if "exact" not in digests:
        return []
    same = digests["exact"] == digests[REFERENCE]
    return [
        Verdict(
            "exact",
            "weights",
            "sha256_equal",
            float(same),
            1.0,
            "equal",
            0.0,
            PASS if same else FAIL,
            "" if same else "exact's forget-shard weights differ from the reference's",
        )
    ]


def attack_controls(
    results: Mapping, static_attacks: Sequence[str], leak: Mapping, margin: float
) -> dict:
    """Per attack, a subject on which it should recover something, and whether it did."""
    out = {}
    original, ref = results.get("original", {}), results[REFERENCE]
    approx = [n for n in results if n.startswith("approx:")]
    for a in static_attacks:
        if a in ("none", "shard"):
            rise = cal.leak_rise(original[a], ref[a])[0] if a in original else None
            bound = leak[a].noise + margin if leak.get(a) else None
            out[a] = {"control": "original (trained on the forget set)", "statistic":
                      "record_leak: largest rise over noise + margin", "value": rise,
                      "fired": None not in (rise, bound) and rise > bound}  # fmt: skip
            continue
        gains = {n: _gain(results[n], a) for n in approx}
        best = max(gains, key=lambda n: gains[n] or 0.0, default=None)
        out[a] = {
            "control": "approximate unlearning, unquantized vs quantized",
            "fired": bool(best and (gains[best] or 0) > 0),
            "statistic": "knowmem_em gain",
            "value": gains.get(best) if best else None,
            "subject": best,
        }
    gains = {n: _relearn_gain(results[n]) for n in [*approx, PLANTED] if n in results}
    best = max(gains, key=lambda n: gains[n] or 0.0, default=None)
    out["relearn"] = {
        "control": "approximate unlearning, relearned",
        "subject": best,
        "fired": bool(best and (gains[best] or 0) > 0),
        "statistic": "worst-point em gain over k=0",
        "value": gains.get(best) if best else None,
    }
    for attack, metric in (("extraction", "extraction"), ("incontext", "incontext_em")):
        o = original.get(attack, {}).get("metrics", {}).get(metric)
        r = ref.get(attack, {}).get("metrics", {}).get(metric)
        out[attack] = {
            "control": "original (has the facts)",
            "statistic": f"{metric} over the reference",
            "value": None if o is None or r is None else o - r,
            "fired": o is not None and r is not None and o > r,
        }
    return out


def _gain(res: Mapping, attack: str) -> float | None:
    a = res.get(attack, {}).get("metrics", {}).get("knowmem_em")
    b = res.get("none", {}).get("metrics", {}).get("knowmem_em")
    return None if a is None or b is None else a - b


def _relearn_gain(res: Mapping) -> float | None:
    ems = [p["em"] for p in res.get("relearn", {}).get("curve", []) if p.get("em") is not None]
    return max(ems) - ems[0] if len(ems) > 1 else None


def _downgrade(v: Verdict, controls: Mapping) -> Verdict:
    """A pass under an attack whose positive control did not fire is not evidence."""
    c = controls.get(v.attack)
    if v.outcome == PASS and c is not None and not c["fired"]:
        return replace(
            v, outcome=INEFFECTIVE, reason=f"the {v.attack} attack's positive control did not fire"
        )
    return v


def _power(summary: Mapping, planted_record: str | None, leak, margin: float) -> dict:
    """The run's power controls: ``planted`` caught by a forget-set check, ``heldout`` passed."""
    out = {}
    if PLANTED in summary:
        caught = [c for c in summary[PLANTED]["failed"] if c.split("/")[-1] not in UTILITY]
        out[PLANTED] = {"must": FAIL, "verdict": summary[PLANTED]["verdict"],
                        "record": planted_record, "caught_by": caught,
                        "ok": bool(caught)}  # fmt: skip
    else:
        out[PLANTED] = {"must": FAIL, "verdict": None, "ok": False, "reason": "not built"}
    if HELDOUT in summary:
        verdict = summary[HELDOUT]["verdict"]
        out[HELDOUT] = {"must": PASS, "verdict": verdict, "ok": verdict == PASS}
    else:
        out[HELDOUT] = {"must": PASS, "verdict": None, "ok": False, "reason": "not built"}
    if leak is not None:
        out["min_detectable_leak"] = {
            "logprob_rise": leak.noise + margin, "noise": leak.noise, "margin": margin,
            "critical_z": leak.critical,
            "what": "the smallest rise of one forget record's mean token log-prob over the "
            "reference (ensemble) that the record-leak check flags, at the pre-registered α",
        }  # fmt: skip
    return out


def _apply_power(summary: dict, power: Mapping) -> None:
    """No pass stands on a test that missed the planted leak, or on a reference that
    knows the forget set better than people no model saw (fail closed)."""
    if not power[PLANTED]["ok"]:
        why = "power control: a planted single-record leak was not detected"
    elif summary[REFERENCE]["verdict"] != PASS:
        why = f"the retrain reference is {summary[REFERENCE]['verdict']} against the holdout null"
    else:
        return
    for name, s in summary.items():
        if name not in (PLANTED, HELDOUT, REFERENCE) and s["verdict"] == PASS:
            s["verdict"] = INCONCLUSIVE
            s["reason"] = why


def _explain_exact(summary: dict, digests: Mapping[str, str]) -> None:
    if "exact" in summary and digests.get("exact") == digests.get(REFERENCE):
        summary["exact"]["basis"] = (
            "bit-identical to the retrain reference (sha256 of the weights equal): every attack "
            "number of exact is the reference's own"
        )
