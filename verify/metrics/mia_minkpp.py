"""Membership inference by Min-K%++ (Zhang et al., "Min-K%++: Improved Baseline
for Detecting Pre-Training Data from Large Language Models", 2024).

Training pulls each member token towards a local maximum of the model's
likelihood: among all tokens the model could have predicted at that position,
the real one sits high. Min-K%++ therefore standardises each token's log-prob
against the model's own next-token distribution at that position,

    z_t = (log p(x_t) − μ_t) / σ_t,   μ_t = E_{v~p_t}[log p_t(v)],
                                      σ_t² = E_{v~p_t}[(log p_t(v) − μ_t)²],

and averages the lowest ``k`` percent of the ``z_t``. Higher = more likely
member. The expectations are under ``p_t`` itself (as in the paper), not a
plain average over the vocabulary. A flat distribution (σ_t = 0) gives
``z_t = 0``: the token is neither favoured nor disfavoured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from verify.metrics._errors import MetricInputError
from verify.metrics._inputs import lowest_percent
from verify.metrics._registry import register

_NORMALISED = 1e-4  # |logsumexp| of a log_softmax row, allowing float32 rounding
_FLAT = 1e-12  # σ_t² below this is a flat distribution


def _rows(rows: torch.Tensor, targets: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    r = torch.as_tensor(rows, dtype=torch.float64)
    t = torch.as_tensor(targets, dtype=torch.long)
    if r.dim() != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        raise MetricInputError(f"rows must be a non-empty [T, V] tensor, got {tuple(r.shape)}")
    if t.dim() != 1 or t.shape[0] != r.shape[0]:
        raise MetricInputError(f"targets must be T={r.shape[0]} ids, got shape {tuple(t.shape)}")
    if ((t < 0) | (t >= r.shape[1])).any():
        raise MetricInputError(f"target ids must lie in [0, {r.shape[1]}), the vocabulary")
    if not torch.isfinite(r).all():
        raise MetricInputError("rows contain NaN or infinite log-probs")
    worst = float(torch.logsumexp(r, dim=1).abs().max())
    if worst > _NORMALISED:
        raise MetricInputError(
            f"rows are not normalised log-probs (|logsumexp| up to {worst:.3g}): apply log_softmax"
        )
    return r, t


def token_z_scores(rows: torch.Tensor, targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``z_t`` for each position: the target's log-prob standardised under ``p_t``."""
    r, t = _rows(rows, targets)
    p = r.exp()
    mu = (p * r).sum(dim=1)
    var = (p * (r - mu.unsqueeze(1)) ** 2).sum(dim=1)
    chosen = r.gather(1, t.unsqueeze(1)).squeeze(1)
    flat = var < _FLAT
    return torch.where(flat, 0.0, (chosen - mu) / var.clamp_min(_FLAT).sqrt())


@register("mia_min_k_pp")
def min_k_pp_score(
    rows: torch.Tensor, targets: Sequence[int] | torch.Tensor, *, k: float = 20.0
) -> float:
    """Mean of the lowest ``k``% of ``z_t``; higher = more likely member.

    ``rows`` are the next-token log-probs ``[T, V]`` that predict ``targets``
    (``[T]`` token ids), e.g. what :func:`training.knowledge.answer_logprobs`
    returns with the answer's bytes as targets.
    """
    return float(lowest_percent(token_z_scores(rows, targets), k).mean())
