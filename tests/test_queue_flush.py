"""``exante delete --flush`` on a real pipeline: two queued requests, two shards, one run.

The smallest real project: the test pipeline's tiny corpus and models
(tests/test_pipeline.py ``build_project``) with its stages up to ``attest``
(report, verification and audit add minutes and nothing to the queue). Slow:
the first ``dvc repro`` trains the base and four shards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import records_of, shard_of
from tests.test_pipeline import SMALL_CORPUS, build_project, run

pytestmark = pytest.mark.slow
UP_TO_ATTEST = ("corpus", "ingest", "validate", "manifest", "gate", "partition", "train_base",
                "train", "attest")  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("queue")
    build_project(root, SMALL_CORPUS)
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"] = {k: v for k, v in spec["stages"].items() if k in UP_TO_ATTEST}
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run(["exante", "keys", "init", "--dev"], root)
    run(["dvc", "repro"], root)
    return root


def _two_people_on_two_shards(root: Path) -> dict[str, tuple[int, int]]:
    """Person → (their shard, their earliest slice), for two people of different shards."""
    chosen: dict[str, tuple[int, int]] = {}
    for n in range(SMALL_CORPUS["people"]):
        person = f"p{n:04d}"
        placed = shard_of(root, {r["record_id"] for r in records_of(root, person)})
        if len(placed) == 1:
            ((shard, slices),) = placed.items()
            if shard not in {s for s, _ in chosen.values()}:
                chosen[person] = (shard, min(slices))
        if len(chosen) == 2:
            return chosen
    raise AssertionError("the tiny corpus has no two people on two shards")


def test_flush_retrains_each_affected_shard_once_and_issues_every_receipt(pipeline: Path):
    root = pipeline
    people = _two_people_on_two_shards(root)
    for n, person in enumerate(people):
        out = run(["exante", "delete", "--enqueue", "--subject", person, "--reason", f"T-{n}",
                   "--request-id", f"q-{n}"], root)  # fmt: skip
        assert "queued; receipt due by" in out.stdout
    status = run(["exante", "ledger", "status"], root)
    assert "pending deletion requests" in status.stdout and ": 2" in status.stdout
    assert "Running stage" not in run(["dvc", "status"], root).stdout  # nothing retrained yet

    flush = run(["exante", "delete", "--flush", "--progress"], root)
    assert len(re.findall(r"Running stage 'train'", flush.stderr)) == 1  # one retrain pass
    retrained = re.findall(r"shard (\d+): slices trained \[(\d)", flush.stderr)
    assert sorted(int(s) for s, _ in retrained) == sorted(s for s, _ in people.values())
    assert "step 1/4: retraining" in flush.stderr and "step 4/4" in flush.stderr
    for shard, first in people.values():
        assert f"shard {shard} from slice {first}" in flush.stderr
        assert re.search(rf"train shard {shard}: slice {first + 1}/2 epoch 1/", flush.stderr)
    assert list((root / ".exante/logs").glob("repro-*.log"))

    for n in range(2):
        receipt = root / f"data/receipts/q-{n}.dsse.json"
        assert f"receipt: {receipt.relative_to(root)}" in flush.stdout
        run(["exante", "receipt", "verify", str(receipt)], root)
    for person in people:
        assert records_of(root, person) == []
    after = run(["exante", "ledger", "status"], root)
    assert ": 0" in after.stdout.splitlines()[0]
    ledger = run(["exante", "ledger", "verify"], root).stdout
    assert re.search(r"q-0\s+complete", ledger) and re.search(r"q-1\s+complete", ledger)
    assert "Running stage" not in run(["dvc", "repro"], root).stdout
    again = run(["exante", "delete", "--flush"], root)
    assert "no pending deletion requests" in again.stdout
