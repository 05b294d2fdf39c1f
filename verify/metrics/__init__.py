"""Verification metrics: pure functions from log-probs, scores and strings to numbers.

Layers: memorization (:mod:`.verbatim`, :mod:`.knowmem`, :mod:`.exposure`),
membership-inference scores (``mia_*``, one method per module, higher = more
likely a member), their aggregation (:mod:`.auc`, :mod:`.forget_quality`) and
utility (:mod:`.utility`). Each metric registers itself in :data:`METRICS`
under the name a config uses; a name is claimed once.
"""

from __future__ import annotations

from verify.metrics import (
    auc,
    exposure,
    forget_quality,
    knowmem,
    mia_loss,
    mia_mink,
    mia_minkpp,
    mia_zlib,
    utility,
    verbatim,
)
from verify.metrics._errors import DuplicateMetricError, MetricInputError
from verify.metrics._registry import METRICS, Metric, register

__all__ = [
    "METRICS",
    "DuplicateMetricError",
    "Metric",
    "MetricInputError",
    "auc",
    "exposure",
    "forget_quality",
    "knowmem",
    "mia_loss",
    "mia_mink",
    "mia_minkpp",
    "mia_zlib",
    "register",
    "utility",
    "verbatim",
]
