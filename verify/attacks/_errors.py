"""The one error root of :mod:`verify.attacks`.

An attack that cannot run as asked (an unsupported bit width, a model with
nothing to quantize) refuses loudly: an attack that silently did nothing would
report "the forgotten data stayed forgotten" when nothing was tried. These are
bad-input errors (exit code 3), not verification failures.
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
