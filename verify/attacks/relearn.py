"""The relearning attack: a few fine-tuning steps on *other* forgotten facts.

Hu et al., "Jogging the Memory of Unlearned LLMs Through Targeted Relearning
Attacks" (2024), and Lynch et al., "Eight Methods to Evaluate Robust Unlearning
in LLMs" (2024): approximate unlearning often hides knowledge instead of
removing it, so fine-tuning on a small slice of the forget set brings back
facts the slice never states. Exact deletion (retraining without the people)
leaves nothing to jog: relearning should lift the measured answers no more than
it lifts them for the retrain reference.

The test is only fair when the slice and the measured facts are disjoint, since
relearning on a measured answer teaches it. :func:`split_forget` splits by data
subject (people who share a record stay together), withholds from relearning
every text that contains a measured answer, and checks its result with
:func:`check_disjoint`, which the verification stage calls again on whatever
texts it relearns on. Answers are compared case-insensitively (stricter), and
error messages name records, never the answers: those are the deleted data.

Not in :data:`~verify.attacks.ATTACKS`: a registered attack maps a model to a
model, while relearning also needs texts chosen per forget set; the stage calls
:func:`relearn_curve` (or :func:`relearn`) with the texts of a :class:`ForgetSplit`.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from training.knowledge import Probe
from training.loop import batches, collate, windows
from training.tokenizer import ByteTokenizer, Tokenizer
from verify.attacks._errors import ForgetSplitError, RelearnLeakError, RelearnSettingsError


@dataclass(frozen=True)
class ForgetSplit:
    """A forget set split by person: relearn on one part, measure the other.

    ``withheld`` are relearn-side probes left out because their text contains a
    measured answer (two people in one city, a birth year inside a phone number).
    """

    relearn: tuple[Probe, ...]
    measured: tuple[Probe, ...]
    withheld: tuple[Probe, ...]

    @property
    def relearn_texts(self) -> tuple[str, ...]:
        return tuple(probe_text(p) for p in self.relearn)


def probe_text(probe: Probe) -> str:
    """The fact as one sentence (prompt + answer): what relearning trains on."""
    return probe.prompt + probe.answer


def split_forget(probes: Sequence[Probe], *, fraction: float = 0.5, seed: int) -> ForgetSplit:
    """About ``fraction`` of the people to relearn on, the rest measured; deterministic in ``seed``.

    The order of ``probes`` does not matter. Raises :class:`ForgetSplitError` when
    no disjoint split is possible this way (one person only, or every relearn
    text holds a measured answer); another ``seed`` or ``fraction`` may help.
    """
    groups = _checked_groups(probes, fraction)
    random.Random(f"split_forget:{seed}").shuffle(groups)
    cut = min(max(round(fraction * len(groups)), 1), len(groups) - 1)
    measured = tuple(sorted((p for g in groups[cut:] for p in g), key=_order))
    answers = [p.answer.casefold() for p in measured]
    candidates = sorted((p for g in groups[:cut] for p in g), key=_order)
    leaks = {p for p in candidates if any(a in probe_text(p).casefold() for a in answers)}
    relearn = tuple(p for p in candidates if p not in leaks)
    if not relearn:
        raise ForgetSplitError(
            f"all {len(candidates)} relearn facts contain a measured answer: nothing is left "
            "to relearn on; try another seed or fraction"
        )
    check_disjoint([probe_text(p) for p in relearn], measured, relearn_probes=relearn)
    return ForgetSplit(relearn, measured, tuple(p for p in candidates if p in leaks))


def _order(probe: Probe) -> tuple[str, str, str, str]:
    return probe.subject_id, probe.record_id, probe.prompt, probe.answer


def _checked_groups(probes: Sequence[Probe], fraction: float) -> list[list[Probe]]:
    """Probes grouped by person, people sharing a record merged; every problem listed."""
    problems = []
    if not 0 < fraction < 1:
        problems.append(f"fraction={fraction!r}: use a share of the people in (0, 1)")
    problems += [
        f"{p.record_id}: empty answer, it would match any text" for p in probes if not p.answer
    ]
    groups = _merged_by_record(probes)
    if len(groups) < 2:
        problems.append(
            f"{len(groups)} person(s) (or groups sharing a record): a split by person needs two"
        )
    if problems:
        raise ForgetSplitError("cannot split the forget set", problems=problems)
    return groups


def _merged_by_record(probes: Sequence[Probe]) -> list[list[Probe]]:
    """Union-find over subjects: two subjects named by one record id end up in one group."""
    parent = {p.subject_id: p.subject_id for p in probes}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    first_subject: dict[str, str] = {}
    for p in probes:
        other = first_subject.setdefault(p.record_id, p.subject_id)
        parent[root(p.subject_id)] = root(other)
    groups: dict[str, list[Probe]] = {}
    for p in probes:
        groups.setdefault(root(p.subject_id), []).append(p)
    return sorted((sorted(g, key=_order) for g in groups.values()), key=lambda g: _order(g[0]))


def check_disjoint(
    relearn_texts: Iterable[str],
    measured_probes: Sequence[Probe],
    *,
    relearn_probes: Sequence[Probe] = (),
) -> None:
    """Refuse relearn data that could teach a measured answer; every leak is listed.

    A leak is a measured answer inside a relearn text (case-insensitive) or, when
    ``relearn_probes`` are given, a person or a record id on both sides.
    """
    texts = [t.casefold() for t in relearn_texts]
    problems = []
    for probe in measured_probes:
        hits = [i for i, t in enumerate(texts) if probe.answer.casefold() in t]
        if hits:
            shown = ", ".join(map(str, hits[:5])) + (", ..." if len(hits) > 5 else "")
            problems.append(f"{probe.record_id}: its answer occurs in relearn text(s) #{shown}")
    for what, key in (("person", "subject_id"), ("record", "record_id")):
        both = {getattr(p, key) for p in relearn_probes} & {
            getattr(p, key) for p in measured_probes
        }
        problems += [f"{what} {v} is on both sides" for v in sorted(both)]
    if problems:
        raise RelearnLeakError(
            "the relearn data overlap the measured probes: relearning would teach what it should "
            "recover; drop those texts or split again with split_forget",
            problems=problems,
        )


def relearn(
    model: torch.nn.Module,
    texts: Sequence[str],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    n_positions: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> torch.nn.Module:
    """A copy of ``model`` fine-tuned for ``steps`` steps on ``texts``; ``model`` unchanged.

    AdamW without weight decay, batches drawn as in training (seeded shuffles,
    length-bucketed), dropout off: the result is a function of the inputs and
    ``seed`` alone (bit for bit on CPU) and no global random state is drawn.
    """
    tokenizer = tokenizer or ByteTokenizer()
    examples = _prepare(model, texts, [steps], lr, batch_size, n_positions, tokenizer)
    *_, (_, tuned) = _tune(model, examples, [steps], lr, batch_size, seed, tokenizer.pad_id)
    return tuned


def relearn_curve(
    model: torch.nn.Module,
    texts: Sequence[str],
    *,
    ks: Sequence[int],
    lr: float,
    batch_size: int,
    seed: int,
    n_positions: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> Iterator[tuple[int, torch.nn.Module]]:
    """``(k, model after k steps)`` for each ``k`` in ascending ``ks``, from one training run.

    The model at ``k`` equals ``relearn(..., steps=k)``; ``k = 0`` yields ``model``
    itself. Each yielded model is a snapshot in eval mode that training no longer
    touches. Settings are checked at the call, before the first step.
    """
    tokenizer = tokenizer or ByteTokenizer()
    examples = _prepare(model, texts, ks, lr, batch_size, n_positions, tokenizer)
    return _curve(model, examples, list(ks), lr, batch_size, seed, tokenizer.pad_id)


def _curve(model, examples, ks, lr, batch_size, seed, pad_id):
    if ks[0] == 0:
        yield 0, model
    positive = [k for k in ks if k > 0]
    if positive:
        for k, tuned in _tune(model, examples, positive, lr, batch_size, seed, pad_id):
            yield k, copy.deepcopy(tuned)


def _tune(model, examples, ks, lr, batch_size, seed, pad_id):
    """Yields ``(k, the live copy)`` after each ``k`` steps; callers snapshot it if they keep it."""
    tuned = copy.deepcopy(model).eval()  # eval: no dropout, so no random state is drawn
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    device = next(tuned.parameters()).device
    stream, done = _batch_stream(examples, batch_size, seed), 0
    for k in ks:
        for group in itertools.islice(stream, k - done):
            batch = collate([examples[j] for j in group], pad_id)
            tuned(**{name: t.to(device) for name, t in batch.items()}).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        done = k
        yield k, tuned


def _batch_stream(examples: list[list[int]], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Batches epoch after epoch, each epoch shuffled as :func:`training.loop.train` does."""
    for epoch in itertools.count():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        yield from batches(examples, batch_size, gen)


def _prepare(model, texts, ks, lr, batch_size, n_positions, tokenizer) -> list[list[int]]:
    """Training windows of ``texts``, after checking every setting (all problems together)."""
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    block = context if n_positions is None else n_positions
    problems = _setting_problems(ks, lr, batch_size)
    if not 2 <= block <= context:
        problems.append(f"n_positions={block}: use 2 to the model's context length {context}")
    examples = windows(list(texts), tokenizer, block) if not problems else []
    if not problems and not examples:
        problems.append(f"{len(texts)} text(s) and none has a byte to train on: give relearn text")
    if problems:
        raise RelearnSettingsError("cannot run the relearning attack", problems=problems)
    return examples


def _setting_problems(ks: Sequence[int], lr: float, batch_size: int) -> list[str]:
    problems = []
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in ks):
        problems.append(f"steps/ks={list(ks)!r}: use whole step counts >= 0")
    elif any(a >= b for a, b in itertools.pairwise(ks)):
        problems.append(f"ks={list(ks)!r}: list step counts in strictly ascending order")
    if (
        isinstance(lr, bool)
        or not isinstance(lr, int | float)
        or not (math.isfinite(lr) and lr > 0)
    ):
        problems.append(f"lr={lr!r}: use a positive learning rate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size={batch_size!r}: use a whole number >= 1")
    return problems
