"""Shards on a pool of worker processes: the same bits as alone, failures reported whole."""

from __future__ import annotations

import shutil

import pytest
import yaml

from exante import _units
from lineage.errors import BadInputError
from tests.conftest import Project
from tests.training.test_stages import TINY
from training.executor import UnitFailedError, run_units
from training.stages import Paths, run_partition, run_train_base, run_train_shard, slice_dirs


def _weights(root, shard: int) -> list[bytes]:
    return [(d / "model.safetensors").read_bytes() for d in slice_dirs(root, shard, Paths())]


def test_shards_trained_by_two_workers_are_bit_identical_to_training_them_here(project: Project):
    root = project.root
    cfg = TINY.model_copy(update={"threads": 1, "workers": 2})
    run_partition(root, cfg, project.signer)
    run_train_base(root, cfg)
    jobs = [(str(root), cfg.model_dump(mode="json"), s, False) for s in range(cfg.shards)]
    pooled = run_units(_units.train_shard, jobs, workers=2)
    assert [m["shard"] for m in pooled] == [0, 1]  # results in job order
    assert all(m["trained_slices"] == [0, 1] for m in pooled)
    in_pool = {s: _weights(root, s) for s in range(cfg.shards)}
    shutil.rmtree(root / "models" / "shards")
    for s in range(cfg.shards):
        assert run_train_shard(root, cfg, s)["trained_slices"] == [0, 1]
        assert _weights(root, s) == in_pool[s]


def _fails(kind: str) -> None:
    if kind == "bad":
        raise BadInputError("shard file is malformed: fix data/shards/s01.jsonl")
    if kind == "bug":
        raise KeyError("internal")
    return kind


def test_a_failed_unit_keeps_its_exit_code_and_the_others_finish():
    with pytest.raises(UnitFailedError) as exc:
        run_units(_fails, [("ok",), ("bad",), ("bug",)], workers=2, names=["s0", "s1", "s2"])
    assert exc.value.exit_code == 3  # the first failure's: bad input
    text = str(exc.value)
    assert text.startswith("s1: shard file is malformed: fix data/shards/s01.jsonl")
    assert "also failed: s2: KeyError" in text
    with pytest.raises(UnitFailedError) as exc:
        run_units(_fails, [("ok",), ("bug",)], workers=2, names=["s0", "s1"])
    assert exc.value.exit_code == 70 and "Traceback" in str(exc.value)  # an internal error


def test_one_worker_runs_the_units_here_as_a_loop():
    assert run_units(_fails, [("a",), ("b",)], workers=1) == ["a", "b"]
    with pytest.raises(BadInputError):  # not wrapped: the unit's own error
        run_units(_fails, [("bad",)], workers=1)


def test_train_shards_starts_no_pool_when_at_most_one_shard_has_slices_to_train(
    project: Project, monkeypatch
):
    """After a deletion one shard retrains: here, not in a pool whose workers import torch."""
    from exante.cli import main
    from training import executor
    from training.stages import shards_to_train

    root = project.root
    cfg = TINY.model_copy(update={"threads": 1, "workers": 2})
    run_partition(root, cfg, project.signer)
    run_train_base(root, cfg)
    assert shards_to_train(root, cfg) == [0, 1]
    for s in range(cfg.shards):
        run_train_shard(root, cfg, s)
    assert shards_to_train(root, cfg) == []
    shutil.rmtree(slice_dirs(root, 1, Paths())[-1])  # shard 1's last slice must train again
    assert shards_to_train(root, cfg) == [1]
    shard0 = root / "data/shards/s00.jsonl"
    kept = shard0.read_bytes()
    shard0.write_bytes(kept[: len(kept) // 2])  # cut mid-line: the shard's own run says so
    assert shards_to_train(root, cfg) == [0, 1]
    shard0.write_bytes(kept)

    calls = []
    real = executor.run_units

    def counted(fn, jobs, **kw):
        calls.append(kw["workers"])
        return real(fn, jobs, **kw)

    monkeypatch.setattr(executor, "run_units", counted)
    (root / "params.yaml").write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    monkeypatch.chdir(root)
    assert main(["train", "shards"]) == 0
    assert calls == [1]  # one shard to train: this process, no pool
    assert shards_to_train(root, cfg) == []
    shutil.rmtree(root / "models" / "shards")
    assert main(["train", "shards"]) == 0
    assert calls == [1, 2]  # both shards to train: the pool of train.workers
