"""Checks shared by the metrics: turn plain inputs into validated tensors or floats."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from verify.metrics._errors import MetricInputError

LogProbs = torch.Tensor | Sequence[float]
# log p may come out a hair above 0 from floating-point rounding of a near-certain token
_LOGPROB_SLACK = 1e-5


def token_logprobs(values: LogProbs, *, what: str = "token log-probs") -> torch.Tensor:
    """A non-empty 1-D float64 tensor of finite log-probabilities (each <= 0)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if t.dim() != 1:
        raise MetricInputError(f"{what} must be 1-D (one per token), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise MetricInputError(f"{what} are empty: score at least one token")
    if not torch.isfinite(t).all():
        raise MetricInputError(f"{what} contain NaN or infinite values")
    if (t > _LOGPROB_SLACK).any():
        raise MetricInputError(
            f"{what} contain positive values (max {float(t.max()):.4g}): "
            "pass log-probabilities (log_softmax), not logits or probabilities"
        )
    return t


def scores(values: Sequence[float] | torch.Tensor, *, what: str) -> list[float]:
    """A non-empty list of finite floats (NaN would make every comparison false)."""
    out = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).reshape(-1)]
    if not out:
        raise MetricInputError(f"{what} are empty: at least one score is needed")
    if not all(math.isfinite(v) for v in out):
        raise MetricInputError(f"{what} contain NaN or infinite values")
    return out


def lowest_percent(values: torch.Tensor, k: float) -> torch.Tensor:
    """The ``max(1, floor(n·k/100))`` smallest values, for ``k`` in (0, 100].

    At least one value is kept so short texts still get a score (the floor alone
    gives none below 100/k tokens); this matches open-unlearning's Min-K%.
    """
    if isinstance(k, bool) or not (isinstance(k, int | float) and 0 < k <= 100):
        raise MetricInputError(f"k is a percentage in (0, 100], got {k!r}")
    count = max(1, math.floor(values.numel() * k / 100))
    return torch.sort(values).values[:count]
