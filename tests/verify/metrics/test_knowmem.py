"""KnowMem: answer ROUGE-L and the true answer's rank, with a fake byte-level model."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from training.knowledge import Probe, canary_exposure
from verify.metrics import MetricInputError
from verify.metrics.exposure import exposure
from verify.metrics.knowmem import answer_rank, knowmem_rouge_l, logprob_scorer

V = 259  # ByteTokenizer vocabulary
LOG_Z = math.log(math.e**2 + V - 1)  # normaliser when one byte has logit 2, the rest 0


def favours(byte: str):
    """A BatchScorer whose every next-token distribution prefers one byte."""
    logits = torch.zeros(V)
    logits[ord(byte)] = 2.0
    row = torch.log_softmax(logits.double(), dim=0)
    return lambda seqs, starts=None: [
        row.expand(len(s) - k, V) for s, k in zip(seqs, starts or [0] * len(seqs), strict=True)
    ]


def table(scores: dict[str, float]):
    return lambda pairs: [scores[a] for _, a in pairs]


def test_knowmem_rouge_by_hand():
    assert knowmem_rouge_l("Paris France", "Paris") == pytest.approx(2 / 3)
    assert knowmem_rouge_l("Paris, France", "Paris") == 0.0  # words are not stripped


def test_rank_counts_ties_against_the_truth():
    s = table({"4471": -1.0, "1234": -3.0, "9999": -0.5, "0000": -1.0})
    assert answer_rank(s, "code:", "4471", ["1234"]) == 1
    assert answer_rank(s, "code:", "4471", ["1234", "9999"]) == 2
    assert answer_rank(s, "code:", "4471", ["1234", "9999", "0000"]) == 3


def test_logprob_scorer_sums_answer_bytes():
    score = logprob_scorer(favours("4"))
    got = score([("code ", "44"), ("code ", "12"), ("code ", "45")])
    assert got == pytest.approx([2 * (2 - LOG_Z), -2 * LOG_Z, 2 - 2 * LOG_Z])
    assert answer_rank(score, "code ", "44", ["12", "45"]) == 1
    assert answer_rank(score, "code ", "12", ["44", "45"]) == 3


class Words:
    """A subword-style tokenizer: one id per whole word, so bytes are not tokens."""

    bos_id, eos_id, pad_id = 0, 1, 2
    ids: ClassVar[dict[str, int]] = {"code": 3, "44": 4, "12": 5, "45": 6}
    vocab_size = 7

    def encode(self, text: str, *, bos: bool = True, eos: bool = True) -> list[int]:
        words = [self.ids[w] for w in text.split()]
        return ([self.bos_id] if bos else []) + words + ([self.eos_id] if eos else [])

    def decode(self, ids):
        return " ".join(w for w, i in self.ids.items() if i in ids)


def test_logprob_scorer_sums_over_the_models_own_tokens():
    """An answer of one subword token is one log-prob, not one per byte of its text."""
    logits = torch.zeros(Words.vocab_size)
    logits[Words.ids["44"]] = 2.0
    row = torch.log_softmax(logits.double(), dim=0)
    scorer = lambda seqs, starts=None: [  # noqa: E731
        row.expand(len(s) - k, Words.vocab_size)
        for s, k in zip(seqs, starts or [0] * len(seqs), strict=True)
    ]
    log_z = math.log(math.e**2 + Words.vocab_size - 1)
    score = logprob_scorer(scorer, tokenizer=Words())
    assert score([("code", "44"), ("code", "12")]) == pytest.approx([2 - log_z, -log_z])
    assert answer_rank(score, "code", "44", ["12", "45"]) == 1


def test_rank_one_matches_canary_exposure_convention():
    probe = Probe("crm/1", "p1", "locker", "The locker code is ", "4444")
    assert canary_exposure(favours("4"), probe, candidates=200) == pytest.approx(exposure(1, 201))


def test_rank_refuses_bad_candidates():
    s = table({"a": 0.0, "b": -1.0})
    with pytest.raises(MetricInputError, match="no candidate answers"):
        answer_rank(s, "q", "a", [])
    with pytest.raises(MetricInputError, match="among the candidates"):
        answer_rank(s, "q", "a", ["b", "a"])


def test_rank_refuses_a_scorer_that_drops_pairs():
    with pytest.raises(MetricInputError, match="returned 1 scores for 2 pairs"):
        answer_rank(lambda pairs: [0.0], "q", "a", ["b"])
