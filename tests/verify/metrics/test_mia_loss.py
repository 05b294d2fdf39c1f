"""Loss MIA score: mean token log-prob, higher for the text the model fits better."""

from __future__ import annotations

import math

import pytest
import torch

from verify.metrics import MetricInputError
from verify.metrics.mia_loss import loss_score

LN2 = math.log(2)


def test_mean_logprob_by_hand():
    assert loss_score([math.log(0.5), math.log(0.25)]) == pytest.approx(-1.5 * LN2)
    assert loss_score(torch.tensor([math.log(0.5), math.log(0.25)])) == pytest.approx(-1.5 * LN2)


def test_better_fit_scores_higher():
    assert loss_score([-0.1, -0.2]) > loss_score([-2.0, -3.0])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "empty"),
        ([[-0.1, -0.2]], "must be 1-D"),
        ([-0.1, float("nan")], "NaN or infinite"),
        ([-0.1, float("-inf")], "NaN or infinite"),
        ([1.5, -0.2], "not logits"),
    ],
)
def test_bad_logprobs_are_refused(bad, message):
    with pytest.raises(MetricInputError, match=message):
        loss_score(bad)
