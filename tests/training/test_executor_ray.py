"""Shards as Ray tasks: the same bits as the local executor, a killed worker retried."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from exante import _units  # noqa: E402
from lineage.errors import BadInputError  # noqa: E402
from tests.conftest import Project  # noqa: E402
from tests.training.test_stages import TINY  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.executor import UnitFailedError, run_units  # noqa: E402
from training.stages import (  # noqa: E402
    Paths,
    run_partition,
    run_train_base,
    run_train_shard,
    slice_dirs,
)


@pytest.fixture(scope="module")
def cluster():
    """One local 2-CPU cluster for the module (run_units joins it and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
             logging_level="ERROR")  # fmt: skip
    yield
    ray.shutdown()


def _unit(kind: str) -> str:
    if kind == "bad":
        raise BadInputError("shard file is malformed: fix data/shards/s01.jsonl")
    return f"{kind} in {os.getpid()}"


def test_units_run_as_ray_tasks_in_order_and_a_failure_keeps_its_exit_code(cluster):
    out = run_units(_unit, [("a",), ("b",), ("c",)], workers=2, executor="ray")
    assert [x.split()[0] for x in out] == ["a", "b", "c"]
    assert all(int(x.split()[-1]) != os.getpid() for x in out)  # run in Ray workers
    with pytest.raises(UnitFailedError) as exc:
        run_units(_unit, [("a",), ("bad",)], workers=2, executor="ray", names=["s0", "s1"])
    assert exc.value.exit_code == 3
    assert str(exc.value).startswith("s1: shard file is malformed")


def _weights(root: Path, shard: int) -> list[bytes]:
    return [(d / "model.safetensors").read_bytes() for d in slice_dirs(root, shard, Paths())]


@pytest.fixture
def based(project: Project) -> tuple[Project, TrainConfig]:
    cfg = TINY.model_copy(update={"threads": 1, "workers": 2, "executor": "ray"})
    run_partition(project.root, cfg, project.signer)
    run_train_base(project.root, cfg)
    return project, cfg


@pytest.mark.slow
def test_shards_trained_as_ray_tasks_are_bit_identical_to_the_local_executor(cluster, based):
    project, cfg = based
    root = project.root
    jobs = [(str(root), cfg.model_dump(mode="json"), s, False) for s in range(cfg.shards)]
    on_ray = run_units(_units.train_shard, jobs, workers=2, executor="ray")
    assert [m["trained_slices"] for m in on_ray] == [[0, 1], [0, 1]]
    remote = {s: _weights(root, s) for s in range(cfg.shards)}
    shutil.rmtree(root / "models" / "shards")
    for s in range(cfg.shards):
        run_train_shard(root, cfg, s)
        assert _weights(root, s) == remote[s]


def _killed_once(root: str, cfg: dict, marker: str) -> dict:
    """Train shard 0; on the first attempt, the worker is killed in slice 1's first epoch."""

    def hook(slice_index, _stats) -> None:
        if slice_index == 1 and not Path(marker).exists():
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)

    return run_train_shard(Path(root), TrainConfig.model_validate(cfg), 0, on_epoch=hook)


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_retried_and_publishes_nothing_partial(cluster, based):
    project, cfg = based
    root, marker = project.root, project.root / "killed-once"
    job = (str(root), cfg.model_dump(mode="json"), str(marker))
    (m,) = run_units(_killed_once, [job], workers=2, executor="ray")
    assert marker.exists()  # the first attempt was killed
    assert m["reused_slices"] == [0] and m["trained_slices"] == [1]  # slice 0 was whole
    ckpt = root / "models" / "shards" / "s00" / "ckpt"
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]  # no temp dir
    retried = _weights(root, 0)
    shutil.rmtree(root / "models" / "shards")
    run_train_shard(root, cfg, 0)
    assert _weights(root, 0) == retried
