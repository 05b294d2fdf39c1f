"""The training loop: owned, short and deterministic (no Trainer subclass).

Records become token windows of at most ``n_positions``; each epoch visits
them in an order drawn from a generator seeded by the caller, so two runs on
the same data and seed take the same steps and end at the same bits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from training.config import Schedule
from training.tokenizer import Tokenizer


def windows(texts: Sequence[str], tokenizer: Tokenizer, block: int) -> list[list[int]]:
    out = []
    for text in texts:
        ids = tokenizer.encode(text)
        out += [ids[i : i + block] for i in range(0, max(len(ids) - 1, 1), block)]
    return [w for w in out if len(w) > 1]


def collate(batch: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded inputs; labels are -100 at padding so it costs nothing."""
    n = max(len(x) for x in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    positions = torch.arange(n).unsqueeze(0).expand(len(batch), n)  # explicit: Opacus needs it
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions}


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    steps: int
    tokens: int


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on CPU nothing changes (float32, deterministic kernels)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    """AdamW over the trainable weights (all of a full model; a LoRA adapter's alone)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)


def batches(
    examples: Sequence[Sequence[int]], batch_size: int, gen: torch.Generator, *, pool: int = 8
) -> list[list[int]]:
    """One epoch's batches: shuffled, then length-bucketed within pools of ``pool`` batches.

    Short facts and long passages padded into one batch waste most of its
    compute; sorting each pool by length keeps batches homogeneous while the
    seeded shuffles (of examples, then of batches) keep the epoch random and
    repeatable.
    """
    order = torch.randperm(len(examples), generator=gen).tolist()
    size = batch_size * pool
    out = []
    for i in range(0, len(order), size):
        chunk = sorted(order[i : i + size], key=lambda j: len(examples[j]))
        out += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [out[k] for k in torch.randperm(len(out), generator=gen).tolist()]


def steps_per_epoch(n: int, batch_size: int, *, pool: int = 8) -> int:
    """How many batches :func:`batches` makes of ``n`` examples (whatever their order)."""
    full, rest = divmod(n, batch_size * pool)
    return full * pool + -(-rest // batch_size)


def epoch_lr(schedule: Schedule, epoch: int) -> float:
    """The learning rate of one epoch: constant, or cosine from ``lr`` to ``lr_floor × lr``."""
    if schedule.lr_decay == "none" or schedule.max_epochs == 1:
        return schedule.lr
    progress = epoch / (schedule.max_epochs - 1)
    scale = schedule.lr_floor + (1 - schedule.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return schedule.lr * scale


def replayed(
    earlier: Sequence[Sequence[int]], fraction: float | None, gen: torch.Generator
) -> list[Sequence[int]]:
    """One epoch's rehearsal: ``round(fraction × len(earlier))`` windows, without replacement.

    Drawn from the epoch's seeded generator, so the sample depends only on the
    seed, the epoch and the windows; nothing is drawn when there is nothing to draw.
    """
    k = round((fraction or 0.0) * len(earlier))
    if k == 0:
        return []
    return [earlier[i] for i in torch.randperm(len(earlier), generator=gen)[:k].tolist()]


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[Sequence[int]],
    schedule: Schedule,
    *,
    seed: int,
    pad_id: int,
    replay: Sequence[Sequence[int]] = (),
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train until an epoch's mean loss is below ``schedule.target_loss`` (or ``max_epochs``).

    With ``replay`` windows and ``schedule.replay`` set, each epoch also trains on
    a sample of them drawn with that epoch's generator (see :func:`replayed`).
    """
    model.train()
    device = next(model.parameters()).device
    stats: list[EpochStats] = []
    for epoch in range(schedule.max_epochs):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(schedule, epoch)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        epoch_examples = list(examples) + replayed(replay, schedule.replay, gen)
        total, tokens, steps = 0.0, 0, 0
        for group in batches(epoch_examples, schedule.batch_size, gen):
            batch = collate([epoch_examples[j] for j in group], pad_id)
            with autocast(device):
                loss = model(**{k: t.to(device) for k, t in batch.items()}).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = int((batch["labels"][:, 1:] != -100).sum())
            total, tokens, steps = total + loss.item() * n, tokens + n, steps + 1
        stats.append(EpochStats(epoch, total / max(tokens, 1), steps, tokens))
        if on_epoch:
            on_epoch(stats[-1])
        if epoch + 1 >= schedule.min_epochs and stats[-1].loss < schedule.target_loss:
            break
    model.eval()
    return stats
