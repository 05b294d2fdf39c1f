"""Unlearning settings, parsed once at the edge into a frozen model; a typo is an error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verify.unlearn._errors import UnlearnSettingsError


class UnlearnSettings(BaseModel):
    """How hard and how long to unlearn, and when to stop.

    The defaults follow the regime the quantization attack targets (Zhang et
    al., ICLR 2025): a small learning rate and a utility constraint, so the
    weights move only slightly. ``utility_tolerance`` bounds the rise of the
    retain-set mean loss as a fraction of the original's; ``forget_target``
    stops the run once the forget-set mean loss has risen to that multiple of
    its original (``None``: run all ``steps`` unless utility stops it first).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-4, gt=0)
    steps: int = Field(60, ge=1, description="most optimizer steps")
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    eval_every: int = Field(5, ge=1, description="steps between forget/retain evaluations")
    retain_weight: float = Field(1.0, ge=0, description="gd, npo_rt: weight of the retain NLL")
    beta: float = Field(0.1, gt=0, description="npo, npo_rt: inverse temperature")
    utility_tolerance: float = Field(0.05, ge=0)
    forget_target: float | None = Field(3.0, gt=1)


def parse_settings(raw: Mapping[str, Any]) -> UnlearnSettings:
    """``raw`` (e.g. a ``params.yaml`` section) as settings; one error lists every problem."""
    try:
        return UnlearnSettings.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise UnlearnSettingsError("unlearning settings are invalid:", problems=problems) from None
