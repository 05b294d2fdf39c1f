"""Membership inference by loss relative to zlib entropy (Carlini et al.,
"Extracting Training Data from Large Language Models", USENIX Security 2021).

Repetitive text ("1 2 3 4 ...") has a low loss under any model, member or not.
Dividing the model's log-perplexity (mean token NLL) by the text's zlib-
compressed length in bytes, a model-free measure of how surprising the text
is, discounts that: only text the model finds much easier than zlib does
stands out. Higher score = more likely member, so the ratio is negated.
"""

from __future__ import annotations

import zlib

from verify.metrics._errors import MetricInputError
from verify.metrics._inputs import LogProbs, token_logprobs
from verify.metrics._registry import register


def zlib_entropy(text: str) -> int:
    """Bytes of the UTF-8 text after zlib compression at the default level."""
    if not text:
        raise MetricInputError("the text is empty: zlib entropy needs at least one character")
    return len(zlib.compress(text.encode("utf-8")))


@register("mia_zlib")
def zlib_score(logprobs: LogProbs, text: str) -> float:
    """``−mean NLL / zlib_entropy(text)``; higher = more likely member."""
    mean_nll = -float(token_logprobs(logprobs).mean())
    return -mean_nll / zlib_entropy(text)
