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
_READ_OPTION_FORMATS = {
    "pattern": ("dir", "hf"),
    "records": ("dir",),
    "split": ("hf",),
    "delimiter": ("csv",),
}
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


Format = Literal["jsonl", "text", "parquet", "csv", "dir", "hf"]
TABULAR = frozenset({"parquet", "csv", "hf"})  # no column names exante could assume; read in Arrow
_TERMS_FIELDS = ("license", "consent_basis", "tdm_opt_out", "retention_start")


class Fields(_Frozen):
    """Which raw column becomes which part of a record; a column not named here is never read.

    The id is a column (``id``) or derived (``id_from``): the digest of the named
    columns' values, so it stays the same when rows are reordered or other rows
    change. The terms columns, where a row holds a value, apply to that record
    (a null keeps the source's). ``record_terms`` says how: ``narrow`` (the
    default) judges the record under the source's terms AND its own, so an
    unsigned raw column can only refuse more; ``override`` lets the record's
    own terms replace the source's — a choice made here, in the registry the
    manifest signs, never by the data.
    """

    id: str | None = Field(default=None, min_length=1)
    id_from: tuple[str, ...] | None = Field(default=None, min_length=1)
    text: str = Field(default="text", min_length=1)
    subjects: str | None = Field(default=None, min_length=1)
    license: str | None = Field(default=None, min_length=1)
    consent_basis: str | None = Field(default=None, min_length=1)
    tdm_opt_out: str | None = Field(default=None, min_length=1)
    retention_start: str | None = Field(default=None, min_length=1)
    record_terms: Literal["narrow", "override"] = "narrow"

    @model_validator(mode="after")
    def _one_id(self) -> Fields:
        if (self.id is None) == (self.id_from is None):
            raise ValueError(
                "name the record id with exactly one of 'id' (a column) or "
                "'id_from' (columns whose digest names the record)"
            )
        return self

    def columns(self) -> tuple[str, ...]:
        """Every raw column this mapping reads, each once, in a fixed order."""
        named = [self.id, *(self.id_from or ()), self.text, self.subjects]
        named += [getattr(self, f) for f in _TERMS_FIELDS]
        return tuple(dict.fromkeys(c for c in named if c is not None))

    def terms_columns(self) -> dict[str, str]:
        """Record terms field → the column that holds it, for the mapped ones."""
        return {f: getattr(self, f) for f in _TERMS_FIELDS if getattr(self, f) is not None}


class ReadOptions(_Frozen):
    """How to read a source's location, where the format needs more than a path."""

    pattern: str | None = Field(default=None, min_length=1, description="glob under location")
    records: Literal["file", "block"] = "file"  # dir: one record per file or per blank-line block
    split: str | None = Field(default=None, min_length=1)  # hf: which split of a DatasetDict
    delimiter: str = Field(default=",", min_length=1, max_length=1)  # csv


class Source(_Frozen):
    """One source of training records and the terms it came with."""

    id: str
    description: str = Field(min_length=1)
    location: str = Field(min_length=1)
    format: Format = "jsonl"
    fields: Fields | None = None
    read: ReadOptions | None = None
    license: str
    terms: Terms
    consent_basis: ConsentBasis
    contains_personal_data: bool
    tdm_opt_out: bool
    tdm_opt_out_evidence: str | None = None
    acquired: Acquisition
    jurisdiction: str = Field(min_length=2)
    retention: str = Field(description="ISO 8601 duration such as P5Y, or 'indefinite'")
    # The pipeline stage that writes ``location`` (the embedded demo's `exante corpus`);
    # None: the user supplies the file. Not part of the terms, so never signed.
    generated_by: Literal["corpus"] | None = None
    # Records kept out of training as the verification's non-members: "all" of the
    # source, or a fraction of its data subjects (records without one: of its records)
    # chosen by a hash keyed with train.seed. Signed with the terms where set.
    holdout: Literal["all"] | float | None = None

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
    def _mapping_fits_format(self) -> Source:
        if self.format in TABULAR and self.fields is None:
            raise ValueError(
                f"a {self.format} source needs 'fields' naming its id (or id_from) and text columns"
            )
        if self.format in ("text", "dir") and self.fields and self.fields.terms_columns():
            raise ValueError(f"a {self.format} source has no columns for per-record terms")
        read = self.read or ReadOptions()
        misplaced = [
            f"read.{k} applies to format {', '.join(fmts)} only"
            for k, fmts in _READ_OPTION_FORMATS.items()
            if k in read.model_fields_set and self.format not in fmts
        ]
        if misplaced:
            raise ValueError("; ".join(misplaced))
        return self

    @field_validator("holdout")
    @classmethod
    def _holdout(cls, v):
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError("holdout is 'all' or a fraction between 0 and 1 (0.05: 5% held out)")
        return v

    @model_validator(mode="after")
    def _expiry_is_a_date(self) -> Source:
        try:
            self.retention_expires()
        except (ValueError, OverflowError):
            raise ValueError(f"retention {self.retention} ends after the year 9999") from None
        return self

    def retention_expires(self, start: date | None = None) -> date | None:
        """The last day records may be kept (from ``start``, default the acquisition), or None."""
        if self.retention == "indefinite":
            return None
        years, months, days = (int(g or 0) for g in _DURATION.fullmatch(self.retention).groups())
        d = start or self.acquired.date
        month = d.month - 1 + months + 12 * years
        y, m = d.year + month // 12, month % 12 + 1
        day = min(d.day, calendar.monthrange(y, m)[1])  # Jan 31 + P1M: the end of February
        return date(y, m, day) + timedelta(days=days)

    def path(self, root: Path) -> Path:
        return Path(root) / self.location


class PretrainedModel(_Frozen):
    """A pretrained model the shards fine-tune: where it came from, its terms, its bytes.

    ``sha256`` pins the bytes the gate judged: a file's SHA-256 (a ``.gguf``) or,
    for a checkpoint directory, :func:`model_digest` (every file's path and
    SHA-256). Training refuses a ``train.model.local_path`` that is not a model
    the signed gate decision admitted with exactly these bytes.
    """

    id: str
    description: str = Field(min_length=1)
    location: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str
    terms: Terms
    tdm_opt_out: bool = False
    tdm_opt_out_evidence: str | None = None
    acquired: Acquisition

    def path(self, root: Path) -> Path:
        p = Path(self.location)
        return p if p.is_absolute() else Path(root) / p


def model_digest(path: Path) -> str:
    """A file's SHA-256, or a directory's digest: canonical JSON of {relative path: SHA-256}."""
    from lineage._canonical import canonical_json, file_sha256, sha256_hex

    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sha256_hex(canonical_json({p.relative_to(path).as_posix(): file_sha256(p)
                                      for p in files}))  # fmt: skip


class Registry(_Frozen):
    schema_version: Literal[1]
    sources: dict[str, Source]
    # pretrained models (train.model.local_path), judged by the gate like sources
    models: dict[str, PretrainedModel] = {}

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
    for section in ("sources", "models"):
        if isinstance(raw, dict) and isinstance(raw.get(section), dict):
            for key, value in raw[section].items():
                if isinstance(value, dict):
                    value.setdefault("id", key)
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        raise SourceRegistryError(f"{path} is malformed:", problems=_problems(exc)) from None
    mismatched = [f"sources.{k}: id is {s.id!r}" for k, s in registry.sources.items() if s.id != k]
    mismatched += [f"models.{k}: id is {m.id!r}" for k, m in registry.models.items() if m.id != k]
    if mismatched:
        raise SourceRegistryError(f"{path}: each source's id must be its key", problems=mismatched)
    unknown = [
        f"{s.id}: {s.license!r}"
        for s in [*registry.sources.values(), *registry.models.values()]
        if not is_known_license(s.license)
    ]
    if unknown:
        raise UnknownLicenseError(
            f"{path}: unknown license ids (use an SPDX id, or LicenseRef-<name> for custom terms)",
            problems=unknown,
        )
    return registry


def _location_exists(source: Source, root: Path) -> bool:
    """A file, a directory for ``dir``, and either for ``hf`` (saved dataset or data files)."""
    path = source.path(root)
    if source.format == "dir":
        return path.is_dir()
    return path.is_file() or (source.format == "hf" and path.is_dir())


def check_locations(registry: Registry, root: Path, only: str | None = None) -> None:
    """Every source (or just ``only``) must point at an existing file (or directory)."""
    sources = [registry.get(only)] if only else registry.sources.values()
    missing = [f"{s.id}: {s.location}" for s in sources if not _location_exists(s, root)]
    if missing:
        raise MissingSourceFileError("source files are missing:", problems=missing)


def source_terms(source: Source) -> dict:
    """The JSON form of a source, as it is embedded in a signed manifest.

    ``fields``, ``read`` and ``holdout`` appear only where the registry sets them,
    so a source registered before they existed is signed exactly as it was.
    """
    unset = {k for k in ("fields", "read", "holdout") if getattr(source, k) is None}
    return source.model_dump(mode="json", exclude=unset | {"generated_by"})
