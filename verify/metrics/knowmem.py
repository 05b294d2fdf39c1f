"""Knowledge memorization on question–answer probes.

MUSE's *KnowMem* (Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for
Language Models", 2024) asks questions whose answers only the forget set holds
and scores the model's answer by ROUGE-L against the true one. Generation can
hide knowledge a model still has (a wrong first token derails the rest), so
this module also ranks the true answer's log-probability among candidate
answers: a model that forgot should not prefer the truth over look-alikes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from training.knowledge import BatchScorer, answer_loglik
from training.tokenizer import ByteTokenizer, Tokenizer
from verify.metrics._errors import MetricInputError
from verify.metrics._registry import register
from verify.metrics.exposure import rank_among
from verify.metrics.verbatim import rouge_l

_BYTES = ByteTokenizer()

# many (prompt, answer) pairs -> one score per pair, higher = more likely
PairScorer = Callable[[Sequence[tuple[str, str]]], Sequence[float]]


@register("knowmem_rouge_l")
def knowmem_rouge_l(answer: str, true_answer: str) -> float:
    """ROUGE-L F1, over words, of the model's answer against the true answer."""
    return rouge_l(answer, true_answer, unit="word")


@register("knowmem_rank")
def answer_rank(score: PairScorer, prompt: str, true_answer: str, candidates: Sequence[str]) -> int:
    """Rank (1 = best) of the true answer's score among the candidates' scores.

    Ties count against the true answer, as in :mod:`verify.metrics.exposure`, so
    a model indifferent between answers gets the worst rank, not the best.
    """
    if not candidates:
        raise MetricInputError("no candidate answers: a rank among nothing says nothing")
    if true_answer in candidates:
        raise MetricInputError(
            f"the true answer {true_answer!r} is among the candidates: it would tie with itself"
        )
    pairs = [(prompt, a) for a in (true_answer, *candidates)]
    got = list(score(pairs))
    if len(got) != len(pairs):
        raise MetricInputError(f"the scorer returned {len(got)} scores for {len(pairs)} pairs")
    return rank_among(got[0], got[1:])


def logprob_scorer(scorer: BatchScorer, *, tokenizer: Tokenizer = _BYTES) -> PairScorer:
    """A :data:`PairScorer`: the answer's summed log-probability over the model's own tokens."""

    def score(pairs: Sequence[tuple[str, str]]) -> list[float]:
        return answer_loglik(scorer, pairs, tokenizer=tokenizer)

    return score
