"""Min-K% Prob on a hand-made list of token log-probs."""

from __future__ import annotations

import pytest
import torch

from verify.metrics import MetricInputError
from verify.metrics.mia_loss import loss_score
from verify.metrics.mia_mink import min_k_score

LP = torch.tensor([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (20, -4.0),  # two lowest: -5, -3
        (30, (-5.0 - 3.0 - 0.8) / 3),
        (10, -5.0),
        (5, -5.0),  # floor(0.5) = 0, but at least one token is kept
        (100, float(LP.mean())),
    ],
)
def test_min_k_by_hand(k, expected):
    assert min_k_score(LP, k=k) == pytest.approx(expected)


def test_min_k_100_is_the_loss_score():
    assert min_k_score(LP, k=100) == pytest.approx(loss_score(LP))


def test_default_k_is_20_percent():
    assert min_k_score(LP) == pytest.approx(-4.0)


@pytest.mark.parametrize("k", [0, -1, 100.5, float("nan"), True, "20"])
def test_k_outside_0_100_is_refused(k):
    with pytest.raises(MetricInputError, match=r"percentage in \(0, 100\]"):
        min_k_score(LP, k=k)


def test_empty_logprobs_are_refused():
    with pytest.raises(MetricInputError, match="empty"):
        min_k_score([], k=20)
