"""In-context re-introduction: remind the model of a person before asking about them.

Shumailov et al., "UnUnlearning: Unlearning is not sufficient for content
regulation in advanced generative AI" (2024): knowledge removed from the
weights can come back through the prompt, because a model that still knows
*about* a person, or can reason from what the prompt says, uses it in context.
Here the prompt of each measured probe is preceded by ``shots`` other facts of
the same person, so a model that merely learned to avoid the person's name is
reminded of them. The measured fact itself is never given: a shot is never the
probed record, nor any text that contains its answer (case-insensitive). A model
that never saw the person (exact deletion, the retrain reference) has nothing
to recall, whatever the context says.

The result is new :class:`~training.knowledge.Probe` objects with the same
record ids and answers, so the knowledge metrics (exact match, KnowMem rank,
exposure) run on them unchanged. Mind the model's context: a longer prompt is
left-truncated by the scorers, which drops the earliest shots first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from training.knowledge import Probe
from verify.attacks._errors import InContextError

# subject id -> record id -> record text
RecordsBySubject = Mapping[str, Mapping[str, str]]


def incontext_probes(
    probes: Sequence[Probe],
    records_by_subject: RecordsBySubject,
    *,
    shots: int,
    separator: str = " ",
) -> list[Probe]:
    """Each probe, its prompt preceded by ``shots`` other facts of its person (by record id order).

    Raises :class:`InContextError`, listing every probe concerned, when a person
    has fewer than ``shots`` facts that may be shown.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise InContextError(f"shots={shots!r}: use a whole number of facts >= 0")
    context = [allowed_shots(p, records_by_subject) for p in probes]
    short = [(p, len(c)) for p, c in zip(probes, context, strict=True) if len(c) < shots]
    if short:
        most = min(n for _, n in short)
        raise InContextError(
            f"{len(short)} probe(s) have fewer than {shots} other facts of their person that "
            f"may be shown; use shots <= {most}, or give more records",
            problems=[f"{p.record_id} ({p.subject_id}): {n} fact(s)" for p, n in short],
        )
    return [
        dataclasses.replace(p, prompt=separator.join([*c[:shots], p.prompt]))
        for p, c in zip(probes, context, strict=True)
    ]


def allowed_shots(probe: Probe, records_by_subject: RecordsBySubject) -> list[str]:
    """The texts of the probe's person that may precede it, in record id order.

    Not the probed record, and no text that contains the answer anywhere.
    """
    own = records_by_subject.get(probe.subject_id, {})
    answer = probe.answer.casefold()
    return [
        text
        for record_id, text in sorted(own.items())
        if record_id not in (probe.record_id, probe.of) and answer not in text.casefold()
    ]
