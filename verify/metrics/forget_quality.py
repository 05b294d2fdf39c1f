"""TOFU's forget quality: is the tested model's behaviour on the forget set
indistinguishable from a model retrained without it?

Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", 2024. Per
forget-set example a score is computed (TOFU uses the truth ratio; any
per-example score works) under the tested model and under the retrain
reference, and the two samples are compared with a two-sample
Kolmogorov–Smirnov test. The p-value is the forget quality: high (towards 1)
means the distributions cannot be told apart; below 0.05 they differ.

For exact unlearning (SISA retraining) the tested model *is* a retrain, so a
low value flags a deletion that did not happen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from verify.metrics._inputs import scores
from verify.metrics._registry import register


@register("forget_quality")
def forget_quality(
    tested: Sequence[float] | torch.Tensor, retrain: Sequence[float] | torch.Tensor
) -> float:
    """Two-sided two-sample KS p-value of the tested vs the retrain per-example scores.

    scipy picks the exact distribution for small samples and the asymptotic one
    for large ones (``method="auto"``).
    """
    from scipy.stats import ks_2samp  # here: about 0.65 s, which most importers never need

    a = scores(tested, what="the tested model's scores")
    b = scores(retrain, what="the retrain reference's scores")
    return float(ks_2samp(a, b).pvalue)
