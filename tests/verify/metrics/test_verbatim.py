"""VerbMem: the LCS against hand-worked cases and a brute-force oracle; ROUGE-L by hand."""

from __future__ import annotations

import itertools
import random

import pytest

from verify.metrics import MetricInputError
from verify.metrics.verbatim import lcs_length, rouge_l, rouge_l_scores


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("ABCBDAB", "BDCABA", 4),  # CLRS: BCBA
        (["the", "cat", "sat", "on", "the", "mat"], ["the", "dog", "sat", "on", "a", "mat"], 4),
        ("abc", "abc", 3),
        ("abc", "xyz", 0),
        ("", "abc", 0),
        ("a", "", 0),
    ],
)
def test_lcs_known_answers(a, b, expected):
    assert lcs_length(a, b) == expected
    assert lcs_length(b, a) == expected


def _brute_lcs(a: str, b: str) -> int:
    def is_subsequence(s, t):
        it = iter(t)
        return all(c in it for c in s)

    for n in range(len(a), 0, -1):
        if any(is_subsequence(c, b) for c in itertools.combinations(a, n)):
            return n
    return 0


def test_lcs_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 8)))
        b = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 8)))
        assert lcs_length(a, b) == _brute_lcs(a, b), (a, b)


def test_rouge_l_words_by_hand():
    # LCS "a c" = 2; P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7
    s = rouge_l_scores("a b c d", "a x c")
    assert (s.precision, s.recall) == pytest.approx((1 / 2, 2 / 3))
    assert s.f1 == pytest.approx(4 / 7)
    assert rouge_l("a b c d", "a x c") == pytest.approx(4 / 7)


def test_rouge_l_identical_and_disjoint():
    assert rouge_l("to be or not", "to be or not") == 1.0
    assert rouge_l("to be", "or not") == 0.0


def test_rouge_l_order_matters():
    assert rouge_l("c b a", "a b c") == pytest.approx(1 / 3)


def test_rouge_l_bytes():
    assert rouge_l("abc", "abd") == 0.0  # one word each, different
    assert rouge_l("abc", "abd", unit="byte") == pytest.approx(2 / 3)
    assert rouge_l("é", "e", unit="byte") == 0.0  # é is two bytes, neither is 'e'


def test_empty_candidate_scores_zero():
    assert rouge_l("", "the true continuation") == 0.0


@pytest.mark.parametrize("reference", ["", "   \n"])
def test_empty_reference_is_refused(reference):
    with pytest.raises(MetricInputError, match="reference has no words"):
        rouge_l("anything", reference)


def test_unknown_unit_is_refused():
    with pytest.raises(MetricInputError, match="unit must be"):
        rouge_l("a", "a", unit="char")
