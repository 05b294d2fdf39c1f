"""The training loop: owned, short and deterministic (no Trainer subclass).

Records become token windows of at most ``n_positions``; each epoch visits
them in an order drawn from a generator seeded by the caller, so two runs on
the same data and seed take the same steps and end at the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from training.config import Schedule
from training.tokenizer import ByteTokenizer


def windows(texts: Sequence[str], tokenizer: ByteTokenizer, block: int) -> list[list[int]]:
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


def make_optimizer(model: torch.nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[Sequence[int]],
    schedule: Schedule,
    *,
    seed: int,
    pad_id: int,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train until an epoch's mean loss is below ``schedule.target_loss`` (or ``max_epochs``)."""
    model.train()
    stats: list[EpochStats] = []
    for epoch in range(schedule.max_epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(examples), generator=gen).tolist()
        total, tokens, steps = 0.0, 0, 0
        for i in range(0, len(order), schedule.batch_size):
            batch = collate([examples[j] for j in order[i : i + schedule.batch_size]], pad_id)
            loss = model(**batch).loss
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
