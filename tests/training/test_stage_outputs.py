"""Stage outputs are a function of their inputs: timings go to DVC metrics files, not deps.

Retraining on identical data gives bit-identical weights; if the output directory
also carried wall-clock times, its DVC hash would change anyway and every stage
downstream (shards, baselines, attest, verify) would re-run for nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Project
from tests.training.test_stages import TINY
from training.stages import Paths, run_partition, run_train_base, run_train_shard

pytestmark = pytest.mark.usefixtures("one_thread")


def _digests(d: Path) -> dict[str, str]:
    """Every file under ``d`` and its sha256: what DVC's directory md5 is a function of."""
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_retraining_on_identical_data_leaves_the_dependent_outputs_byte_identical(
    project: Project,
):
    root, paths = project.root, Paths()
    run_partition(root, TINY, project.signer)
    first = run_train_base(root, TINY)
    base_before = _digests(root / paths.base)
    run_train_shard(root, TINY, 0)
    shard_before = _digests(root / paths.shard_dir(0))
    timings_before = json.loads((root / paths.unit_metrics("s00")).read_text())
    assert timings_before["trained_slices"] == [0, 1]

    shutil.rmtree(root / paths.base)
    shutil.rmtree(root / paths.shard_dir(0))  # from scratch: no checkpoint to reuse
    second = run_train_base(root, TINY)
    run_train_shard(root, TINY, 0)

    assert _digests(root / paths.base) == base_before
    assert _digests(root / paths.shard_dir(0)) == shard_before
    again = run_train_shard(root, TINY, 0)  # the stage re-run: every checkpoint is reused
    assert again["trained_slices"] == [] and again["reused_slices"] == [0, 1]
    assert _digests(root / paths.shard_dir(0)) == shard_before
    assert first["wall_seconds"] > 0 and second["wall_seconds"] > 0
    for unit, out_dir in (("base", paths.base), ("s00", paths.shard_dir(0))):
        facts = json.loads((root / out_dir / "metrics.json").read_text())
        full = json.loads((root / paths.unit_metrics(unit)).read_text())
        assert not {"wall_seconds", "tokens_per_second", "slice_seconds"} & set(facts)
        assert unit == "base" or not {"trained_slices", "reused_slices", "epochs"} & set(facts)
        assert full["wall_seconds"] > 0 and full.items() >= facts.items()
    assert "slice_seconds" in timings_before


def test_dvc_yaml_declares_the_timings_as_uncached_metrics_no_stage_depends_on():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {
        "train_base": stages["train_base"]["metrics"],
        "train": stages["train"]["metrics"],
    }
    assert declared["train_base"] == [{"models/metrics/base.json": {"cache": False}}]
    shards = stages["train"]["outs"]
    assert declared["train"] == [
        {f"models/metrics/{next(iter(o)).rsplit('/', 1)[1]}.json": {"cache": False}} for o in shards
    ]
    assert len(declared["train"]) == 4
    for name, stage in stages.items():
        deps = (stage.get("do") or stage).get("deps", [])
        assert not [d for d in deps if d in ("models", "models/metrics")], name
        assert not [d for d in deps if str(d).startswith("models/metrics/")], name
