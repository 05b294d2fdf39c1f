"""Log-likelihoods of padded batches: padding (labels -100) never counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from training.loop import collate


def sequence_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``log π(y|x)`` per row: the sum of next-token log-probs over non-padding labels."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    scored = labels != -100
    logp = F.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * scored).sum(dim=-1)


def token_count(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scored next-token labels per row (the first token of a row is never predicted)."""
    return (batch["labels"][:, 1:] != -100).sum(dim=-1)


def batch_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token NLL over every scored token of the batch (the training loss)."""
    return -sequence_logprob(model, batch).sum() / token_count(batch).sum()


@torch.no_grad()
def mean_nll(
    model: torch.nn.Module, examples: Sequence[Sequence[int]], *, batch_size: int, pad_id: int
) -> float:
    """Mean token NLL pooled over every scored token of ``examples``, in eval mode, in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = to_device(collate(examples[i : i + batch_size], pad_id), device)
        total -= float(sequence_logprob(model, batch).sum())
        count += int(token_count(batch).sum())
    model.train(was_training)
    return total / count


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}
