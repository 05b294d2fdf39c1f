"""The pre-registered verification policy (``policies/verification.yaml``) and its verdicts.

The file is parsed strictly and hashed before any model is scored; the
digest goes into MLflow and the signed report, so a threshold moved after
the fact shows. Each check compares one statistic of a subject with the
retrain reference's under the same attack, in one of four ways:
``max_above`` (subject ≤ reference + margin), ``max_ratio`` (subject ≤
reference × ratio), ``min_ratio`` (subject ≥ reference × ratio), ``max_abs``
(|statistic| ≤ bound, for statistics already relative to the reference) and
``min`` (statistic ≥ bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lineage._canonical import file_sha256
from lineage._yaml import read_yaml
from lineage.errors import BadInputError
from lineage.layout import LAYOUT
from verify.verdicts import KNOWN_CHECKS

POLICY_FILE = LAYOUT.verification_policy


class VerificationPolicyError(BadInputError):
    """policies/verification.yaml is missing or malformed."""


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_above: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    max_abs: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> Check:
        set_ = [k for k, v in self.model_dump().items() if v is not None]
        if len(set_) != 1:
            raise ValueError(f"a check has exactly one rule, got {set_ or 'none'}")
        return self

    @property
    def rule(self) -> tuple[str, float]:
        return next((k, v) for k, v in self.model_dump().items() if v is not None)


class Calibration(BaseModel):
    """How verdicts are calibrated: fixed in the policy, so before any reference exists.

    ``references`` retrain references of different seeds (the reference and
    ``references - 1`` others) give each statistic a null envelope; ``alpha``
    is the significance level, corrected over the judged checks (Bonferroni); ``bootstrap``
    resamples over people give the intervals.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    references: int = Field(ge=2)
    alpha: float = Field(gt=0, lt=1)
    correction: Literal["bonferroni"]
    bootstrap: int = Field(ge=100)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1]
    reference: Literal["retrain"]
    calibration: Calibration
    checks: dict[str, Check]
    notes: list[str] = []

    @model_validator(mode="after")
    def _known_checks(self) -> Policy:
        unknown = sorted(set(self.checks) - KNOWN_CHECKS)
        if unknown:
            raise ValueError(
                f"no metric is behind the check(s) {unknown}: a check must be one of "
                f"{sorted(KNOWN_CHECKS)} (a renamed check would judge nothing)"
            )
        return self


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    sha256: str
    path: str


def load_policy(root: Path, path: Path = POLICY_FILE) -> LoadedPolicy:
    full = Path(root) / path
    if not full.is_file():
        raise VerificationPolicyError(
            f"{path} is missing: the verification thresholds must be registered before a run"
        )
    raw = read_yaml(full, error=VerificationPolicyError)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise VerificationPolicyError(f"{path} is malformed:", problems=problems) from None
    return LoadedPolicy(policy, file_sha256(full), path.as_posix())
