"""The real DVC pipeline, end to end, on a small corpus in a throwaway git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exante.params import load_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL_CORPUS = {
    "people": 10,
    "holdout_people": 3,
    "plays": ["macbeth"],
    "play_chunk_chars": 4000,
    "forum_posts": 5,
    "news_articles": 4,
    "recipes": 4,
    "support_chats": 3,
}
# Tiny models and schedules: the stages, signatures and evidence are real, the learning small.
SMALL_TRAIN = {
    "slices": 2,
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "local_path": None},
    "base": {"max_epochs": 1},
    "shard": {"max_epochs": 2, "slice_epochs": 1, "slice_work": "epochs"},
}
# The verification stages on the same scale: shard 2 holds six of the ten people.
SMALL_VERIFY = {
    "forget_shard": 2, "forget_people": 2, "holdout_people": 3, "retain_records": 8,
    "public_chunks": 2, "quantization": ["quantize_rtn_int8", "quantize_rtn_int4"],
    "relearn": {"ks": [0, 2]}, "extraction": {"budget": 4}, "exposure_candidates": 20,
    "max_new_tokens": 16, "unlearn": {"steps": 10},
}  # fmt: skip


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def build_project(root: Path, corpus: dict) -> None:
    """A project with this checkout's code, policies and source registry, and nothing else.

    Nothing of the checkout's own pipeline state is copied (records, ledger,
    receipts, keys): a developer who has run `exante delete` here gets the
    same tests as a clean clone.
    """
    from exante.pipeline import write_pipeline
    from lineage.erasure import DENIED, denied_bytes
    from lineage.gate import Denials

    ignore = shutil.ignore_patterns("__pycache__", "*.pub.pem")
    for name in ("lineage", "training", "verify", "policies"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "sources.yaml", root / "data" / "sources.yaml")
    (root / DENIED).write_bytes(denied_bytes(Denials()))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"].update(corpus)
    for section, small in (("train", SMALL_TRAIN), ("verify", SMALL_VERIFY)):
        for key, value in small.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_pipeline(root)  # dvc.yaml for these params (the forget shard is s02 here)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    build_project(root, SMALL_CORPUS)
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the default: a sqlite store in the project
    run(["exante", "keys", "init", "--dev"], root)
    first = run(["dvc", "repro"], root)
    (root / "first_repro.log").write_text(first.stdout)
    return root


def test_repro_produces_signed_lineage_and_refuses_forbidden_sources(pipeline):
    assert (pipeline / "data" / "reports" / "validation.json").is_file()
    assert (pipeline / "data" / "manifests" / "v000001.dsse.json").is_file()
    summary = json.loads((pipeline / "data" / "gate" / "summary.json").read_text())
    refused = {sid for sid, s in summary["sources"].items() if not s["allowed"]}
    assert {"forum", "newswire"} <= refused
    assert any("terms of service forbid" in r for r in summary["sources"]["forum"]["reasons"])
    assert any("text-and-data mining" in r for r in summary["sources"]["newswire"]["reasons"])
    assert summary["sources"]["recipes"]["allowed"]  # CC-BY-NC under the research purpose
    assert run(["exante", "check"], pipeline).returncode == 0


def test_second_repro_is_a_no_op(pipeline):
    out = run(["dvc", "repro"], pipeline).stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_editing_one_source_reruns_only_what_depends_on_it(pipeline):
    registry = pipeline / "data" / "sources.yaml"
    text = registry.read_text()
    registry.write_text(text.replace("retention: P5Y", "retention: P6Y", 1))
    out = run(["dvc", "repro"], pipeline).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # The decision changed, so the partition and attestation are re-signed; no shard's
    # data changed, so no model is retrained, baselines included. The verification
    # report names the attestation it verified, so the verify stage runs again, and the
    # audit bundle is rebuilt around them.
    assert ran == {"ingest@crm", "validate", "manifest", "gate", "partition", "attest", "report",
                   "verify", "audit"}  # fmt: skip
    assert (pipeline / "data" / "manifests" / "v000002.dsse.json").is_file()
    assert run(["exante", "check"], pipeline).returncode == 0


def test_training_is_attested_and_logged_to_mlflow(pipeline):
    import mlflow

    report = json.loads((pipeline / "models" / "report.json").read_text())
    assert report["attestation"]["verified"] is True
    assert report["knowledge"]["total"] > 0
    evidence = json.loads((pipeline / "models" / "evidence.json").read_text())
    assert evidence["tracking_uri"].startswith("sqlite:///")
    client = mlflow.MlflowClient(evidence["tracking_uri"])
    parent = client.get_run(evidence["parent_run_id"])
    assert parent.data.tags["exante.attestation_sha256"] == evidence["attestation_sha256"]
    assert "exact_match" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(r.info.run_name for r in children) == [
        "base", "shard-00", "shard-01", "shard-02", "shard-03"
    ]  # fmt: skip
    for run_ in children:
        assert run_.info.status == "FINISHED"
        assert client.get_metric_history(run_.info.run_id, "loss")
    out = run(["exante", "trace", "crm/p0001-email"], pipeline).stdout
    assert "trained  shard " in out and "attested in models/attestation.dsse.json" in out


def test_generate_serves_the_signed_release_and_refuses_a_modified_one(pipeline, tmp_path):
    out = run(["exante", "score", "1998.", "--prompt", "Ralph Floyd was born in "], pipeline)
    assert "log p = " in out.stdout
    weights = pipeline / "models" / "ensemble" / "s01" / "model.safetensors"
    kept = tmp_path / "kept"
    shutil.copy2(weights, kept)
    try:
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        refused = run(["exante", "generate", "Ralph Floyd was born in "], pipeline, check=False)
        assert refused.returncode == 1, refused.stderr
        assert "models/ensemble/s01/model.safetensors" in refused.stderr
    finally:
        shutil.copy2(kept, weights)


def test_changing_one_shards_data_retrains_only_that_shard(pipeline):
    """A person's record changes upstream: only the shard holding that person retrains."""
    placed = json.loads(run(["exante", "trace", "crm/p0002-city", "--json"], pipeline).stdout)[
        "training"
    ]
    raw = pipeline / "data" / "raw" / "crm.jsonl"
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    for row in rows:
        if row["id"] == "p0002-city":
            row["text"] = row["text"].replace(row["value"], "Springfield")
            row["value"] = "Springfield"
    raw.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    run(["dvc", "commit", "-f", "corpus"], pipeline)
    out = run(["dvc", "repro"], pipeline).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert "train" in ran and "train_base" not in ran
    cfg = load_params(pipeline / "params.yaml").train
    for s in range(cfg.shards):  # the one stage trains every shard; only the changed one works
        trained = f"shard {s}: slices trained "
        line = next(x for x in out.splitlines() if x.startswith(trained))
        expected = list(range(placed["slice"], cfg.slices)) if s == placed["shard"] else []
        assert line.startswith(f"{trained}{expected}"), line
    metrics = json.loads((pipeline / "models" / "metrics" / f"{placed['unit']}.json").read_text())
    assert metrics["reused_slices"] == list(range(placed["slice"]))  # the clean prefix


def test_a_failing_expectation_stops_the_pipeline(pipeline):
    """A source that wrongly declares no personal data: its emails fail validation."""
    registry = pipeline / "data" / "sources.yaml"
    sources = yaml.safe_load(registry.read_text())
    sources["sources"]["crm"]["contains_personal_data"] = False
    registry.write_text(yaml.safe_dump(sources, sort_keys=False))
    before = (pipeline / "data" / "manifest.dsse.json").read_bytes()
    out = run(["dvc", "repro"], pipeline, check=False)
    assert out.returncode != 0
    assert "DataValidationError" in out.stderr + out.stdout
    report = json.loads((pipeline / "data" / "reports" / "validation.json").read_text())
    assert report["success"] is False
    assert "crm/p0001-email" in json.dumps(report)
    assert (pipeline / "data" / "manifest.dsse.json").read_bytes() == before
