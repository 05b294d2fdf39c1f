"""The source registry (``data/sources.yaml``): where every record comes from, under which terms.

Parsed once, at the edge, into frozen models; unknown keys are errors, and
every problem in the file is reported at once.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lineage._ids import SOURCE_ID_FORM, is_source_id
from lineage._licenses import is_known_license
from lineage._yaml import read_yaml
from lineage.errors import MissingSourceFileError, SourceRegistryError, UnknownLicenseError

SCHEMA_VERSION = 1
ConsentBasis = Literal[
    "consent",  # GDPR Art. 6(1)(a)
    "contract",  # 6(1)(b)
    "legal_obligation",  # 6(1)(c)
    "vital_interests",  # 6(1)(d)
    "public_task",  # 6(1)(e)
    "legitimate_interests",  # 6(1)(f)
    "none",
]
_DURATION = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?")  # always fullmatch


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Terms(_Frozen):
    """A source's terms of service, summarized for a human, and the one bit the gate needs."""

    summary: str = Field(min_length=1)
    permits_ml_training: bool
    url: str | None = None


class Acquisition(_Frozen):
    date: date
    method: str = Field(min_length=1)


class Source(_Frozen):
    """One source of training records and the terms it came with."""

    id: str
    description: str = Field(min_length=1)
    location: str = Field(min_length=1)
    format: Literal["jsonl", "text"] = "jsonl"
    license: str
    terms: Terms
    consent_basis: ConsentBasis
    contains_personal_data: bool
    tdm_opt_out: bool
    tdm_opt_out_evidence: str | None = None
    acquired: Acquisition
    jurisdiction: str = Field(min_length=2)
    retention: str = Field(description="ISO 8601 duration such as P5Y, or 'indefinite'")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not is_source_id(v):
            raise ValueError(f"a source id is {SOURCE_ID_FORM}, with no line break")
        return v

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if v != "indefinite" and not (_DURATION.fullmatch(v) and v != "P"):
            raise ValueError("must be an ISO 8601 duration (P5Y, P18M, P30D) or 'indefinite'")
        return v

    @model_validator(mode="after")
    def _expiry_is_a_date(self) -> Source:
        try:
            self.retention_expires()
        except (ValueError, OverflowError):
            raise ValueError(f"retention {self.retention} ends after the year 9999") from None
        return self

    def retention_expires(self) -> date | None:
        """The last day records of this source may be kept, or None if indefinite."""
        if self.retention == "indefinite":
            return None
        years, months, days = (int(g or 0) for g in _DURATION.fullmatch(self.retention).groups())
        d = self.acquired.date
        month = d.month - 1 + months + 12 * years
        y, m = d.year + month // 12, month % 12 + 1
        day = min(d.day, calendar.monthrange(y, m)[1])  # Jan 31 + P1M: the end of February
        return date(y, m, day) + timedelta(days=days)

    def path(self, root: Path) -> Path:
        return Path(root) / self.location


class Registry(_Frozen):
    schema_version: Literal[1]
    sources: dict[str, Source]

    def get(self, source_id: str) -> Source:
        try:
            return self.sources[source_id]
        except KeyError:
            known = ", ".join(sorted(self.sources))
            raise SourceRegistryError(f"no source {source_id!r} (known: {known})") from None


def _problems(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


def load_registry(path: Path) -> Registry:
    """Parse ``sources.yaml``; raise one error listing every problem found."""
    path = Path(path)
    try:
        raw = read_yaml(path, error=SourceRegistryError)
    except FileNotFoundError:
        raise SourceRegistryError(f"{path} does not exist") from None
    if isinstance(raw, dict) and isinstance(raw.get("sources"), dict):
        for key, value in raw["sources"].items():
            if isinstance(value, dict):
                value.setdefault("id", key)
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        raise SourceRegistryError(f"{path} is malformed:", problems=_problems(exc)) from None
    mismatched = [f"sources.{k}: id is {s.id!r}" for k, s in registry.sources.items() if s.id != k]
    if mismatched:
        raise SourceRegistryError(f"{path}: each source's id must be its key", problems=mismatched)
    unknown = [
        f"{s.id}: {s.license!r}"
        for s in registry.sources.values()
        if not is_known_license(s.license)
    ]
    if unknown:
        raise UnknownLicenseError(
            f"{path}: unknown license ids (use an SPDX id, or LicenseRef-<name> for custom terms)",
            problems=unknown,
        )
    return registry


def check_locations(registry: Registry, root: Path, only: str | None = None) -> None:
    """Every source (or just ``only``) must point at an existing file."""
    sources = [registry.get(only)] if only else registry.sources.values()
    missing = [f"{s.id}: {s.location}" for s in sources if not s.path(root).is_file()]
    if missing:
        raise MissingSourceFileError("source files are missing:", problems=missing)


def source_terms(source: Source) -> dict:
    """The JSON form of a source, as it is embedded in a signed manifest."""
    return source.model_dump(mode="json")
