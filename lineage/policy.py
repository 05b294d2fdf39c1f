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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineage._canonical import file_sha256
from lineage._ids import RAW_ID_FORM, RECORD_ID_FORM, is_raw_id, is_record_id
from lineage._licenses import SPDX_IDS, is_known_license
from lineage._yaml import parse_yaml
from lineage.errors import PolicyFileError
from lineage.sources import ConsentBasis, Registry

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


def _license_problems(key: str, ids, registry: Registry | None) -> list[str]:
    """License ids that are neither SPDX nor ``LicenseRef-*``; with a registry, also the
    ``LicenseRef-*`` ids no registered source declares (a typo there matches nothing)."""
    declared = {s.license for s in registry.sources.values()} if registry else None
    problems = []
    for i, license_id in enumerate(ids):
        if not isinstance(license_id, str) or not is_known_license(license_id):
            problems.append(f"{key}[{i}]: {license_id!r} is not a known license id")
        elif declared is not None and license_id not in SPDX_IDS and license_id not in declared:
            known = ", ".join(sorted(x for x in declared if x not in SPDX_IDS))
            problems.append(
                f"{key}[{i}]: {license_id!r} is declared by no source in the registry "
                f"(its LicenseRef ids: {known})"
            )
    return problems


def reference_problems(policy: GatePolicy, registry: Registry | None = None) -> list[str]:
    """Every license, record or subject the policy names that exante would not recognize.

    An unknown id never matches anything, so a typo would silently change what
    is allowed (``CC-BY-4.O``), empty the base corpus, or deny nobody.
    """
    problems = []
    for purpose, ids in sorted(policy.licenses.items()):
        problems += _license_problems(f"licenses.{purpose}", ids, registry)
    problems += _license_problems("base_corpus.licenses", policy.base_corpus.licenses, registry)
    problems += [
        f"deny.records[{i}]: not a record id ({RECORD_ID_FORM}, no line break)"
        for i, r in enumerate(policy.deny.records)
        if not is_record_id(r)
    ]
    problems += [
        f"deny.subjects[{i}]: not a subject id ({RAW_ID_FORM}, no line break)"
        for i, s in enumerate(policy.deny.subjects)
        if not is_raw_id(s)
    ]
    return problems


def _known_ids_hint() -> str:
    return (
        "known license ids are the SPDX ids "
        + ", ".join(sorted(SPDX_IDS))
        + ", and LicenseRef-<name> for terms declared by a source in data/sources.yaml"
    )


def _load_one(path: Path, registry: Registry | None) -> tuple[GatePolicy | None, list[str]]:
    """The gate policy in ``path`` (None if it is another kind), or its problems."""
    raw, problem = parse_yaml(path)
    if problem is not None:
        return None, [problem]
    if not isinstance(raw, dict) or raw.get("kind") != "gate-policy":
        return None, []  # other policy kinds (e.g. verification thresholds) live here too
    try:
        policy = GatePolicy.model_validate(raw)
    except ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return policy, reference_problems(policy, registry)


def load_policies(
    directory: Path, *, registry: Registry | None = None
) -> dict[str, tuple[GatePolicy, str]]:
    """Every gate policy under ``directory`` by file name, with its file's sha256.

    With ``registry``, a ``LicenseRef-*`` id must be one some source declares.
    """
    out, problems, unknown = {}, [], False
    for path in sorted(Path(directory).glob("*.yaml")):
        policy, found = _load_one(path, registry)
        problems += [f"{path.name}: {p}" for p in found]
        unknown |= any("license id" in p or "declared by no source" in p for p in found)
        if policy is not None and not found:
            out[path.name] = (policy, file_sha256(path))
    if problems:
        hint = f"; {_known_ids_hint()}" if unknown else ""
        raise PolicyFileError(
            f"policies under {directory} are malformed (fix them and run again{hint}):",
            problems=problems,
        )
    if not out:
        raise PolicyFileError(f"no gate policy (kind: gate-policy) under {directory}")
    return out
