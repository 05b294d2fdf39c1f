"""zlib MIA score: loss over compressed length, negated so higher = member."""

from __future__ import annotations

import math
import zlib

import pytest

from verify.metrics import MetricInputError
from verify.metrics.mia_zlib import zlib_entropy, zlib_score


def test_zlib_entropy_of_one_byte():
    # 2-byte header + 3-byte fixed-Huffman block + 4-byte Adler-32
    assert zlib_entropy("a") == 9
    assert zlib_entropy("a") == len(zlib.compress(b"a"))


def test_score_by_hand():
    assert zlib_score([math.log(0.5)], "a") == pytest.approx(-math.log(2) / 9)


def test_less_compressible_text_discounts_the_same_loss():
    lp = [-2.0, -2.0]
    repetitive, varied = "ab" * 40, "the quick brown fox jumps over the lazy dog, twice!"
    assert zlib_entropy(varied) > zlib_entropy(repetitive)
    assert zlib_score(lp, varied) > zlib_score(lp, repetitive)


def test_empty_text_and_empty_logprobs_are_refused():
    with pytest.raises(MetricInputError, match="text is empty"):
        zlib_score([-1.0], "")
    with pytest.raises(MetricInputError, match="empty"):
        zlib_score([], "a")
