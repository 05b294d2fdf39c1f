"""Forget quality: KS p-values with exact known answers for small samples."""

from __future__ import annotations

from math import comb

import pytest

from verify.metrics import MetricInputError
from verify.metrics.forget_quality import forget_quality


def test_identical_samples_are_indistinguishable():
    assert forget_quality([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]) == 1.0


def test_separated_samples_by_hand():
    # D = 1 for disjoint samples of n each: exact two-sided p = 2 / C(2n, n)
    assert forget_quality([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1 / 3)
    tested, retrain = list(range(1, 11)), list(range(11, 21))
    p = forget_quality(tested, retrain)
    assert p == pytest.approx(2 / comb(20, 10))
    assert p < 0.05


@pytest.mark.parametrize(
    ("tested", "retrain", "message"),
    [([], [1.0], "tested model's scores are empty"), ([1.0], [float("inf")], "NaN or infinite")],
)
def test_bad_scores_are_refused(tested, retrain, message):
    with pytest.raises(MetricInputError, match=message):
        forget_quality(tested, retrain)
