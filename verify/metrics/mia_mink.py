"""Membership inference by Min-K% Prob (Shi et al., "Detecting Pretraining Data
from Large Language Models", ICLR 2024).

A text the model never saw tends to hold a few outlier tokens with very low
probability; a member seldom does. Averaging only the lowest ``k`` percent of
token log-probabilities looks at those outliers and ignores the easy tokens
that dominate a plain mean. Higher score = more likely member (the paper's
code returns the negation, a loss).
"""

from __future__ import annotations

from verify.metrics._inputs import LogProbs, lowest_percent, token_logprobs
from verify.metrics._registry import register


@register("mia_min_k")
def min_k_score(logprobs: LogProbs, *, k: float = 20.0) -> float:
    """Mean of the lowest ``k``% token log-probs (at least one token); higher = member.

    ``k`` is a percentage in (0, 100]; 100 gives back the loss score.
    """
    return float(lowest_percent(token_logprobs(logprobs), k).mean())
