"""The one error root of :mod:`verify.unlearn`.

An unlearning run that cannot go as asked (an unknown method, a learning rate
that is not positive, a forget set with nothing in it) refuses loudly: a run
that silently did nothing would be reported as an "unlearned" model that is the
original. These are bad-input errors (exit code 3), not verification failures.
"""

from __future__ import annotations

from lineage.errors import BadInputError


class UnlearnError(BadInputError):
    """Unlearning cannot run as asked; the message says what to change."""


class DuplicateUnlearnerError(UnlearnError):
    """Two unlearning methods claim one registry name; rename one so configs stay unambiguous."""


class UnlearnSettingsError(UnlearnError):
    """Settings out of range, an unknown method, or texts with nothing to train on; all listed."""
