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


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "lineage", "policies", "data"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pub.pem")
            )
        else:
            shutil.copy(src, root / name)
    for generated in ("raw", "records", "reports", "manifests", "gate"):
        shutil.rmtree(root / "data" / generated, ignore_errors=True)
    for f in ("manifest.dsse.json", "manifest.leaves"):
        (root / "data" / f).unlink(missing_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"].update(SMALL_CORPUS)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
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
    assert ran == {"ingest@crm", "validate", "manifest", "gate"}
    assert (pipeline / "data" / "manifests" / "v000002.dsse.json").is_file()
    assert run(["exante", "check"], pipeline).returncode == 0


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
