"""DP-SGD for one training run (a shard slice), with Opacus.

Differentially private SGD (Abadi et al., "Deep Learning with Differential
Privacy", CCS 2016): each step draws a Poisson sample of the windows, clips
every per-sample gradient to ``max_grad_norm``, adds Gaussian noise and steps.
The accountant (RDP, Mironov 2017; or PRV, Gopi et al. 2021) turns the noise
multiplier, sample rate and step count into the (ε, δ) actually spent.

Why it looks the way it does:

* **A fixed number of epochs.** The noise is calibrated for a known number of
  steps, so training runs exactly ``epochs`` (default ``schedule.max_epochs``)
  epochs. The non-private loop's early stop on ``target_loss`` does not apply:
  that loss is an un-noised function of the private data, so stopping on it
  would leak through the step count outside the accountant. ``min_epochs`` and
  ``target_loss`` are ignored here.
* **GPT-2 under Opacus.** Opacus has per-sample gradient rules for
  ``nn.Embedding``, ``nn.LayerNorm`` and ``nn.Linear``, but none for the
  ``transformers`` ``Conv1D`` that GPT-2 uses for attention and MLP, and its
  functorch (``torch.func``) fallback re-runs each layer per sample: five
  times the cost of a plain step on CPU. :func:`_conv1d_grad_sample` is the
  rule Opacus uses for ``nn.Linear`` with the weight's two axes swapped
  (``Conv1D`` computes ``x @ W + b`` with ``W`` stored ``[in, out]``). The
  tied ``wte``/``lm_head`` weight gets the sum of both layers' per-sample
  gradients. ``wpe`` only sees the batch if
  ``position_ids`` are passed expanded to ``(batch, length)``, which
  :func:`training.loop.collate` does; without them its per-sample gradient has
  batch size 1 and clipping fails. ``tests/training/test_dp.py`` checks all of
  it against gradients taken one sample at a time.
* **Per-sample loss.** Opacus's ``loss_reduction="mean"`` assumes a mean over
  *samples*; Hugging Face's loss is a mean over the batch's *tokens*, which
  would make each sample's gradient depend on the others' lengths. The loss
  here is the mean over samples of each sample's mean token loss.
* **Empty batches.** Poisson sampling may draw none; the step is still taken
  (noise only) and counted, as the accountant assumes.
* **Hooks, not a wrapper** (``wrap_model=False``): the caller's model and
  optimizer stay the objects it checkpoints; the hooks are removed on return.
* **The EpochStats losses are not private.** They are diagnostics computed
  from the data without noise: log them, never publish them.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from opacus import PrivacyEngine
from opacus.grad_sample import register_grad_sampler
from torch.utils.data import DataLoader, Dataset
from transformers.pytorch_utils import Conv1D

from lineage.errors import ParamsError, VerificationError
from training.config import DPConfig, Schedule
from training.loop import EpochStats, collate


@register_grad_sampler(Conv1D)
def _conv1d_grad_sample(
    layer: Conv1D, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradients of ``y = x @ W + b``: ``x^T · dy`` and ``dy`` summed per sample."""
    x = activations[0]
    out = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", x, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...k->nk", backprops)
    return out


class PrivacyBudgetError(VerificationError):
    """The run does not meet the policy's privacy requirement: do not release the model."""


class InsecureNoiseWarning(UserWarning):
    """DP noise comes from a seeded pseudo-random generator, not a secure one."""


class NoPrivacyGuaranteeWarning(UserWarning):
    """The run used DP-SGD, but its sampling voids the accountant's guarantee."""


class OverTargetWarning(UserWarning):
    """The run spent (slightly) more epsilon than ``dp.target_epsilon``."""


@dataclass(frozen=True)
class PrivacySpent:
    """What one DP run spent; ``epsilon`` is None when no guarantee holds (no Poisson sampling)."""

    epsilon: float | None
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    poisson_sampling: bool

    def attestation_entry(self) -> dict | None:
        """The ``dp`` entry of a training attestation, or None when there is no epsilon to sign."""
        if self.epsilon is None:
            return None
        return {"epsilon": self.epsilon, "delta": self.delta, "accountant": self.accountant}


class _Windows(Dataset):
    def __init__(self, examples: Sequence[Sequence[int]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Sequence[int]:
        return self.examples[i]


def train_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[Sequence[int]],
    schedule: Schedule,
    *,
    dp: DPConfig,
    seed: int,
    pad_id: int,
    epochs: int | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> tuple[list[EpochStats], PrivacySpent]:
    """Train exactly ``epochs`` epochs (default ``schedule.max_epochs``) with DP-SGD.

    The noise is calibrated so that the full run spends ``dp.target_epsilon``
    at ``dp.delta``; the epsilon returned is what the accountant says was spent.
    Repeatable given ``seed``: the Poisson sampler and the noise draw from
    generators seeded from it (so keep the seed secret; see the warning).
    """
    n_epochs = schedule.max_epochs if epochs is None else epochs
    _check_inputs(examples, dp, n_epochs)
    _warn_insecure_noise()
    torch.manual_seed(seed)  # dropout in a local model, if any
    model.train()  # Opacus refuses a model in eval mode (as loaded checkpoints are)
    loader = _loader(examples, schedule.batch_size, dp, seed=seed, pad_id=pad_id)
    engine = PrivacyEngine(accountant=dp.accountant, secure_mode=False)
    hooks, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=dp.target_epsilon,
        target_delta=dp.delta,
        epochs=n_epochs,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=dp.poisson_sampling,
        noise_generator=_generator(seed, "noise"),
        wrap_model=False,
    )
    model.train()
    try:
        stats = [_epoch(model, dp_optimizer, dp_loader, e, on_epoch) for e in range(n_epochs)]
    finally:
        hooks.cleanup()
        model.eval()
    return stats, _spent(engine, dp)


def check_policy(spent: PrivacySpent | None, *, max_epsilon: float | None) -> None:
    """Raise :class:`PrivacyBudgetError` unless the run meets "DP with ε ≤ ``max_epsilon``".

    ``max_epsilon=None`` means the policy does not require DP.
    """
    if max_epsilon is None:
        return
    need = f"the policy requires DP-SGD with epsilon ≤ {max_epsilon}"
    if spent is None:
        raise PrivacyBudgetError(f"{need}, but the run did not use DP; set train.dp.enabled: true")
    if spent.epsilon is None:
        raise PrivacyBudgetError(
            f"{need}, but the run reported no epsilon (Poisson sampling was off); "
            "set train.dp.poisson_sampling: true and retrain"
        )
    if not spent.epsilon <= max_epsilon:  # also catches NaN
        raise PrivacyBudgetError(
            f"{need}, but the run spent epsilon = {spent.epsilon:.4g} at delta = {spent.delta:g}; "
            f"set train.dp.target_epsilon below {max_epsilon} and retrain"
        )


def _check_inputs(examples: Sequence[Sequence[int]], dp: DPConfig, epochs: int) -> None:
    problems = []
    if not dp.enabled:
        problems.append("train.dp.enabled is false: use training.loop.train for a non-DP run")
    if not examples:
        problems.append("there are no examples to train on")
    if epochs < 1:
        problems.append(f"epochs must be ≥ 1, not {epochs}")
    if problems:
        raise ParamsError("cannot start a DP-SGD run", problems=problems)


def _loader(examples, batch_size: int, dp: DPConfig, *, seed: int, pad_id: int) -> DataLoader:
    return DataLoader(
        _Windows(examples),
        batch_size=batch_size,
        shuffle=not dp.poisson_sampling,  # Opacus replaces the sampler when Poisson is on
        collate_fn=partial(collate, pad_id=pad_id),
        generator=_generator(seed, "sampling"),
    )


def _warn_insecure_noise() -> None:
    warnings.warn(
        "DP-SGD is running with Opacus secure_mode OFF: the noise and the Poisson sampling come "
        "from torch's pseudo-random generator seeded from the training seed, not a "
        "cryptographically secure source. Anyone who knows the seed can regenerate the noise, "
        "and floating-point attacks on the noise are not mitigated. Fine for this demo; NOT for "
        "production: use secure_mode=True (torchcsprng) and retrain.",
        InsecureNoiseWarning,
        stacklevel=3,
    )


def _generator(seed: int, stream: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}\x00{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big"))


def _epoch(model, dp_optimizer, dp_loader, epoch: int, on_epoch) -> EpochStats:
    total, tokens, steps = 0.0, 0, 0
    with warnings.catch_warnings():
        # Opacus hooks the embeddings, whose integer inputs need no gradient; torch warns
        # about that on every backward, yet the per-sample gradients are right (tested).
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for batch in dp_loader:
            loss_sum, n = _step(model, dp_optimizer, batch)
            total, tokens, steps = total + loss_sum, tokens + n, steps + 1
    stats = EpochStats(epoch, total / max(tokens, 1), steps, tokens)
    if on_epoch:
        on_epoch(stats)
    return stats


def _step(model, dp_optimizer, batch) -> tuple[float, int]:
    """One DP-SGD step; returns the summed token loss and the token count (for stats only)."""
    dp_optimizer.zero_grad(set_to_none=True)
    if not isinstance(batch, Mapping) or batch["input_ids"].shape[0] == 0:
        for p in dp_optimizer.params:  # an empty Poisson draw: noise only, still counted
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        dp_optimizer.step()
        return 0.0, 0
    token_losses = _token_losses(model, batch)
    counts = (batch["labels"][:, 1:] != -100).sum(dim=1)
    (token_losses.sum(dim=1) / counts.clamp(min=1)).mean().backward()
    dp_optimizer.step()
    return float(token_losses.sum().detach()), int(counts.sum())


def _token_losses(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy per position, zero at padding: shape (batch, length - 1)."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )


def _spent(engine: PrivacyEngine, dp: DPConfig) -> PrivacySpent:
    history = engine.accountant.history  # [(noise_multiplier, sample_rate, steps)]
    (noise_multiplier, sample_rate, _), *_ = history
    epsilon = None
    if dp.poisson_sampling:
        epsilon = float(engine.get_epsilon(dp.delta))
        if epsilon > dp.target_epsilon:
            warnings.warn(
                f"this run spent epsilon = {epsilon:.6g}, more than train.dp.target_epsilon = "
                f"{dp.target_epsilon} (Opacus plans int(epochs / sample_rate) steps, which float "
                "rounding can make one fewer than the steps taken, and PRV estimates epsilon to "
                "within 0.01). The reported epsilon is the one actually spent.",
                OverTargetWarning,
                stacklevel=3,
            )
    else:
        warnings.warn(
            "train.dp.poisson_sampling is false: batches were drawn by shuffling, not Poisson "
            "sampling, so the accountant's (epsilon, delta) guarantee does NOT hold for this run "
            "and no epsilon is reported (PrivacySpent.epsilon is None). Turn Poisson sampling on "
            "and retrain to get a guarantee.",
            NoPrivacyGuaranteeWarning,
            stacklevel=3,
        )
    return PrivacySpent(
        epsilon=epsilon,
        delta=dp.delta,
        accountant=dp.accountant,
        noise_multiplier=float(noise_multiplier),
        sample_rate=float(sample_rate),
        steps=sum(steps for *_, steps in history),
        poisson_sampling=dp.poisson_sampling,
    )
