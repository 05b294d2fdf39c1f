"""Training settings, as typed frozen models (``params.yaml`` → ``train:``); a typo is an error.

Privacy knobs are explicit: DP is off unless ``dp.enabled`` is true, and an
epsilon is only ever reported with Poisson sampling on (``dp.poisson_sampling``),
since without it the accountant's guarantee does not hold. ``dp.secure_mode``
trades bit-identical replay of a shard for Opacus's secure generator.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """A GPT-2 built from config (no download), or a local pretrained causal LM.

    ``local_path``: a directory saved with ``save_pretrained`` (any architecture
    transformers knows: GPT-2, Llama-family, ...) or a ``.gguf`` file; never a hub
    id. The model's own tokenizer is used, and ``n_positions`` is then only the
    training window (at most the model's context); the other sizes are ignored.
    """

    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_positions: int = Field(128, ge=16)
    local_path: str | None = Field(
        None, description="a local HF model directory or .gguf file, never a hub id"
    )


class Schedule(_Strict):
    """How long to train: until the mean loss of an epoch falls below ``target_loss``.

    For shards, ``slice_epochs`` (when set) gives every slice but the last a fixed
    number of epochs: the intermediate checkpoints only need to be good starting
    points, and the last slice, which sees the whole shard, trains to convergence.
    That keeps a shard's cost near one convergence run instead of R of them, but
    puts most of it in the last slice, which every deletion retrains.

    ``replay`` (when set) spreads the work instead: every slice trains its own
    fresh records with the full schedule, plus, each epoch, a seeded sample of
    ``round(replay × n)`` of the ``n`` windows of the earlier slices, so they
    are rehearsed rather than forgotten. A deletion in slice r then retrains
    about (R - r)/R of the shard's work. The two are alternatives: setting both
    is an error. With neither, every slice trains slices 0..r to convergence
    (plain SISA); later slices start from a checkpoint that knows most of their
    data and stop early on ``target_loss``.

    ``slice_work: equal`` (plain SISA only) gives slice r of R up to
    ``max_epochs × R / (r + 1)`` epochs, so every slice may do the same work
    (characters × epochs), the even split SISA's cost analysis assumes. A small
    first slice takes only a few optimizer steps an epoch; with equal epochs it
    is the slice least trained, and every later slice, which every deletion
    retrains, has to finish its work.

    ``min_steps`` gives every epoch cap (all but the fixed ``slice_epochs``
    ones) a floor of optimizer steps: a slice whose data gives fewer than
    ``min_steps`` steps within its epoch cap may train
    ``ceil(min_steps / steps per epoch)`` epochs instead (its learning rate
    then decays over those). Epochs count passes over a shard's records, so
    a shard that loses many of them to deletions also loses steps per epoch
    and, at the same epoch cap, stops far from its target loss; the floor
    keeps its work. It depends on the slice's data alone, so retraining stays
    exact. Set at or below the fewest steps any slice's cap allows on the full
    data, it changes nothing until a shard shrinks. Not with DP-SGD, which
    trains a fixed number of epochs.
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
    replay: float | None = Field(
        None,
        ge=0,
        le=1,
        description="shards only: each slice trains its own records plus this fraction of "
        "the earlier slices' windows, resampled every epoch",
    )

    min_steps: int | None = Field(
        None,
        ge=1,
        description="shards only: a slice may take at least this many optimizer steps; its "
        "epoch cap is raised where its data is too small for them (a shard that lost records)",
    )

    slice_work: Literal["epochs", "equal"] = Field(
        "epochs",
        description="shards only: epochs: up to max_epochs for every slice; equal: up to "
        "max_epochs × R/(r+1) for slice r, the same work for every slice",
    )

    @model_validator(mode="after")
    def _one_slice_layout(self) -> Schedule:
        if self.slice_epochs is not None and self.replay is not None:
            raise ValueError(
                "slice_epochs and replay are alternative slice schedules: set one of them to null"
            )
        if self.slice_work == "equal" and (self.slice_epochs or self.replay) is not None:
            raise ValueError(
                "slice_work: equal sizes the epochs of plain SISA slices; slice_epochs and replay "
                "are other schedules: set slice_work to epochs, or both of them to null"
            )
        return self


class BaseSchedule(Schedule):
    """The base model's schedule; ``max_epochs: 0`` trains no base.

    With a pretrained model (``model.local_path``) and LoRA shards, the base is
    usually the pretrained model as it is: ``max_epochs: 0`` saves it unchanged
    (and records that it trained on nothing), so the adapters sit on exactly the
    weights the model's publisher released.
    """

    max_epochs: int = Field(30, ge=0, description="0: no base training (the model as built)")


class LoraSettings(_Strict):
    """One LoRA adapter per shard (Hu et al., ICLR 2022), on the frozen base model.

    ``target_modules`` null: peft's default for the architecture (Llama:
    q_proj, v_proj; GPT-2: c_attn).
    """

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None


class ShardSchedule(Schedule):
    """The shard schedule, and what a shard trains: every weight (``full``) or a LoRA adapter.

    ``kind: full`` serializes as the plain schedule did, so checkpoint addresses
    of full shards are what they were before LoRA existed.
    """

    kind: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()

    @model_serializer(mode="wrap")
    def _full_as_before(self, handler):
        out = handler(self)
        if self.kind == "full":
            out.pop("kind", None)
            out.pop("lora", None)
        return out


class DPConfig(_Strict):
    enabled: bool = False
    target_epsilon: float = Field(8.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    accountant: Literal["rdp", "prv"] = "rdp"
    poisson_sampling: bool = True
    secure_mode: bool = Field(
        False,
        description="Opacus secure_mode: noise and sampling from a CSPRNG (needs torchcsprng) "
        "instead of generators keyed by the DP secret; a retrained shard is then not "
        "bit-identical to a from-scratch run",
    )


class TrainConfig(_Strict):
    seed: int = 1234
    shards: int = Field(4, ge=1)
    slices: int = Field(4, ge=1)
    threads: int = Field(2, ge=1, description="torch CPU threads; fixed so training is repeatable")
    workers: int = Field(
        1,
        ge=1,
        description="processes that train independent units (shards, verification baselines) "
        "at once, each with `threads` threads, so workers x threads should not exceed the "
        "cores; the base, which trains alone, uses threads x workers",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="local: a pool of `workers` processes; ray: Ray tasks of `threads` CPUs "
        "each (the ray extra), on RAY_ADDRESS or `ray_address`, else a local cluster",
    )
    ray_address: str | None = Field(
        None, description="a Ray cluster to join (RAY_ADDRESS wins when set); null: local"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where units train: auto is cuda when a GPU is visible, else cpu; cuda "
        "trains under bf16 autocast and asks Ray for gpus_per_unit GPUs per task. Exact "
        "(bit-identical) retraining is tested on CPU; a shard retrained on another device "
        "than it was trained on is exact in data, not in bits",
    )
    gpus_per_unit: float = Field(
        1.0, gt=0, description="with device cuda under Ray: GPUs each task asks for"
    )
    model: ModelConfig = ModelConfig()
    base: BaseSchedule = BaseSchedule(lr=3e-3, max_epochs=4, target_loss=1.0)
    shard: ShardSchedule = ShardSchedule()
    dp: DPConfig = DPConfig()
    ensemble: Literal["bma", "mean"] = "bma"

    @field_validator("base", "shard", mode="before")
    @classmethod
    def _plain_schedule(cls, value, info):
        """A plain :class:`Schedule` given for the base or the shards (``kind: full``)."""
        own = {"base": BaseSchedule, "shard": ShardSchedule}[info.field_name]
        if isinstance(value, Schedule) and not isinstance(value, own):
            return value.model_dump()
        return value

    @model_validator(mode="after")
    def _replay_is_not_private(self) -> TrainConfig:
        if self.dp.enabled and self.shard.replay is not None:
            raise ValueError(
                "train.shard.replay is not accounted for by DP-SGD (a fixed sample per epoch is "
                "not Poisson sampling): set it to null, or dp.enabled to false"
            )
        if self.dp.enabled and self.shard.min_steps is not None:
            raise ValueError(
                "train.shard.min_steps raises epoch caps, but DP-SGD trains a fixed number of "
                "epochs (its privacy budget): set it to null, or dp.enabled to false"
            )
        return self
