"""Min-K%++ on a hand-made 2-position × 3-token log-prob tensor.

Position 0 has p = (1/2, 1/4, 1/4): μ = E[log p] = −1.5 ln 2 and σ = 0.5 ln 2,
so token 0 has z = +1 and tokens 1, 2 have z = −1. Position 1 has
p = (1/4, 1/4, 1/2): token 2 has z = +1, tokens 0, 1 have z = −1.
"""

from __future__ import annotations

import pytest
import torch

from verify.metrics import MetricInputError
from verify.metrics.mia_minkpp import min_k_pp_score, token_z_scores

ROWS = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]).log()


@pytest.mark.parametrize(
    ("targets", "z"), [([0, 2], [1.0, 1.0]), ([1, 2], [-1.0, 1.0]), ([2, 0], [-1.0, -1.0])]
)
def test_z_scores_by_hand(targets, z):
    assert token_z_scores(ROWS, targets).tolist() == pytest.approx(z)


def test_min_k_pp_by_hand():
    assert min_k_pp_score(ROWS, [1, 2], k=50) == pytest.approx(-1.0)
    assert min_k_pp_score(ROWS, [1, 2], k=100) == pytest.approx(0.0, abs=1e-6)  # float32 rows
    assert min_k_pp_score(ROWS, [0, 2], k=50) == pytest.approx(1.0)


def test_a_flat_distribution_scores_zero():
    flat = torch.full((1, 3), 1 / 3).log()
    assert token_z_scores(flat, [1]).tolist() == [0.0]


def test_logits_are_refused():
    with pytest.raises(MetricInputError, match="apply log_softmax"):
        min_k_pp_score(torch.tensor([[2.0, 1.0, 0.0]]), [0])


@pytest.mark.parametrize(
    ("rows", "targets", "message"),
    [
        (ROWS[0], [0], r"\[T, V\]"),
        (ROWS[:0], [], r"\[T, V\]"),
        (ROWS, [0], "targets must be T=2"),
        (ROWS, [0, 3], r"\[0, 3\)"),
        (ROWS, [-1, 0], r"\[0, 3\)"),
        (torch.tensor([[float("nan"), 0.0]]), [0], "NaN or infinite"),
    ],
)
def test_bad_shapes_and_ids_are_refused(rows, targets, message):
    with pytest.raises(MetricInputError, match=message):
        min_k_pp_score(rows, targets)


def test_k_is_checked():
    with pytest.raises(MetricInputError, match="percentage"):
        min_k_pp_score(ROWS, [0, 2], k=0)
