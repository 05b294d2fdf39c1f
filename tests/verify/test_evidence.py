"""MLflow evidence: real sqlite stores in tmp dirs, a real `mlflow server`, a dead one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from verify.evidence import (
    DEFAULT_DB,
    EvidenceError,
    MetricsFileError,
    VerifyError,
    log_training,
    runs_of,
    tracking_uri,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SECRET = "Orla Quennell's locker code is 4471"  # in the corpus, never in the metrics
PARAMS = {
    "train": {"shards": 2, "slices": 2, "dp": {"enabled": True, "target_epsilon": 8.0}},
    "seed": 7,
    "note": "x" * 7000,  # over MLflow's 6000-character param limit
}
DIGESTS = {"manifest": "sha256:" + "a" * 64, "decision": "sha256:" + "b" * 64}
BASE = {
    "kind": "base", "records": 6, "wall_seconds": 1.5, "tokens_per_second": 900.0, "dp": None,
    "epochs": [{"epoch": e, "loss": 3.0 - e, "steps": 2, "tokens": 500} for e in range(2)],
}  # fmt: skip
SHARD = {
    "kind": "shard", "shard": 0, "records": 4, "slices": ["addr0", "addr1"],
    "trained_slices": [1], "reused_slices": [0], "wall_seconds": 0.7, "tokens_per_second": 800.0,
    "dp": {"epsilon": 7.9, "delta": 1e-5, "accountant": "rdp"},
    "epochs": [{"slice": s, "epoch": e, "loss": 4.0 - s - e / 2, "steps": 1, "tokens": 200}
               for s in range(2) for e in range(2)],
}  # fmt: skip


def write_units(root: Path) -> dict[str, Path]:
    units = {}
    for name, data in {"base": BASE, "s00": SHARD}.items():
        path = root / "models" / name / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
        units[name] = path
    (root / "data").mkdir()
    (root / "data" / "records.jsonl").write_text(json.dumps({"text": SECRET}) + "\n")
    return units


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One project logged to its default sqlite store (migrating a store costs seconds)."""
    root = tmp_path_factory.mktemp("proj")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        parent = log_training(root, params=PARAMS, digests=DIGESTS, units=write_units(root))
        yield root, parent, MlflowClient(tracking_uri(root)), runs_of(root, parent)


@pytest.fixture(autouse=True)
def _default_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_default_store_is_sqlite_in_the_project_root(tmp_path):
    assert tracking_uri(tmp_path) == f"sqlite:///{(tmp_path / DEFAULT_DB).resolve()}"


def test_parent_run_holds_flattened_params_and_digest_tags(logged):
    root, parent, c, _ = logged
    run = c.get_run(parent)
    assert run.info.run_name == "train"
    assert run.info.status == "FINISHED"
    assert run.data.params["train.dp.target_epsilon"] == "8.0"
    assert run.data.params["train.dp.enabled"] == "true"
    assert run.data.params["seed"] == "7"
    assert len(run.data.params["note"]) == 6000
    assert run.data.tags["exante.manifest"] == DIGESTS["manifest"]
    assert run.data.tags["exante.decision"] == DIGESTS["decision"]
    experiment = c.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location == (root / "mlartifacts").resolve().as_uri()


def test_one_nested_run_per_unit(logged):
    _, parent, _, children = logged
    assert [r.info.run_name for r in children] == ["base", "s00"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    assert {r.info.status for r in children} == {"FINISHED"}
    assert children[1].data.tags["exante.shard"] == "0"
    for run in children:  # each unit's run carries the lineage digests too
        assert run.data.tags["exante.manifest"] == DIGESTS["manifest"]
        assert run.data.tags["exante.decision"] == DIGESTS["decision"]


def test_loss_has_one_value_per_epoch_in_order(logged):
    _, _, c, (base, shard) = logged
    for run, data in ((base, BASE), (shard, SHARD)):
        history = sorted(c.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(len(data["epochs"])))
        assert [m.value for m in history] == [e["loss"] for e in data["epochs"]]
    slices = sorted(c.get_metric_history(shard.info.run_id, "slice"), key=lambda m: m.step)
    assert [m.value for m in slices] == [0, 0, 1, 1]
    assert c.get_metric_history(base.info.run_id, "slice") == []


def test_scalars_and_dp_only_where_dp_ran(logged):
    _, _, _, (base, shard) = logged
    assert shard.data.metrics["dp_epsilon"] == 7.9
    assert shard.data.metrics["dp_delta"] == 1e-5
    assert shard.data.metrics["trained_slices"] == 1
    assert shard.data.metrics["reused_slices"] == 1
    assert shard.data.tags["exante.dp.accountant"] == "rdp"
    assert "dp_epsilon" not in base.data.metrics and "dp_delta" not in base.data.metrics
    assert base.data.metrics["records"] == 6
    assert base.data.metrics["tokens_per_second"] == 900.0


def test_metrics_file_is_an_artifact(logged):
    root, _, c, children = logged
    for run in children:
        assert [f.path for f in c.list_artifacts(run.info.run_id)] == ["metrics.json"]
    stored = list((root / "mlartifacts").rglob("metrics.json"))
    assert sorted(json.loads(p.read_text())["kind"] for p in stored) == ["base", "shard"]


def test_no_record_text_reaches_the_store(logged):
    root = logged[0]
    stored = [root / DEFAULT_DB, *(root / "mlartifacts").rglob("*")]
    assert not [p for p in stored if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_a_failure_marks_the_runs_failed(logged, monkeypatch):
    root, _, c, _ = logged

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_artifact", disk_full)
    with pytest.raises(EvidenceError, match="No space left"):
        log_training(root, params={}, digests={}, units={"base": write_units(root / "b")["base"]},
                     experiment="failing")  # fmt: skip
    runs = c.search_runs([c.get_experiment_by_name("failing").experiment_id])
    assert {r.info.status for r in runs} == {RunStatus.to_string(RunStatus.FAILED)}
    assert len(runs) == 2


def test_bad_metrics_files_fail_before_the_store_is_touched(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "base", "epochs": [{"loss": 1.0}]}))
    units = {"base": bad, "s00": tmp_path / "missing.json"}
    with pytest.raises(MetricsFileError) as caught:
        log_training(tmp_path, params={}, digests={}, units=units)
    assert len(caught.value.problems) == 2
    assert caught.value.exit_code == 3
    assert not (tmp_path / DEFAULT_DB).exists()


def test_mlflow_tracking_uri_is_honoured(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere" / "other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    root = tmp_path / "proj"
    root.mkdir()
    parent = log_training(root, params={"seed": 1}, digests={}, units=write_units(root))
    assert other.exists() and not (root / DEFAULT_DB).exists()
    assert MlflowClient(f"sqlite:///{other}").get_run(parent).data.params == {"seed": "1"}
    assert len(runs_of(root, parent)) == 2


def test_unreachable_server_is_a_clear_evidence_error(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # bound, then closed: nobody listens
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.monotonic()
    with pytest.raises(EvidenceError, match="MLFLOW_TRACKING_URI") as caught:
        log_training(tmp_path, params={}, digests={}, units=write_units(tmp_path))
    assert time.monotonic() - start < 10
    assert isinstance(caught.value, VerifyError) and caught.value.exit_code == 3
    assert url in str(caught.value)


def test_a_directory_as_sqlite_database_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}")
    with pytest.raises(EvidenceError, match="is a directory"):
        log_training(tmp_path, params={}, digests={}, units=write_units(tmp_path))


def test_password_is_not_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ann:hunter2@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(EvidenceError) as caught:
        runs_of(tmp_path, "0" * 32)
    assert "hunter2" not in str(caught.value)
    assert "ann:***@127.0.0.1" in str(caught.value)


# -- a real tracking server -----------------------------------------------------------


def start_server(tmp: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # else: a swarm of huey workers
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp / 'srv.db'}", "--serve-artifacts",
           "--artifacts-destination", str(tmp / "art"), "--workers", "1"]  # fmt: skip
    log = (tmp / "server.log").open("wb")
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_runs_reach_a_real_tracking_server(tmp_path, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(tmp_path, port)
    try:
        wait_healthy(proc, url, tmp_path / "server.log")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        root = tmp_path / "proj"
        root.mkdir()
        parent = log_training(root, params=PARAMS, digests=DIGESTS, units=write_units(root))
        c = MlflowClient(url)
        assert c.get_run(parent).data.tags["exante.manifest"] == DIGESTS["manifest"]
        children = runs_of(root, parent)
        assert [r.info.run_name for r in children] == ["base", "s00"]
        assert [f.path for f in c.list_artifacts(children[1].info.run_id)] == ["metrics.json"]
        assert len(list((tmp_path / "art").rglob("metrics.json"))) == 2  # proxied uploads
        assert not (root / DEFAULT_DB).exists() and not (root / "mlartifacts").exists()
    finally:
        stop_server(proc)
