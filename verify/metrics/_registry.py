"""Metrics by the name a config uses for them; a name is claimed once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verify._registry import Registry
from verify.metrics._errors import DuplicateMetricError

Metric = Callable[..., Any]
METRICS = Registry("metric", DuplicateMetricError)
register = METRICS.register
