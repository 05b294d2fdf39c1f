"""Perplexity pooled over all tokens of all texts."""

from __future__ import annotations

import math

import pytest
import torch

from verify.metrics import MetricInputError
from verify.metrics.utility import perplexity


def test_pooled_perplexity_by_hand():
    # NLL = ln2 + ln2 + 2 ln2 = 4 ln2 over 3 tokens → 2^(4/3); a mean of per-text values differs
    texts = [[math.log(0.5), math.log(0.5)], torch.tensor([math.log(0.25)])]
    assert perplexity(texts) == pytest.approx(2 ** (4 / 3))


def test_uniform_guess_has_perplexity_of_the_vocabulary():
    assert perplexity([[math.log(1 / 259)] * 7]) == pytest.approx(259)


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "no texts"), ([[-1.0], []], "text 1 are empty"), ([[0.5]], "not logits")],
)
def test_bad_inputs_are_refused(texts, message):
    with pytest.raises(MetricInputError, match=message):
        perplexity(texts)
