"""The one error root of :mod:`verify.attacks`.

An attack that cannot run as asked (an unsupported bit width, a model with
nothing to quantize, relearn texts that hold a measured answer) refuses loudly:
an attack that silently did nothing, or taught what it should recover, would
report a wrong answer about the forgotten data. These are bad-input errors
(exit code 3), not verification failures.
"""

from __future__ import annotations

from lineage.errors import BadInputError


class AttackError(BadInputError):
    """An attack cannot run on this model with these settings; the message says what to change."""


class DuplicateAttackError(AttackError):
    """Two attacks claim one registry name; rename one so configs stay unambiguous."""


class QuantizationSettingsError(AttackError):
    """Unsupported bit width or group size; every problem is listed."""


class NothingToQuantizeError(AttackError):
    """The model has no linear layer (besides its output head) that quantization could change."""


class ForgetSplitError(AttackError):
    """The forget set cannot be split into disjoint relearn and measured parts; problems listed."""


class RelearnLeakError(AttackError):
    """Relearn data share a subject, a record or a measured answer with the measured part.

    Relearning on a measured answer would teach it, not recover it: the attack's
    result would say nothing about what the model kept.
    """


class RelearnSettingsError(AttackError):
    """Bad relearning settings (steps, learning rate, batch size, checkpoints) or no text."""


class InContextError(AttackError):
    """In-context prompts cannot be built: a bad shot count, or too few other facts of a person."""


class ExtractionSettingsError(AttackError):
    """Bad sampling settings, or probes with nothing to extract; every problem is listed."""
