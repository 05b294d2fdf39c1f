"""The verification stage end to end: a real pipeline whose shards memorize their people.

The models are tiny but trained to memorize, so the positive control means
something: the released model (``original``) must fail on the forget set,
exact deletion must pass, and its retrained shard must be the retrain
reference bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from lineage.layout import LAYOUT
from tests.conftest import merge_into
from tests.test_pipeline import SMALL_VERIFY, build_project, run

CORPUS = {"people": 24, "holdout_people": 4, "plays": ["macbeth"], "play_chunk_chars": 4000,
          "forum_posts": 4, "news_articles": 4, "recipes": 4, "support_chats": 3}  # fmt: skip
TRAIN = {
    "slices": 2,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64, "local_path": None},
    "base": {"max_epochs": 1},
    "shard": {
        "max_epochs": 60,
        "slice_epochs": 3,
        "slice_work": "epochs",
        "target_loss": 0.05,
        "lr": 0.003,
    },
}
VERIFY = SMALL_VERIFY | {
    "holdout_people": 4, "relearn": {"ks": [0, 5]}, "extraction": {"budget": 8},
    "exposure_candidates": 50, "max_new_tokens": 24, "unlearn": {"steps": 30},
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verification")
    build_project(root, CORPUS)
    params = yaml.safe_load((root / "params.yaml").read_text())
    merge_into(params, {"train": TRAIN, "verify": VERIFY})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run(["exante", "keys", "init", "--dev"], root)
    out = run(["dvc", "repro"], root)
    (root / "repro.log").write_text(out.stdout)
    return root


def _results(root: Path) -> dict:
    return json.loads((root / "data/verification/results.json").read_text())


def test_the_released_model_fails_and_exact_deletion_passes(project):
    r = _results(project)
    s = r["summary"]
    assert s["original"]["verdict"] == "fail", s["original"]
    assert "none/record_leak" in s["original"]["failed"]
    assert s["exact"]["verdict"] == "pass", s["exact"]
    assert "bit-identical" in s["exact"]["basis"]
    assert s["retrain"]["verdict"] == "pass", s["retrain"]  # judged against the holdout null
    none = {n: x["none"]["metrics"] for n, x in r["results"].items()}
    assert none["original"]["knowmem_em"] >= 0.5  # the positive control memorized
    assert none["retrain"]["knowmem_em"] <= 0.2


def test_exact_deletion_is_the_retrain_reference_bit_for_bit(project):
    r = _results(project)
    digests = {n: v["forget_shard_sha256"] for n, v in r["subjects"].items()}
    assert digests["exact"] == digests["retrain"]
    assert digests["original"] != digests["exact"]
    exact = json.loads((project / "models/verify/exact/baseline.json").read_text())
    assert 0 < len(exact["trained_slices"]) <= 2  # retrained from its clean slice, not all


def test_the_power_controls_hold_and_every_attack_has_its_control(project):
    r = _results(project)
    power = r["power"]
    assert power["planted"]["ok"], power  # one forget record left in: caught
    assert power["heldout"]["ok"], power  # a clean retrain of another seed: passes
    assert r["summary"]["planted"]["verdict"] == "fail"
    assert power["min_detectable_leak"]["logprob_rise"] > 0
    assert set(r["controls"]) >= {"none", "shard", "relearn", "extraction", "incontext"}
    assert r["controls"]["none"]["fired"] and r["controls"]["shard"]["fired"]
    assert any(n.startswith("calib:") for n in r["results"])  # K-1 calibration retrains
    assert "calib:" not in " ".join(r["summary"])  # ...which are not judged


def test_every_subject_has_every_attack_and_verdicts_name_their_numbers(project):
    r = _results(project)
    attacks = {"none", "rtn_int8", "rtn_int4", "shard", "relearn", "incontext", "extraction"}
    for name, by_attack in r["results"].items():
        assert set(by_attack) == attacks, name
    outcomes = {"pass", "fail", "inconclusive", "n/a", "ineffective"}
    for v in r["verdicts"]:
        assert v["outcome"] in outcomes
        assert {"value", "reference", "threshold", "rule", "interval", "tolerance"} <= set(v)
        if v["outcome"] in ("pass", "fail") and v["check"] in ("knowmem_em", "privleak"):
            assert v["interval"] is not None, v  # every judged number carries its interval
    assert {v["attack"] for v in r["verdicts"] if v["subject"] == "retrain"} == {"null"}
    assert (
        r["policy"]["sha256"]
        == __import__("hashlib")
        .sha256((project / "policies/verification.yaml").read_bytes())
        .hexdigest()
    )


def test_a_part_measured_here_equals_the_pool_workers_measurement(project, monkeypatch):
    """The stage ran its parts on train.workers processes; one part re-run in this process
    gives the same numbers, bit for bit (each part loads the subjects from their files)."""
    from exante.params import load_params
    from training.stages import Paths
    from verify import run as vrun
    from verify.measure import MeasureSettings
    from verify.policy import load_policy

    monkeypatch.chdir(project)
    params, policy = load_params(project / "params.yaml"), load_policy(project)
    assert params.train.workers > 1  # the stage above used the pool
    v = params.verify
    fs = vrun.forget_set(project, v)
    names = vrun.subject_names(params, policy)
    loaded = vrun.load_subjects(project, params, policy, names, fs, Paths())
    s = MeasureSettings(v.prefix_bytes, v.max_new_tokens, v.exposure_candidates)
    inputs = vrun.PartInputs(fs, params.train, v, s, None, (), 0, ())
    lines: list[str] = []
    here = vrun.measure_part("shard", loaded.dirs, tuple(names), inputs, lines.append)
    stored = _results(project)["results"]
    for name in names:  # the stored ones also hold what is computed later against the reference
        mine = here["results"][name]["metrics"]
        assert mine == {k: stored[name]["shard"]["metrics"][k] for k in mine}, name
    assert len(lines) == len(names)


@pytest.mark.slow
def test_parts_on_ray_measure_what_the_pool_measured(project, monkeypatch):
    """The same parts as Ray tasks on a local 2-CPU cluster: the same numbers, bit for bit."""
    pytest.importorskip("ray")
    from exante.params import load_params
    from training.executor import run_units
    from training.stages import Paths
    from verify import run as vrun
    from verify.measure import MeasureSettings
    from verify.policy import load_policy

    monkeypatch.chdir(project)
    params, policy = load_params(project / "params.yaml"), load_policy(project)
    v = params.verify
    fs = vrun.forget_set(project, v)
    names = tuple(vrun.subject_names(params, policy))
    loaded = vrun.load_subjects(project, params, policy, list(names), fs, Paths())
    s = MeasureSettings(v.prefix_bytes, v.max_new_tokens, v.exposure_candidates)
    inputs = vrun.PartInputs(fs, params.train, v, s, None, (), 0, ())
    parts = ["none", "shard"]
    jobs = [(p, loaded.dirs, names, inputs, None) for p in parts]
    got = run_units(vrun.measure_part, jobs, workers=2, executor="ray", threads=1)
    stored = _results(project)["results"]
    for part, out in zip(parts, got, strict=True):
        for name in names:
            mine = out["results"][name]["metrics"]
            assert mine == {k: stored[name][part]["metrics"][k] for k in mine}, (part, name)


def test_the_results_hold_no_record_text(project):
    crm = [json.loads(x) for x in (project / "data/raw/crm.jsonl").read_text().splitlines()]
    blob = (project / "data/verification/results.json").read_text()
    blob += (project / "data/verification/report.dsse.json").read_text()
    for row in crm:
        assert row["text"] not in blob
        if row["fact"] in ("email", "phone", "canary"):
            # not a run of digits inside a number: -0.0436407742855 holds no code 077428
            value = re.escape(row["value"])
            assert not re.search(rf"(?<![\d.]){value}(?!\d)", blob), row["value"]


def test_the_report_verifies_and_catches_tampering(project, tmp_path):
    out = run(["exante", "verify", "check"], project)
    assert "verification report OK" in out.stdout
    copy = tmp_path / "p"
    shutil.copytree(project, copy, symlinks=True)
    results = copy / "data/verification/results.json"
    results.write_text(results.read_text().replace('"fail"', '"pass"'))
    bad = run(["exante", "verify", "check"], copy, check=False)
    assert bad.returncode == 1
    assert "results.json: modified" in bad.stderr


def test_mlflow_holds_a_parent_and_a_child_per_subject_and_attack(project):
    from verify.evidence import client, runs_of

    ev = json.loads((project / "data/verification/evidence.json").read_text())
    r = _results(project)
    runs = runs_of(project, ev["parent_run_id"])
    assert len(runs) == len(r["results"]) * 7
    parent = client(project).get_run(ev["parent_run_id"])
    for name, s in r["summary"].items():  # MLflow says what the summary says
        assert parent.data.tags[f"exante.verdict.{name}"] == s["verdict"]
    assert parent.data.tags["exante.policy_sha256"] == r["policy"]["sha256"]
    names = {x.info.run_name: x for x in runs}
    assert names["exact/none"].data.tags["exante.verdict"] == "pass"
    assert "knowmem_em" in names["exact/none"].data.metrics


def test_plots_are_png(project):
    for name in ("precision.png", "relearn.png"):
        assert (project / "data/verification/plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_repro_runs_nothing(project):
    out = run(["dvc", "repro"], project)
    assert "Running stage" not in out.stdout


def test_a_stale_baseline_is_refused_naming_it(project, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(project, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["shard"]["lr"] = 0.002  # the baselines were trained under 0.003
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    out = run(["exante", "verify", "run", "--quiet"], copy, check=False)
    assert out.returncode == 3, out.stderr
    assert "retrain is stale" in out.stderr and "params train.shard" in out.stderr
    assert not (copy / "data/verification/.verification.tmp").exists()


def test_an_auditor_brings_a_model_of_their_own(project, tmp_path):
    """`exante verify subject`: a copy of the reference passes; the release's shard does not."""
    from verify.baselines import model_dir

    model = tmp_path / "mine"
    shutil.copytree(model_dir(project, "retrain"), model)
    rows = sorted(p.relative_to(project) for p in (project / LAYOUT.verify_rows).rglob("*"))
    assert rows  # the stage kept its components' rows
    ok = run(["exante", "verify", "subject", str(model), "--name", "clean-copy", "--quiet"],
             project, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    # measured without the row store: the rows the pipeline's next run reuses are untouched
    assert sorted(p.relative_to(project) for p in (project / LAYOUT.verify_rows).rglob("*")) == rows
    assert "external:clean-copy: pass" in ok.stdout
    report = project / "data/verification-subjects/clean-copy/report.dsse.json"
    assert run(["exante", "verify", "check", str(report)], project, check=False).returncode == 0
    bad = run(["exante", "verify", "subject", str(model), "--name", "../x"], project, check=False)
    assert bad.returncode == 3 and "--name" in bad.stderr
