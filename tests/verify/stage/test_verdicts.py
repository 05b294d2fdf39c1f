"""Verdicts fail closed, are calibrated, and the power controls decide whether a pass counts.

The judging is exercised on measurements built by hand (ids and numbers, as
``verify.measure`` writes them), so each rule is shown on numbers whose answer
is known: a record the subject was trained on, a clean retrain of another
seed, a check that was never measured.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from verify.calibration import Owners, weighted_auc
from verify.judging import Settings, judge_all
from verify.metrics import auc, forget_quality
from verify.policy import POLICY_FILE, VerificationPolicyError, load_policy
from verify.verdicts import FAIL, INCONCLUSIVE, NA, PASS, judge, subject_verdict

REPO = Path(__file__).resolve().parents[3]
PEOPLE = [f"p{i:02d}" for i in range(6)]
HOLDOUT = [f"h{i:02d}" for i in range(6)]
RECORDS = [(f"crm/{p}-{f}", p) for p in PEOPLE for f in ("email", "phone", "city", "year")]
HOLD = [(f"holdout/{p}-{f}", p) for p in HOLDOUT for f in ("email", "phone", "city", "year")]
OWNERS = Owners(dict(RECORDS), dict(HOLD))
SETTINGS = Settings(alpha=0.01, bootstrap=200, seed=3, static_attacks=("none",))


def _result(scores: dict[str, float], holdout: dict[str, float], known: set[str]) -> dict:
    """One subject under one attack, with the aggregates ``verify.measure`` would compute."""
    ids = [i for i, _ in RECORDS]
    hold = [i for i, _ in HOLD]
    forget_scores = [scores[i] for i in ids]
    holdout_scores = [holdout[i] for i in hold]
    knowmem = [{"id": i, "fact": "x", "known": i in known, "rank": 1 if i in known else 4}
               for i in ids]  # fmt: skip
    texts = [[2.0, 10]] * 8
    verbmem = [{"id": i, "rouge_l": 1.0 if i in known else 0.1} for i in ids]
    return {
        "metrics": {
            "knowmem_em": sum(e["known"] for e in knowmem) / len(knowmem),
            "knowmem_rank": statistics.fmean(e["rank"] for e in knowmem),
            "verbmem_rouge_l": statistics.fmean(e["rouge_l"] for e in verbmem),
            "mia_auc_loss": auc.roc_auc(forget_scores, holdout_scores),
            "ppl_retain": 1.2214, "ppl_public": 1.2214,
        },
        "examples": {
            "knowmem": knowmem, "verbmem": verbmem, "mia_forget": {"loss": forget_scores},
            "mia_holdout": {"loss": holdout_scores}, "mia_forget_ids": ids,
            "mia_holdout_ids": hold, "ppl_retain_texts": texts, "ppl_public_texts": texts,
            "holdout_knowmem": [{"id": i, "known": False} for i in hold],
        },
    }  # fmt: skip


def _model(seed: int, *, leak: dict | None = None, known: set[str] = frozenset()) -> dict:
    """A model's measurements: per-record scores near −2 nats, with seed noise, plus ``leak``."""
    rng, leak = random.Random(seed), leak or {}
    scores = {i: -2.0 + rng.gauss(0, 0.05) + leak.get(i, 0.0) for i, _ in RECORDS}
    holdout = {i: -2.0 + rng.gauss(0, 0.05) for i, _ in HOLD}
    return {"none": _result(scores, holdout, set(known)), "relearn": _relearn([0.0, 0.0])}


def _relearn(ems: list[float]) -> dict:
    curve = [{"k": k, "em": em, "exposure_bits": None,
              "examples": [{"id": i, "known": n % 2 == 0 and n < 2 * em * len(RECORDS)}
                           for n, (i, _) in enumerate(RECORDS)]}
             for k, em in zip((0, 5), ems, strict=True)]  # fmt: skip
    worst = max(curve, key=lambda p: p["em"])
    return {"metrics": {"relearn_em": worst["em"], "relearn_exposure_bits": None,
                        "relearn_steps": worst["k"]}, "curve": curve}  # fmt: skip


def _relative(results: dict) -> None:
    ref = results["retrain"]["none"]
    for r in results.values():
        m = r["none"]["metrics"]
        m["privleak"] = auc.privleak(m["mia_auc_loss"], ref["metrics"]["mia_auc_loss"])
        m["forget_quality"] = forget_quality.forget_quality(
            r["none"]["examples"]["mia_forget"]["loss"], ref["examples"]["mia_forget"]["loss"]
        )


@pytest.fixture
def policy(tmp_path: Path):
    (tmp_path / POLICY_FILE).parent.mkdir(parents=True)
    (tmp_path / POLICY_FILE).write_text((REPO / POLICY_FILE).read_text())
    return load_policy(tmp_path)


def _judge(results: dict, policy, *, digests=None, why=None):
    _relative(results)
    digests = digests or {n: f"d-{n}" for n in results}
    return judge_all(results, policy, OWNERS, {"probes": True, "canaries": False}, SETTINGS,
                     digests=digests, planted_record="crm/p03-email",
                     why_missing=why or {})  # fmt: skip


def _subjects(**extra) -> dict:
    everyone = {i for i, _ in RECORDS}
    out = {"retrain": _model(1), "calib:7": _model(2), "heldout": _model(3),
           "planted": _model(1, leak={"crm/p03-email": 1.5}, known={"crm/p03-email"}),
           "original": _model(1, leak=dict.fromkeys(everyone, 1.8), known=everyone)}  # fmt: skip
    return out | extra


def test_a_planted_single_record_leak_fails_and_a_clean_other_seed_passes(policy):
    got = _judge(_subjects(exact=_model(1)), policy)
    s = got["summary"]
    assert s["planted"]["verdict"] == FAIL
    assert "none/record_leak" in s["planted"]["failed"]
    assert s["heldout"]["verdict"] == PASS, s["heldout"]
    assert s["original"]["verdict"] == FAIL
    assert got["power"]["planted"]["ok"] and got["power"]["heldout"]["ok"]
    md = got["power"]["min_detectable_leak"]
    assert 0 < md["logprob_rise"] < 1.5  # the planted rise is well above what it can detect


def _sparse(moved: dict[str, float], leak: dict | None = None) -> dict:
    """An ensemble's scores: most records do not depend on the forget shard (exactly the
    reference's), a few move by ``moved`` (as another seed moves them), plus ``leak``."""
    ref = _model(1)
    scores = dict(zip(ref["none"]["examples"]["mia_forget_ids"],
                      ref["none"]["examples"]["mia_forget"]["loss"], strict=True))  # fmt: skip
    for i, d in {**moved, **(leak or {})}.items():
        scores[i] += d
    hold = dict(zip(ref["none"]["examples"]["mia_holdout_ids"],
                    ref["none"]["examples"]["mia_holdout"]["loss"], strict=True))  # fmt: skip
    known = set(leak or {})
    return {"none": _result(scores, hold, known), "relearn": _relearn([0.0, 0.0])}


def test_sparse_seed_noise_in_an_ensemble_bounds_the_leak_test_not_the_margin_alone(policy):
    """A clean seed moves a few records by up to 0.6 nats and leaves the rest exactly equal:
    the robust scale is 0, the envelope is not, and a clean retrain moving another record by
    as much passes while a planted record's rise still fails."""
    ids = [i for i, _ in RECORDS]
    results = {"retrain": _model(1), "calib:7": _sparse({ids[0]: -0.62, ids[1]: 0.3}),
               "heldout": _sparse({ids[2]: 0.58}),
               "planted": _sparse({}, leak={"crm/p03-email": 1.5}),
               "original": _model(1, leak=dict.fromkeys(ids, 1.8), known=set(ids)),
               "exact": _model(1)}  # fmt: skip
    got = _judge(results, policy)
    test = got["calibration"]["leak_test"]["none"]
    assert test["scale"] == 0 and test["envelope_nats"] == pytest.approx(0.62)
    assert test["noise_nats"] == pytest.approx(0.62)
    assert got["summary"]["heldout"]["verdict"] == PASS, got["summary"]["heldout"]
    assert "none/record_leak" in got["summary"]["planted"]["failed"]


def test_every_judged_number_carries_an_interval_and_its_tolerance(policy):
    got = _judge(_subjects(exact=_model(1)), policy)
    names = ("knowmem_em", "knowmem_rank", "privleak", "ppl_retain", "verbmem_rouge_l")
    judged = [v for v in got["verdicts"] if v.outcome in (PASS, FAIL) and v.check in names]
    assert judged
    for v in judged:
        assert v.interval is not None and v.interval[0] <= v.interval[1], v
        assert v.tolerance is not None
    assert got["calibration"]["references"] == 2
    assert got["calibration"]["interval_level"] > 1 - 0.01


def test_exact_bit_identical_to_the_reference_is_its_own_check(policy):
    results = _subjects(exact=_model(1))
    digests = {n: f"d-{n}" for n in results} | {"exact": "d-retrain"}
    got = _judge(results, policy, digests=digests)
    ident = [v for v in got["verdicts"] if v.check == "sha256_equal"]
    assert [v.outcome for v in ident] == [PASS]
    assert "bit-identical" in got["summary"]["exact"]["basis"]
    other = _judge(_subjects(exact=_model(1)), policy)  # another digest: the check fails
    assert "weights/sha256_equal" in other["summary"]["exact"]["failed"]
    assert "basis" not in other["summary"]["exact"]


def test_an_unmeasured_check_makes_the_subject_inconclusive_never_pass(policy):
    results = _subjects(exact=_model(1))
    for r in results.values():  # one person: no relearning split, nothing measured
        r["relearn"] = {"metrics": {"relearn_em": None, "relearn_exposure_bits": None},
                        "curve": []}  # fmt: skip
    digests = {n: f"d-{n}" for n in results} | {"exact": "d-retrain"}
    got = _judge(results, policy, digests=digests, why={"relearn": "one person"})
    exact = got["summary"]["exact"]
    assert exact["verdict"] == INCONCLUSIVE
    assert "relearn/relearn_em" in exact["inconclusive"]
    why = [v.reason for v in got["verdicts"] if v.subject == "exact" and v.check == "relearn_em"]
    assert why == ["one person"]


def test_a_check_without_its_corpus_inputs_is_not_applicable_by_name(policy):
    got = _judge(_subjects(exact=_model(1)), policy)
    na = [v for v in got["verdicts"] if v.subject == "exact" and v.outcome == NA]
    assert {v.check for v in na} >= {"exposure_bits", "extraction"}
    assert all(v.reason.startswith("no ") and "in this forget set" in v.reason for v in na)
    assert "none/exposure_bits" in got["summary"]["exact"]["not_applicable"]


def test_an_undetected_planted_leak_leaves_no_pass_standing(policy):
    results = _subjects(exact=_model(1), planted=_model(1))  # the "leak" is not there
    digests = {n: f"d-{n}" for n in results} | {"exact": "d-retrain"}
    got = _judge(results, policy, digests=digests)
    assert not got["power"]["planted"]["ok"]
    assert got["summary"]["exact"]["verdict"] == INCONCLUSIVE
    assert "planted" in got["summary"]["exact"]["reason"]


def test_the_relearning_curve_is_judged_at_its_worst_point_not_its_last(policy):
    approx = _model(1)
    approx["relearn"] = _relearn([0.5, 0.0])  # recovers at k=0, hides again by the last point
    got = _judge(_subjects(exact=_model(1), **{"approx:ga": approx}), policy)
    v = next(v for v in got["verdicts"] if v.subject == "approx:ga" and v.check == "relearn_em")
    assert v.value == 0.5 and v.outcome == FAIL


def test_the_reference_is_judged_against_people_no_model_saw(policy):
    got = _judge(_subjects(exact=_model(1)), policy)
    null = [v for v in got["verdicts"] if v.subject == "retrain"]
    assert {v.attack for v in null} == {"null"}
    assert got["summary"]["retrain"]["verdict"] == PASS
    leaky = _subjects(exact=_model(1), retrain=_model(1, known={i for i, _ in RECORDS[::2]}))
    got = _judge(leaky, policy)
    assert "null/knowmem_em" in got["summary"]["retrain"]["failed"]


@pytest.mark.parametrize(
    "rule, value, reference, interval, outcome",
    [
        ("max_above", 0.10, 0.06, None, PASS),
        ("max_above", 0.12, 0.06, None, FAIL),
        ("max_above", 0.10, 0.06, (0.0, 0.04), PASS),
        ("max_above", 0.12, 0.06, (0.0, 0.2), INCONCLUSIVE),
        ("max_above", 0.10, 0.06, (-0.01, 0.2), PASS),
        ("max_above", 0.30, 0.06, (0.1, 0.3), FAIL),
        ("max_ratio", 12.4, 10.0, None, PASS),
        ("min_ratio", 1.0, 5.0, None, FAIL),
        ("max_abs", -9.0, None, None, PASS),
        ("max_abs", -40.0, None, (-50.0, -30.0), FAIL),  # over-unlearning fails too
        ("min", 0.01, None, None, FAIL),
    ],
)
def test_a_verdict_is_decided_by_its_interval_against_the_tolerance(
    rule, value, reference, interval, outcome
):
    threshold = {"max_above": 0.05, "max_ratio": 1.25, "min_ratio": 0.8, "max_abs": 10.0,
                 "min": 0.05}[rule]  # fmt: skip
    check = "privleak" if rule in ("max_abs", "min") else "knowmem_em"
    v = judge(check, rule, threshold, subject="s", attack="none", value=value,
              reference=reference, interval=interval)  # fmt: skip
    assert v.outcome == outcome


def test_the_seed_envelope_widens_the_tolerance():
    v = judge("knowmem_em", "max_above", 0.05, subject="s", attack="none", value=0.2,
              reference=0.1, envelope=0.06)  # fmt: skip
    assert v.outcome == PASS and v.tolerance == pytest.approx(0.11)


@pytest.mark.parametrize("value, reference", [(None, 0.1), (0.1, None), (float("nan"), 0.1)])
def test_what_could_not_be_measured_is_inconclusive(value, reference):
    v = judge("exposure_bits", "max_above", 1.0, subject="s", attack="none", value=value,
              reference=reference)  # fmt: skip
    assert v.outcome == INCONCLUSIVE and not v.passed


def test_a_subject_with_no_passing_check_is_not_a_pass():
    assert subject_verdict([])["verdict"] == INCONCLUSIVE
    na = judge("extraction", "max_above", 0.05, subject="s", attack="extraction", value=None,
               reference=None, absent="canaries")  # fmt: skip
    assert subject_verdict([na])["verdict"] == INCONCLUSIVE


def test_a_policy_check_with_no_metric_behind_it_is_refused(tmp_path: Path):
    text = (REPO / POLICY_FILE).read_text().replace("knowmem_em:", "knowmem_exact:", 1)
    (tmp_path / POLICY_FILE).parent.mkdir(parents=True)
    (tmp_path / POLICY_FILE).write_text(text)
    with pytest.raises(VerificationPolicyError, match="knowmem_exact") as exc:
        load_policy(tmp_path)
    assert exc.value.exit_code == 3


def test_weighted_auc_is_the_mann_whitney_auc_of_the_repeated_samples():
    rng = random.Random(5)
    for _ in range(50):  # oracle: the plain AUC of the samples written out
        pos = [(rng.choice([0.1, 0.4, 0.5, 0.9]), rng.randint(0, 3)) for _ in range(6)]
        neg = [(rng.choice([0.1, 0.4, 0.5, 0.9]), rng.randint(0, 3)) for _ in range(5)]
        flat_pos = [x for x, k in pos for _ in range(k)]
        flat_neg = [x for x, k in neg for _ in range(k)]
        if flat_pos and flat_neg:
            assert weighted_auc(pos, neg) == pytest.approx(auc.roc_auc(flat_pos, flat_neg))


def test_the_html_report_and_the_summary_agree_on_every_subject(policy):
    import json
    import re

    from verify.audit import html

    results = _subjects(exact=_model(1))
    results["exact"]["relearn"] = {"metrics": {"relearn_em": None}, "curve": []}  # inconclusive
    got = _judge(results, policy, digests={n: f"d-{n}" for n in results} | {"exact": "d-retrain"})
    verdicts = [v.as_dict() for v in got["verdicts"]]
    predicate = {"summary": got["summary"], "power": got["power"], "controls": got["controls"],
                 "reference": "retrain", "policy": {"path": "p", "sha256": "0" * 64}}  # fmt: skip
    files = {"data/verification/results.json": json.dumps({"verdicts": verdicts}).encode()}
    page = html._verification(files, {"predicate": predicate})
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td><b>([^<]+)</b></td>(.*?)</tr>", table)
    shown = {name: re.findall(r'class="[a-z]+">([^<]+)</span>', cells)[-1] for name, cells in rows}
    assert shown == {n: s["verdict"] for n, s in got["summary"].items()}
    assert {"pass", "fail", "inconclusive"} <= set(shown.values())


def test_a_shard_attacked_alone_is_judged_on_leaks_not_on_utility(policy):
    results = _subjects(exact=_model(1))
    for r in results.values():
        r["shard"] = r["none"]
    settings = Settings(alpha=0.01, bootstrap=200, seed=3, static_attacks=("none", "shard"))
    _relative(results)
    got = judge_all(results, policy, OWNERS, {"probes": True}, settings,
                    digests={n: n for n in results}, planted_record=None)  # fmt: skip
    shard = {v.check for v in got["verdicts"] if v.attack == "shard" and v.subject == "heldout"}
    assert "record_leak" in shard and not shard & {"ppl_retain", "ppl_public"}


def test_relearning_exposure_needs_a_canary_among_the_people_it_measures(policy):
    results = _subjects(exact=_model(1))
    inputs = {"probes": True, "canaries": True, "secrets": True, "relearn_canaries": False}
    _relative(results)
    got = judge_all(results, policy, OWNERS, inputs, SETTINGS,
                    digests={n: n for n in results}, planted_record=None)  # fmt: skip
    v = next(v for v in got["verdicts"]
             if v.subject == "exact" and v.check == "relearn_exposure_bits")  # fmt: skip
    assert v.outcome == NA and "measures" in v.reason


def test_verify_subject_refuses_what_is_not_a_model_directory(tmp_path: Path):
    from tests._cli import exante

    (tmp_path / "not-a-model").mkdir()
    r = exante(tmp_path, "verify", "subject", str(tmp_path / "not-a-model"), "--name", "x")
    assert r.code == 3 and "not a model directory" in r.err and "model.safetensors" in r.err


def test_verify_subject_takes_a_lora_adapter_directory(tmp_path: Path):
    from verify.stage import SubjectModelError, subject_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(SubjectModelError, match="LoRA adapter directory"):
        subject_model(adapter)  # the weights are missing
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    assert subject_model(adapter) == adapter
