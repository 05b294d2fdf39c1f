"""Canary exposure: how far up a model ranks a planted secret among its look-alikes.

Carlini et al., "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks", USENIX Security 2019. A canary (a secret of
a known shape, such as a four-digit locker code) is scored against other
values of the same shape. Its exposure is ``log2 |R| - log2 rank``, in bits:
the canary ranked first among all ``|R|`` candidates has the full ``log2 |R|``;
one ranked last has 0.

Convention: ``|R|`` counts the secret itself, so a secret and 200 alternatives
make ``|R| = 201``; this matches :func:`training.knowledge.canary_exposure`.
Ties are counted against the secret (pessimistic): an alternative that scores
exactly as well is ranked ahead of it, so a model that scores everything alike
shows no exposure, never spurious exposure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from verify.metrics._errors import MetricInputError
from verify.metrics._inputs import scores
from verify.metrics._registry import register


def rank_among(secret_score: float, alternative_scores: Sequence[float]) -> int:
    """1 + the number of alternatives scoring at least as high as the secret (1 = best)."""
    secret = scores([secret_score], what="the secret's score")[0]
    others = scores(alternative_scores, what="alternative scores")
    return 1 + sum(s >= secret for s in others)


@register("exposure")
def exposure(rank: int, space_size: int) -> float:
    """Bits of exposure of a secret ranked ``rank`` among ``space_size`` candidates.

    ``space_size`` is ``|R|`` including the secret; ``rank`` must lie in [1, |R|].
    """
    if isinstance(space_size, bool) or not isinstance(space_size, int) or space_size < 1:
        raise MetricInputError(f"space_size (|R|) must be an integer >= 1, got {space_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= space_size:
        raise MetricInputError(
            f"rank must be an integer in [1, {space_size}] (1 = best), got {rank!r}"
        )
    return math.log2(space_size) - math.log2(rank)


def exposure_from_scores(secret_score: float, alternative_scores: Sequence[float]) -> float:
    """Exposure of a secret given its score and its alternatives' (higher = more likely)."""
    rank = rank_among(secret_score, alternative_scores)
    return exposure(rank, len(alternative_scores) + 1)
