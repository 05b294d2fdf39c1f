"""train.device: auto picks what is there, cuda without a GPU is refused, CUDA runs bf16."""

from __future__ import annotations

import pytest
import torch

from lineage.errors import ParamsError
from training.config import TrainConfig
from training.executor import pool_of
from training.model import device_of
from training.sisa import config_digest

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_cpu_is_cpu_and_auto_follows_the_machine():
    assert device_of(TrainConfig(device="cpu")).type == "cpu"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert device_of(TrainConfig()).type == want


@no_gpu
def test_cuda_without_a_gpu_is_refused_saying_what_to_do():
    refused = r"train\.device is cuda.*set train\.device to auto or cpu"
    with pytest.raises(ParamsError, match=refused):
        device_of(TrainConfig(device="cuda"))


@no_gpu
def test_cpu_checkpoint_addresses_do_not_name_a_device():
    cfg = TrainConfig()
    assert config_digest(cfg, cfg.shard) == config_digest(cfg.model_copy(update={"device": "cpu"}),
                                                          cfg.shard)  # fmt: skip


def test_ray_tasks_ask_for_gpus_only_for_cuda_units():
    assert pool_of(TrainConfig(device="cpu"))["gpus"] == 0
    assert pool_of(TrainConfig(device="cuda", gpus_per_unit=0.5))["gpus"] == 0.5
    auto = pool_of(TrainConfig(device="auto"))["gpus"]
    assert auto == (1.0 if torch.cuda.is_available() else 0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_shard_trains_on_cuda_under_bf16_and_saves_float32_weights(tmp_path):
    from lineage.records import Record
    from training.sisa import train_shard

    cfg = TrainConfig.model_validate({
        "device": "cuda", "shards": 1, "slices": 1,
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 32},
        "shard": {"max_epochs": 2, "batch_size": 4},
    })  # fmt: skip
    records = [Record.make(f"s/{i}", "s", (), f"record number {i} says hello") for i in range(8)]
    result = train_shard(0, [(0, r) for r in records], cfg, base=None, out_dir=tmp_path)
    assert result.trained == [0] and result.epochs
