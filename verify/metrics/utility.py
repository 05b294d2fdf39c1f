"""Utility: perplexity on held text, to check that deletion did not wreck the model.

Perplexity is ``exp`` of the mean token negative log-likelihood, pooled over
every token of every text (not a mean of per-text perplexities, which would
let one short, odd text dominate). Lower is better; a uniform guess over a
vocabulary of ``V`` tokens has perplexity ``V``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from verify.metrics._errors import MetricInputError
from verify.metrics._inputs import LogProbs, token_logprobs
from verify.metrics._registry import register


@register("perplexity")
def perplexity(texts: Sequence[LogProbs]) -> float:
    """``exp(−Σ log p / N)`` over all ``N`` scored tokens of ``texts``, one log-prob list each."""
    if len(texts) == 0:
        raise MetricInputError("no texts given: perplexity needs at least one scored text")
    total, count = 0.0, 0
    for i, lp in enumerate(texts):
        t = token_logprobs(lp, what=f"token log-probs of text {i}")
        total, count = total + float(t.sum()), count + t.numel()
    return math.exp(-total / count)
