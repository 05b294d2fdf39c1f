"""The shared unlearning loop: one method's loss, minimized under a utility constraint.

Every method is a per-batch loss (:mod:`._registry`); this loop owns the rest,
so methods differ only where their papers do. It copies the model (the input is
never touched), cuts texts into windows as training does, and takes AdamW steps
on a forget batch and a retain batch drawn in a seeded order, so one seed gives
one result, bit for bit. Every ``eval_every`` steps it measures the mean token
loss on the whole forget and retain sets and

* stops with ``"utility"`` once the retain loss exceeds ``(1 + utility_tolerance)``
  times its original (or either loss is not finite), returning the last measured
  state that kept within it (at worst the original model);
* stops with ``"forget_target"`` once the forget loss reaches ``forget_target``
  times its original;
* otherwise stops with ``"steps"`` after ``steps`` steps.

The utility constraint is what keeps approximate unlearning in the regime
where quantization or relearning can undo it; that is the contrast to exact
deletion this package exists to show.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from training.loop import batches, collate, windows
from training.tokenizer import Tokenizer
from verify.unlearn._errors import UnlearnSettingsError
from verify.unlearn._likelihood import mean_nll, to_device
from verify.unlearn._registry import UNLEARNERS, Batch, Unlearner
from verify.unlearn._settings import UnlearnSettings

Stop = Literal["forget_target", "utility", "steps"]


@dataclass(frozen=True)
class UnlearnReport:
    """What a run did. Losses are mean token NLLs over the whole set, in eval mode.

    ``steps`` counts the optimizer steps in the returned model; ``steps_run``
    those taken, more than ``steps`` when a utility rollback discarded some.
    """

    method: str
    steps: int
    steps_run: int
    forget_loss_before: float
    forget_loss_after: float
    retain_loss_before: float
    retain_loss_after: float
    stopped_because: Stop
    max_weight_change: float


@dataclass(frozen=True)
class _Sets:
    """The forget and retain windows, and how to batch and score them."""

    forget: list[list[int]]
    retain: list[list[int]]
    batch_size: int
    pad_id: int
    device: torch.device

    def losses(self, model: torch.nn.Module) -> tuple[float, float]:
        kw = {"batch_size": self.batch_size, "pad_id": self.pad_id}
        return mean_nll(model, self.forget, **kw), mean_nll(model, self.retain, **kw)

    def pairs(self, seed: int) -> Iterator[tuple[Batch, Batch]]:
        gen = torch.Generator().manual_seed(seed)
        return zip(self._stream(self.forget, gen), self._stream(self.retain, gen), strict=True)

    def _stream(self, examples: list[list[int]], gen: torch.Generator) -> Iterator[Batch]:
        while True:
            for group in batches(examples, self.batch_size, gen):
                yield to_device(collate([examples[j] for j in group], self.pad_id), self.device)


@dataclass(frozen=True)
class _Kept:
    """The last measured state that kept utility, and its losses."""

    step: int
    forget: float
    retain: float
    state: dict[str, torch.Tensor]


def unlearn(
    method: str,
    model: torch.nn.Module,
    forget_texts: Sequence[str],
    retain_texts: Sequence[str],
    settings: UnlearnSettings,
    *,
    n_positions: int,
    tokenizer: Tokenizer,
) -> tuple[torch.nn.Module, UnlearnReport]:
    """A copy of ``model`` unlearned with ``method`` (in eval mode), and its report."""
    texts = (forget_texts, retain_texts)
    loss_fn, sets = _prepare(method, model, texts, settings, n_positions, tokenizer)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    student = copy.deepcopy(model)
    start = _Kept(0, *sets.losses(student), _snapshot(student))
    with _seeded(settings.seed, sets.device):
        kept, steps_run, stop = _descend(student, ref, loss_fn, sets, settings, start)
    student.load_state_dict(kept.state)
    student.eval()
    return student, UnlearnReport(
        method=method,
        steps=kept.step,
        steps_run=steps_run,
        forget_loss_before=start.forget,
        forget_loss_after=kept.forget,
        retain_loss_before=start.retain,
        retain_loss_after=kept.retain,
        stopped_because=stop,
        max_weight_change=_max_change(model, student),
    )


def _descend(
    model: torch.nn.Module,
    ref: torch.nn.Module,
    loss_fn: Unlearner,
    sets: _Sets,
    settings: UnlearnSettings,
    start: _Kept,
) -> tuple[_Kept, int, Stop]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    limit = start.retain * (1 + settings.utility_tolerance)
    target = None if settings.forget_target is None else start.forget * settings.forget_target
    kept, pairs = start, sets.pairs(settings.seed)
    model.train()
    for step in range(1, settings.steps + 1):
        forget_batch, retain_batch = next(pairs)
        loss = loss_fn(model, forget_batch, retain_batch, ref, settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % settings.eval_every and step < settings.steps:
            continue
        forget, retain = sets.losses(model)
        if not (math.isfinite(forget) and retain <= limit):  # NaN fails the comparison too
            return kept, step, "utility"
        kept = _Kept(step, forget, retain, _snapshot(model))
        if target is not None and forget >= target:
            return kept, step, "forget_target"
    return kept, settings.steps, "steps"


def _prepare(
    method: str,
    model: torch.nn.Module,
    texts: tuple[Sequence[str], Sequence[str]],
    settings: UnlearnSettings,
    n_positions: int,
    tokenizer: Tokenizer,
) -> tuple[Unlearner, _Sets]:
    """The method's loss and the tokenized sets; one error lists every problem."""
    problems = []
    if method not in UNLEARNERS:
        problems.append(f"method {method!r}: use one of {sorted(UNLEARNERS)}")
    if not isinstance(settings, UnlearnSettings):
        problems.append(f"settings is a {type(settings).__name__}: parse it with parse_settings")
    if n_positions < 2:
        problems.append(f"n_positions={n_positions}: a window needs at least 2 tokens")
    block = max(n_positions, 2)
    forget, retain = (windows(t, tokenizer, block) for t in texts)
    if not forget:
        problems.append("forget_texts is empty: there is nothing to unlearn")
    if not retain:
        problems.append("retain_texts is empty: the utility constraint needs text to keep")
    if problems:
        raise UnlearnSettingsError("cannot unlearn as asked:", problems=problems)
    device = next(model.parameters()).device
    return UNLEARNERS[method], _Sets(forget, retain, settings.batch_size, tokenizer.pad_id, device)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Dropout (if the model has any) draws from ``seed``; the caller's RNG state is restored."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@torch.no_grad()
def _max_change(before: torch.nn.Module, after: torch.nn.Module) -> float:
    """The largest absolute change of any parameter entry."""
    moved = dict(after.named_parameters())
    deltas = [(moved[name] - p).abs().max() for name, p in before.named_parameters()]
    return float(torch.stack(deltas).max()) if deltas else 0.0
