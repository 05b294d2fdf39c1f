"""How well a membership score separates members from non-members, and MUSE's PrivLeak.

The ROC AUC is the probability that a randomly drawn member scores higher than
a randomly drawn non-member, ties counting one half: the Mann–Whitney U
statistic divided by ``n_members · n_nonmembers`` (Hanley & McNeil, "The
meaning and use of the area under a ROC curve", Radiology 1982). 0.5 is a
coin toss. Scores follow the package convention, higher = more likely member.

PrivLeak (Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models", 2024) compares that AUC, forget set against holdout, with the AUC of a
model retrained without the forget set: ``(AUC − AUC_retrain) / AUC_retrain ×
100``. Near 0 is a model that leaks like one that never saw the data; large
positive is under-unlearning, large negative over-unlearning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from verify.metrics._errors import MetricInputError
from verify.metrics._inputs import scores
from verify.metrics._registry import register

Scores = Sequence[float] | torch.Tensor


def midranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values`` in ascending order, tied values sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


@register("auc")
def roc_auc(members: Scores, nonmembers: Scores) -> float:
    """P(member score > non-member score) + ½ P(equal), via rank sums in O(n log n)."""
    pos = scores(members, what="member scores")
    neg = scores(nonmembers, what="non-member scores")
    rank_sum = sum(midranks(pos + neg)[: len(pos)])
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def _auc_value(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise MetricInputError(f"{name} must be an AUC in [0, 1], got {value!r}")
    return float(value)


@register("privleak")
def privleak(auc: float, auc_retrain: float) -> float:
    """``(auc − auc_retrain) / auc_retrain × 100``: leakage relative to a retrained model, in %."""
    tested, reference = _auc_value(auc, "auc"), _auc_value(auc_retrain, "auc_retrain")
    if reference == 0:
        raise MetricInputError("auc_retrain is 0: PrivLeak is undefined (division by zero)")
    return (tested - reference) / reference * 100
