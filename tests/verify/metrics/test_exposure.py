"""Exposure: |R| counts the secret, ties count against it."""

from __future__ import annotations

import math

import pytest

from verify.metrics import MetricInputError
from verify.metrics.exposure import exposure, exposure_from_scores, rank_among


def test_exposure_by_hand():
    assert exposure(1, 201) == pytest.approx(math.log2(201))  # best of 200 alternatives + secret
    assert exposure(201, 201) == 0.0
    assert exposure(2, 8) == pytest.approx(2.0)


def test_rank_counts_ties_against_the_secret():
    assert rank_among(-1.0, [-2.0, -3.0]) == 1
    assert rank_among(-1.0, [-2.0, -1.0, -0.5]) == 3


def test_exposure_from_scores():
    assert exposure_from_scores(0.0, [-1.0] * 200) == pytest.approx(math.log2(201))
    assert exposure_from_scores(0.0, [0.0] * 200) == 0.0  # indifferent model: no exposure
    assert exposure_from_scores(-1.0, [0.0, -2.0, -3.0, -4.0]) == pytest.approx(math.log2(5 / 2))


@pytest.mark.parametrize(
    ("rank", "space", "message"),
    [
        (0, 10, r"rank must be an integer in \[1, 10\]"),
        (11, 10, r"rank must be an integer in \[1, 10\]"),
        (1.0, 10, "rank must be an integer"),
        (1, 0, "space_size"),
    ],
)
def test_bad_rank_or_space_is_refused(rank, space, message):
    with pytest.raises(MetricInputError, match=message):
        exposure(rank, space)


def test_no_alternatives_is_refused():
    with pytest.raises(MetricInputError, match="alternative scores are empty"):
        exposure_from_scores(0.0, [])
