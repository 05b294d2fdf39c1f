"""Membership inference by loss (Yeom et al., "Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting", IEEE CSF 2018).

A model fits the texts it trained on better than texts it never saw, so a low
mean token negative log-likelihood suggests a member. Every MIA score in this
package follows one convention: **higher score = more likely a member**. Here
that is the negated mean NLL, i.e. the mean token log-probability.
"""

from __future__ import annotations

from verify.metrics._inputs import LogProbs, token_logprobs
from verify.metrics._registry import register


@register("mia_loss")
def loss_score(logprobs: LogProbs) -> float:
    """Mean log-probability of the text's tokens (= −mean NLL); higher = more likely member."""
    return float(token_logprobs(logprobs).mean())
