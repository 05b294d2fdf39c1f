"""Policies as data: ``policies/*.yaml`` with ``kind: gate-policy`` decide what may be trained on.

A policy never runs code. It lists the licenses allowed for each declared
purpose, the lawful bases accepted for personal data, whether text-and-data
mining opt-outs (EU DSM Directive Art. 4(3)) and terms that forbid training
are honoured, whether retention periods are enforced, and a deny list of
records and subjects (fed by the deletion ledger). Every policy file must
allow a record for it to be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineage._canonical import file_sha256
from lineage.errors import PolicyFileError
from lineage.sources import ConsentBasis

Purpose = Literal["research", "commercial"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonalData(_Frozen):
    allowed_bases: tuple[ConsentBasis, ...] = ("consent",)
    require_dp_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="if set, a model trained on personal data must use DP-SGD with ε ≤ this",
    )


class DenyList(_Frozen):
    records: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    ledger: str | None = Field(
        default=None, description="deletion ledger whose records and subjects are denied"
    )


class BaseCorpus(_Frozen):
    """Sources eligible for the shared base model: never deletable by shard retraining.

    Only an allowed source that holds no personal data and whose license is
    listed here may go into the base; every policy must agree.
    """

    licenses: tuple[str, ...] = ()


class GatePolicy(_Frozen):
    schema_version: Literal[1]
    kind: Literal["gate-policy"]
    name: str
    description: str = ""
    licenses: dict[Purpose, tuple[str, ...]]
    personal_data: PersonalData = PersonalData()
    honour_tdm_opt_out: bool = True
    honour_training_prohibitions: bool = True
    enforce_retention: bool = True
    deny: DenyList = DenyList()
    base_corpus: BaseCorpus = BaseCorpus()


def load_policies(directory: Path) -> dict[str, tuple[GatePolicy, str]]:
    """Every gate policy under ``directory`` by file name, with its file's sha256."""
    out, problems = {}, []
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: not valid YAML: {exc}")
            continue
        if not isinstance(raw, dict) or raw.get("kind") != "gate-policy":
            continue  # other policy kinds (e.g. verification thresholds) live here too
        try:
            out[path.name] = (GatePolicy.model_validate(raw), file_sha256(path))
        except ValidationError as exc:
            problems += [
                f"{path.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            ]
    if problems:
        raise PolicyFileError(f"policies under {directory} are malformed:", problems=problems)
    if not out:
        raise PolicyFileError(f"no gate policy (kind: gate-policy) under {directory}")
    return out
