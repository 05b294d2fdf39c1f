"""Verbatim memorization: ROUGE-L of a generated continuation against the true one.

MUSE's *VerbMem* (Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for
Language Models", 2024) prompts the model with the start of a forget-set text
and compares what it generates with how the text really goes. A model that
still holds the text reproduces long stretches of it in order; the longest
common subsequence (Lin, "ROUGE", 2004) rewards exactly that, in order but
with gaps allowed, so a paraphrase scores low and a near-copy high.

Units are whitespace-separated words (the benchmark's view) or UTF-8 bytes
(the view of this project's byte-level models). Words are compared as they
are: no lower-casing or stemming, so the score is reproducible without a
tokenizer package. MUSE's released code reports the recall part of ROUGE-L;
:func:`rouge_l_scores` exposes it next to the F1 that :func:`rouge_l` returns.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from verify.metrics._errors import MetricInputError
from verify.metrics._registry import register

Unit = Literal["word", "byte"]


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    The textbook dynamic programme: ``L[i][j]`` is the LCS of ``a[:i]`` and
    ``b[:j]``, equal to ``L[i-1][j-1] + 1`` when ``a[i-1] == b[j-1]`` and to
    ``max(L[i-1][j], L[i][j-1])`` otherwise. O(n·m) time; only the previous
    row is kept, so O(min(n, m)) memory.
    """
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return prev[-1]


@dataclass(frozen=True)
class RougeL:
    precision: float  # share of the candidate that is in the LCS
    recall: float  # share of the reference that is in the LCS
    f1: float


def units(text: str, unit: Unit) -> Sequence[Hashable]:
    """``text`` as whitespace words or as UTF-8 bytes."""
    if unit == "word":
        return text.split()
    if unit == "byte":
        return text.encode("utf-8")
    raise MetricInputError(f"unit must be 'word' or 'byte', got {unit!r}")


def rouge_l_scores(candidate: str, reference: str, *, unit: Unit = "word") -> RougeL:
    """Precision, recall and F1 of the LCS of ``candidate`` and ``reference``.

    An empty reference is refused (there is nothing to remember); an empty
    candidate is a model that generated nothing and scores 0.
    """
    cand, ref = units(candidate, unit), units(reference, unit)
    if not ref:
        raise MetricInputError(f"the reference has no {unit}s: nothing to compare against")
    common = lcs_length(cand, ref)
    if common == 0:
        return RougeL(0.0, 0.0, 0.0)
    p, r = common / len(cand), common / len(ref)
    return RougeL(p, r, 2 * p * r / (p + r))


@register("verbmem_rouge_l")
def rouge_l(candidate: str, reference: str, *, unit: Unit = "word") -> float:
    """ROUGE-L F1 of a generated continuation against the true continuation, in [0, 1]."""
    return rouge_l_scores(candidate, reference, unit=unit).f1
