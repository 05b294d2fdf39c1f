"""Training settings, as typed frozen models (``params.yaml`` → ``train:``); a typo is an error.

Privacy knobs are explicit: DP is off unless ``dp.enabled`` is true, and an
epsilon is only ever reported with Poisson sampling on (``dp.poisson_sampling``),
since without it the accountant's guarantee does not hold.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """A GPT-2 built from config (no download), or a local Hugging Face causal-LM directory."""

    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_positions: int = Field(128, ge=16)
    local_path: str | None = Field(None, description="a local HF model directory, never a hub id")


class Schedule(_Strict):
    """How long to train: until the mean loss of an epoch falls below ``target_loss``.

    For shards, ``slice_epochs`` (when set) gives every slice but the last a fixed
    number of epochs: the intermediate checkpoints only need to be good starting
    points, and the last slice, which sees the whole shard, trains to convergence.
    That keeps a shard's cost near one convergence run instead of R of them.
    """

    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(30, ge=1)
    min_epochs: int = Field(1, ge=1)
    target_loss: float = Field(0.05, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_decay: Literal["none", "cosine"] = Field(
        "cosine", description="cosine: lr falls per epoch to lr_floor × lr at max_epochs"
    )
    lr_floor: float = Field(0.1, ge=0, le=1)
    slice_epochs: int | None = Field(
        None, ge=1, description="shards only: fixed epochs for every slice but the last"
    )


class DPConfig(_Strict):
    enabled: bool = False
    target_epsilon: float = Field(8.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    accountant: Literal["rdp", "prv"] = "rdp"
    poisson_sampling: bool = True


class TrainConfig(_Strict):
    seed: int = 1234
    shards: int = Field(4, ge=1)
    slices: int = Field(4, ge=1)
    threads: int = Field(2, ge=1, description="torch CPU threads; fixed so training is repeatable")
    model: ModelConfig = ModelConfig()
    base: Schedule = Schedule(lr=3e-3, max_epochs=4, target_loss=1.0)
    shard: Schedule = Schedule()
    dp: DPConfig = DPConfig()
    ensemble: Literal["bma", "mean"] = "bma"
