"""The one error root of :mod:`verify.metrics`.

A metric that is handed something it cannot score (no tokens, lists of
different lengths, a percentage outside (0, 100], logits where log-probs were
due) refuses loudly: a silently wrong number in an audit is worse than none.
These are bad-input errors (exit code 3), not verification failures.
"""

from __future__ import annotations

from lineage.errors import BadInputError


class MetricInputError(BadInputError):
    """A metric's input is empty, mismatched or out of range; the message says which."""


class DuplicateMetricError(MetricInputError):
    """Two metrics claim one registry name; rename one so configs stay unambiguous."""
