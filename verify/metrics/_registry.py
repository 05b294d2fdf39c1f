"""Metrics by the name a config uses for them; a name is claimed once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from verify.metrics._errors import DuplicateMetricError

Metric = Callable[..., Any]
METRICS: dict[str, Metric] = {}

_F = TypeVar("_F", bound=Metric)


def register(name: str) -> Callable[[_F], _F]:
    """Record a metric under ``name``; a second claim on a name raises, it never overwrites."""

    def claim(fn: _F) -> _F:
        if name in METRICS:
            held = METRICS[name]
            raise DuplicateMetricError(
                f"metric name {name!r} is already registered by "
                f"{held.__module__}.{held.__qualname__}: choose another name"
            )
        METRICS[name] = fn
        return fn

    return claim
