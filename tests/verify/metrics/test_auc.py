"""ROC AUC by hand (ties as ½) and against a pairwise oracle; PrivLeak by hand."""

from __future__ import annotations

import random

import pytest
import torch

from verify.metrics import MetricInputError
from verify.metrics.auc import midranks, privleak, roc_auc


def test_midranks_share_tied_ranks():
    assert midranks([10, 5, 10, 7]) == [3.5, 1.0, 3.5, 2.0]


def test_auc_by_hand_with_a_tie():
    # 6 pairs: 0.9 and 0.8 beat both (4), 0.5 ties 0.5 (½) and beats 0.3 (1) → 5.5/6
    assert roc_auc([0.9, 0.8, 0.5], [0.5, 0.3]) == pytest.approx(11 / 12)


@pytest.mark.parametrize(
    ("members", "nonmembers", "expected"),
    [([3, 4], [1, 2], 1.0), ([1, 2], [3, 4], 0.0), ([1, 1], [1, 1, 1], 0.5), ([2], [1, 3], 0.5)],
)
def test_auc_extremes(members, nonmembers, expected):
    assert roc_auc(members, nonmembers) == expected


def _pairwise(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_oracle():
    rng = random.Random(1)
    for _ in range(100):
        pos = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        neg = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        assert roc_auc(pos, neg) == pytest.approx(_pairwise(pos, neg))


def test_auc_takes_tensors():
    assert roc_auc(torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0.5, 0.3])) == pytest.approx(
        11 / 12
    )


@pytest.mark.parametrize(
    ("members", "nonmembers", "message"),
    [([], [1.0], "member scores are empty"), ([1.0], [float("nan")], "NaN")],
)
def test_auc_refuses_bad_scores(members, nonmembers, message):
    with pytest.raises(MetricInputError, match=message):
        roc_auc(members, nonmembers)


@pytest.mark.parametrize(
    ("auc", "retrain", "expected"), [(0.6, 0.5, 20.0), (0.45, 0.5, -10.0), (0.5, 0.5, 0.0)]
)
def test_privleak_by_hand(auc, retrain, expected):
    assert privleak(auc, retrain) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("auc", "retrain", "message"),
    [(0.5, 0.0, "undefined"), (1.2, 0.5, "auc must be"), (0.5, -0.1, "auc_retrain must be")],
)
def test_privleak_refuses_bad_aucs(auc, retrain, message):
    with pytest.raises(MetricInputError, match=message):
        privleak(auc, retrain)
