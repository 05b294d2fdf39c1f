"""Progress while a deletion works: the step, the shard and slice, epoch, loss, time left.

A tiny project (partitioned, base trained) and a one-stage DVC pipeline that
trains shard 0: the retrain runs inside a real ``dvc repro`` whose output is
streamed, line by line, into a log under ``.exante/logs`` and to the progress printer.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exante._stream import run_streamed
from exante.deletion import LOGS, Context, _repro
from lineage.signing import load_trusted_keys
from tests._cli import exante
from tests.conftest import Project
from tests.training.test_stages import TINY
from training.stages import run_partition, run_train_base

pytestmark = pytest.mark.usefixtures("one_thread")
EPOCH = re.compile(r"train shard 0: slice [12]/2 epoch 1/≤\d+ loss \d+\.\d{4}, ≤ \d+m\d\ds left")


@pytest.fixture
def tiny(project: Project) -> Project:
    root = project.root
    (root / "params.yaml").write_text(yaml.safe_dump({"train": TINY.model_dump(mode="json")}))
    run_partition(root, TINY, project.signer)
    run_train_base(root, TINY)
    return project


def test_train_progress_names_the_shard_slice_epoch_loss_and_time_left(tiny: Project):
    quiet = exante(tiny.root, "train", "shard", "--shard", "0")
    assert quiet.code == 0 and quiet.err == ""  # not a terminal, no --progress: quiet
    loud = exante(tiny.root, "train", "shard", "--shard", "1", "--progress")
    assert loud.code == 0
    lines = loud.err.splitlines()
    assert [line for line in lines if line.startswith("train shard 1: slice 1/2 epoch 1/")]
    assert [line for line in lines if line.startswith("train shard 1: slice 2/2 epoch 1/")]
    assert all(" left" in line and " loss " in line for line in lines)


def test_the_retrain_inside_dvc_repro_is_streamed_to_the_progress_and_a_log(tiny: Project):
    root = tiny.root
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    stage = {"cmd": "exante train shard --shard 0", "deps": ["data/shards/s00.jsonl"],
             "outs": [{"models/shards/s00": {"persist": True}}],
             "metrics": [{"models/metrics/s00.json": {"cache": False}}]}  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    seen: list[str] = []
    ctx = Context(root, TINY, tiny.signer, load_trusted_keys(root / "policies/trusted_keys"),
                  say=seen.append, progress=seen.append)  # fmt: skip
    _repro(ctx, {})

    assert seen[0].startswith("step 1/4: retraining") and "log: .exante/logs/repro-" in seen[0]
    assert "Running stage 'train'" in "\n".join(seen)
    assert [line for line in seen if EPOCH.fullmatch(line)]
    (log,) = (root / LOGS).glob("repro-*.log")
    text = log.read_text()
    assert text.startswith("$ ") and text.rstrip().endswith("# exit 0")
    assert [line for line in text.splitlines() if EPOCH.fullmatch(line)]


def test_a_failing_child_keeps_its_whole_output_in_the_log(tmp_path: Path):
    log = tmp_path / "logs" / "x.log"
    code, tail = run_streamed(
        [sys.executable, "-c", "import sys; [print(i) for i in range(40)]; sys.exit('boom')"],
        tmp_path,
        log=log,
    )
    assert code == 1 and tail[-1] == "boom" and len(tail) == 15
    lines = log.read_text().splitlines()
    assert lines[1:41] == [str(i) for i in range(40)] and lines[-1] == "# exit 1"
