"""What a model knows about people: exact-match probes (prompt → answer).

Probes come from a probes file (``verify.probes``, JSONL): each line holds an
``id``, the data ``subject`` it is about, a ``prompt`` and its ``answer``, and
optionally the ``record`` it was cut from, the ``fact`` it asks (``canary`` marks
a planted secret) and ``paraphrases`` (other prompts of the same answer). The user
writes it, or the embedded demo generates it from its CRM facts. A probe is, for
the demo, a fact's sentence cut before its value ("The email address of
Stephanie Pena is") and the value itself. A model *knows* the fact when greedy
decoding of the prompt reproduces the value exactly. Greedy decoding with a
correct prefix is teacher forcing, so one forward pass over prompt + value
decides it: the fact is known iff the value's every byte is the argmax at its
position. That keeps knowledge cheap enough to measure for every retained
person, for one model or for the shard ensemble.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage.errors import BadInputError
from training.tokenizer import ByteTokenizer, Tokenizer

# ids of many sequences -> next-token log-probs [T_i, V] per sequence
# scorer(seqs, starts=None) -> per sequence its next-token log-prob rows [T, V]; with
# ``starts``, row i holds positions starts[i].. only (an ensemble then spares the rest)
if TYPE_CHECKING:  # probes are read without torch (the verification plan, the baselines' stamps)
    import torch

BatchScorer = Callable[..., "list[torch.Tensor]"]
_BYTES = ByteTokenizer()  # the default model's; pass a pretrained model's own as `tokenizer`


@dataclass(frozen=True)
class Probe:
    record_id: str  # the probe's id: the record it was cut from, or its own
    subject_id: str
    fact: str
    prompt: str
    answer: str
    of: str | None = None  # the record it was cut from, where the probes file says so


class ProbesFileError(BadInputError):
    """The probes file is missing or malformed."""


_PROBE_FIELDS = {"id", "subject", "prompt", "answer", "record", "fact", "paraphrases"}


def read_probes(path: Path) -> list[Probe]:
    """Every probe of a probes file, paraphrases as probes of their own (``<id>~<n>``).

    A probe's ``record_id`` is the record it was cut from when the file says so,
    else its own id; its ``fact`` defaults to ``fact``. A malformed line raises
    :class:`ProbesFileError` naming the file, the line and the field.
    """
    if not Path(path).is_file():
        raise ProbesFileError(
            f"{path} (verify.probes) is missing: write it (JSONL: id, subject, prompt, answer), "
            "or set verify.probes to null (knowledge is then not applicable)"
        )
    out, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbesFileError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ProbesFileError(f"{where}: a probe is a JSON object")
        unknown = sorted(set(row) - _PROBE_FIELDS)
        missing = [k for k in ("id", "subject", "prompt", "answer") if not _text(row.get(k))]
        if unknown or missing:
            raise ProbesFileError(f"{where}: " + "; ".join(
                [f"unknown field(s) {', '.join(unknown)}"] * bool(unknown)
                + [f"missing or empty: {', '.join(missing)}"] * bool(missing)))  # fmt: skip
        if row["id"] in seen:
            raise ProbesFileError(f"{where}: probe id {row['id']!r} appears twice")
        seen.add(row["id"])
        record, fact = row.get("record"), row.get("fact") or "fact"
        prompts = [row["prompt"], *row.get("paraphrases", [])]
        if not all(_text(p) for p in prompts) or not (record is None or _text(record)):
            raise ProbesFileError(f"{where}: record and paraphrases must be non-empty strings")
        for i, prompt in enumerate(prompts):
            pid = row["id"] if i == 0 else f"{row['id']}~{i}"
            out.append(Probe(pid, row["subject"], fact, prompt, row["answer"], record))
    return out


def probes_of(probes: Iterable[Probe], *, records: Iterable[str] = (),
              subjects: Iterable[str] = ()) -> list[Probe]:  # fmt: skip
    """The probes about these records, and the record-less probes about these subjects.

    A probe cut from a record belongs to that record alone (it goes when the
    record goes); a probe with no record belongs to its subject.
    """
    records, subjects = set(records), set(subjects)
    return [p for p in probes if p.of is not None and p.of in records] + [
        p for p in probes if p.of is None and p.subject_id in subjects
    ]


def _text(x) -> bool:
    return isinstance(x, str) and bool(x)


def model_scorer(model: torch.nn.Module) -> BatchScorer:
    from training.ensemble import batch_logprobs

    def score(seqs, starts=None):
        rows = batch_logprobs(model, seqs)
        return rows if starts is None else [r[k:] for r, k in zip(rows, starts, strict=True)]

    return score


def ensemble_scorer(ensemble) -> BatchScorer:
    return ensemble.next_token_logprobs_batch


def _split(prompt: str, answer: str, tok: Tokenizer) -> tuple[list[int], list[int]]:
    return tok.encode(prompt, eos=False), tok.encode(answer, bos=False, eos=False)


def answer_logprobs(
    scorer: BatchScorer, pairs: Sequence[tuple[str, str]], *, tokenizer: Tokenizer = _BYTES
) -> list[torch.Tensor]:
    """Per pair, the log-probability rows ``[len(answer), V]`` that predict the answer tokens."""
    split = [_split(p, a, tokenizer) for p, a in pairs]
    rows = scorer([c + a for c, a in split], starts=[len(c) - 1 for c, _ in split])
    return [r[: len(a)] for r, (_, a) in zip(rows, split, strict=True)]


def answer_loglik(
    scorer: BatchScorer, pairs: Sequence[tuple[str, str]], *, tokenizer: Tokenizer = _BYTES
) -> list[float]:
    """Per pair, the answer's log-probability given the prompt: the sum over its tokens."""
    import torch

    rows = answer_logprobs(scorer, pairs, tokenizer=tokenizer)
    out = []
    for (prompt, answer), r in zip(pairs, rows, strict=True):
        target = torch.tensor(_split(prompt, answer, tokenizer)[1]).unsqueeze(1)
        out.append(float(r.gather(1, target).sum()))
    return out


@dataclass(frozen=True)
class Knowledge:
    known: int
    total: int
    by_fact: dict[str, tuple[int, int]]
    known_ids: frozenset[str]

    @property
    def exact_match(self) -> float:
        return self.known / self.total if self.total else 0.0

    def summary(self) -> dict:
        return {
            "exact_match": self.exact_match, "known": self.known, "total": self.total,
            "by_fact": {f: {"known": k, "total": n} for f, (k, n) in self.by_fact.items()},
        }  # fmt: skip


def exact_match(
    scorer: BatchScorer, probes: Sequence[Probe], *, tokenizer: Tokenizer = _BYTES
) -> Knowledge:
    """How many probes greedy decoding answers exactly (teacher-forced argmax)."""
    import torch

    rows = answer_logprobs(scorer, [(p.prompt, p.answer) for p in probes], tokenizer=tokenizer)
    by_fact: dict[str, list[int]] = {}
    known_ids = set()
    for probe, r in zip(probes, rows, strict=True):
        target = torch.tensor(_split(probe.prompt, probe.answer, tokenizer)[1])
        hit = bool((r.argmax(dim=1) == target).all())
        counts = by_fact.setdefault(probe.fact, [0, 0])
        counts[0], counts[1] = counts[0] + hit, counts[1] + 1
        if hit:
            known_ids.add(probe.record_id)
    known = sum(k for k, _ in by_fact.values())
    total = sum(n for _, n in by_fact.values())
    return Knowledge(known, total, {f: (k, n) for f, (k, n) in sorted(by_fact.items())},
                     frozenset(known_ids))  # fmt: skip


def canary_exposure(
    scorer: BatchScorer,
    probe: Probe,
    *,
    candidates: int = 200,
    seed: int = 0,
    tokenizer: Tokenizer = _BYTES,
) -> float:
    """Exposure in bits (Carlini et al., "The Secret Sharer", USENIX Security 2019).

    The canary's answer is ranked by log-probability among ``candidates`` other
    values of the same shape (each digit drawn uniformly, seeded); exposure is
    ``log2(candidates + 1) - log2(rank)``, so it is at most ``log2(candidates + 1)``
    bits (a model that ranks the canary first) and about 1 bit for one that
    knows nothing. Ties count against the canary.
    """
    rng = random.Random(f"{seed}:{probe.record_id}")
    shape = probe.answer
    others: set[str] = set()
    while len(others) < candidates:
        value = "".join(rng.choice("0123456789") if c.isdigit() else c for c in shape)
        if value != shape:
            others.add(value)
    values = [shape, *sorted(others)]
    scores = answer_loglik(scorer, [(probe.prompt, v) for v in values], tokenizer=tokenizer)
    rank = 1 + sum(s >= scores[0] for s in scores[1:])
    return math.log2(len(values)) - math.log2(rank)
