"""Data-quality validation of ingested records, as a Great Expectations suite.

Why Great Expectations: the checks are declarative, each one is a standard,
documented expectation whose semantics a data reviewer already knows, and its
COMPLETE result format names the exact rows that failed. We keep only what the
gate needs from it — per check, a pass/fail, a count and the failing record ids
— so the report never copies record text (which may hold personal data).

The suite runs on one row per record (see :func:`records_frame`) and checks:

* shape: the table has exactly the expected columns and at least one row;
* integrity: ids, sources, digests and text are present; text is non-empty;
  record ids are unique; each digest is 64 lowercase hex digits and equals the
  digest of the record's text (the text was not edited after hashing);
* provenance: every record names a registered source, whose license is a known
  SPDX id or ``LicenseRef-*``;
* privacy: an email address or phone number appears only in records of sources
  that declare personal data, and every such record names at least one subject
  (otherwise it could never be found and erased).

GX takes ~7 s to import, so it is imported only when a suite actually runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lineage._canonical import atomic_write
from lineage._licenses import SPDX_IDS
from lineage.errors import DataValidationError
from lineage.records import Record, read_all, record_digest
from lineage.sources import Registry

__all__ = [
    "EMAIL_REGEX",
    "PHONE_REGEX",
    "ExpectationOutcome",
    "ValidationReport",
    "run_validation",
    "validate_records",
]

SCHEMA_VERSION = 1
MAX_FAILING_IDS = 50
SUMMARY_IDS = 5
COLUMNS = (
    "record_id",
    "source_id",
    "subject_ids",
    "subject_count",
    "text",
    "sha256",
    "computed_sha256",
    "license",
    "contains_personal_data",
)
SHA256_REGEX = r"\A[0-9a-f]{64}\Z"  # \Z: "$" would also match before a final newline
EMAIL_REGEX = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# North American numbers as Faker's en_US provider writes them: optional +1 / 001
# prefix, area code bare or in parentheses, '-' or '.' (or no) separators, optional
# x-extension. Digits glued to letters or longer digit runs do not count, so act,
# scene and line numbers, years and hex digests are not phone numbers.
PHONE_REGEX = (
    r"(?<![\w+])(?:(?:\+1|001)[\-. ]?)?"
    r"(?:\(\d{3}\) ?|\d{3}[\-.]?)\d{3}[\-.]?\d{4}"
    r"(?:(?: ?x| ?ext\.? ?)\d{1,5})?(?!\w)"
)


@dataclass(frozen=True)
class ExpectationOutcome:
    """One check of the suite: did it pass, and which records broke it."""

    name: str
    column: str | None
    success: bool
    unexpected_count: int  # failing rows: a duplicated id counts once per row
    failing_record_ids: tuple[str, ...]  # at most MAX_FAILING_IDS
    detail: str = ""  # observed value of a table-level check, or GX's error message

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "column": self.column,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "failing_record_ids": list(self.failing_record_ids),
            "detail": self.detail,
        }

    def problem(self) -> str:
        """One line naming the check and its first failing records, for errors and consoles."""
        head = f"{self.name} ({self.column})" if self.column else self.name
        if self.detail:  # a table-level check, or GX could not evaluate the check
            return f"{head}: {self.detail}"
        return f"{head}: {self.unexpected_count} record(s): {self._shown_ids()}"

    def _shown_ids(self) -> str:
        ids = self.failing_record_ids
        if not ids:
            return "(no record ids)"
        more = len(ids) > SUMMARY_IDS or len(ids) == MAX_FAILING_IDS
        return ", ".join(ids[:SUMMARY_IDS]) + (", ..." if more else "")


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of the whole suite over one set of records."""

    success: bool
    record_count: int
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "success": self.success,
            "record_count": self.record_count,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }

    def problems(self) -> list[str]:
        return [o.problem() for o in self.failures]

    def summary(self) -> str:
        """Short console text: one line per failed check, then a total."""
        lines = [f"FAIL {p}" for p in self.problems()]
        passed = len(self.outcomes) - len(self.failures)
        verdict = "passed" if self.success else "FAILED"
        lines.append(
            f"data validation {verdict}: {passed}/{len(self.outcomes)} checks passed "
            f"on {self.record_count} record(s)"
        )
        return "\n".join(lines)


# -- the table GX validates ------------------------------------------------------


def _row(record: Record, registry: Registry) -> dict[str, Any]:
    source = registry.sources.get(record.source_id)
    return {
        "record_id": record.record_id,
        "source_id": record.source_id,
        "subject_ids": ",".join(record.subject_ids),
        "subject_count": len(record.subject_ids),
        "text": record.text,
        "sha256": record.sha256,
        "computed_sha256": record_digest(record.text, record.terms),
        "license": source.license if source else None,
        "contains_personal_data": source.contains_personal_data if source else None,
    }


def records_frame(records: Sequence[Record], registry: Registry) -> pd.DataFrame:
    """One row per record, joined with what its source declares (None if the source is unknown).

    ``contains_personal_data`` stays an object column so that None survives
    (a bool column would turn it into False, i.e. "declared not personal").
    """
    rows = [_row(r, registry) for r in records]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["contains_personal_data"] = frame["contains_personal_data"].astype(object)
    return frame


def license_regex() -> str:
    """An anchored regex accepting exactly what :func:`lineage._licenses.is_known_license` does."""
    ids = "|".join(re.escape(i) for i in sorted(SPDX_IDS))
    return rf"\A(?:{ids}|LicenseRef-[A-Za-z0-9.\-]+)\Z"


# -- the suite -------------------------------------------------------------------


def _shape_checks(gxe: Any) -> list:
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(COLUMNS), exact_match=True, meta={"check": "columns"}
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta={"check": "has_records"}),
    ]


def _integrity_checks(gxe: Any) -> list:
    not_null = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, meta={"check": f"{c}_present"})
        for c in ("record_id", "source_id", "sha256", "text")
    ]
    return [
        *not_null,
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=1, meta={"check": "text_not_empty"}
        ),
        gxe.ExpectColumnValuesToBeUnique(column="record_id", meta={"check": "record_id_unique"}),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sha256", regex=SHA256_REGEX, meta={"check": "sha256_format"}
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="sha256", column_B="computed_sha256", meta={"check": "sha256_matches_text"}
        ),
    ]


def _provenance_checks(gxe: Any, registry: Registry) -> list:
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="source_id", value_set=sorted(registry.sources), meta={"check": "source_known"}
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="license", meta={"check": "license_present"}),
        gxe.ExpectColumnValuesToMatchRegex(
            column="license", regex=license_regex(), meta={"check": "license_known"}
        ),
    ]


def _declares_personal_data(declared: bool) -> Any:
    """Row condition on the source's declaration.

    "Not declared" is ``!= True`` rather than ``== False`` so that records of an
    unknown source (None) are held to the stricter rule. Built explicitly
    because GX's ``IN`` operator refuses booleans.
    """
    from great_expectations.expectations.row_conditions import (
        Column,
        ComparisonCondition,
        Operator,
    )

    op = Operator.EQUAL if declared else Operator.NOT_EQUAL
    return ComparisonCondition(column=Column("contains_personal_data"), operator=op, parameter=True)


def _privacy_checks(gxe: Any) -> list:
    undeclared, declared = _declares_personal_data(False), _declares_personal_data(True)
    return [
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text",
            regex=EMAIL_REGEX,
            row_condition=undeclared,
            meta={"check": "no_email_outside_personal_sources"},
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text",
            regex=PHONE_REGEX,
            row_condition=undeclared,
            meta={"check": "no_phone_outside_personal_sources"},
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="subject_count",
            min_value=1,
            row_condition=declared,
            meta={"check": "personal_records_name_subjects"},
        ),
    ]


def build_expectations(registry: Registry) -> list:
    """Every expectation of the suite, in report order; each carries its check name in meta."""
    import great_expectations.expectations as gxe

    return [
        *_shape_checks(gxe),
        *_integrity_checks(gxe),
        *_provenance_checks(gxe, registry),
        *_privacy_checks(gxe),
    ]


# -- running it ------------------------------------------------------------------


def _quiet_context() -> Any:
    """An in-memory GX context with progress bars and analytics off: nothing on disk or stderr."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_suite(frame: pd.DataFrame, expectations: list) -> list:
    """Validate ``frame`` against ``expectations``; return GX's per-expectation results."""
    import great_expectations as gx

    context = _quiet_context()
    asset = context.data_sources.add_pandas("exante").add_dataframe_asset("records")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = context.suites.add(gx.ExpectationSuite(name="exante_records"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["record_id"]}
    return list(batch.validate(suite, result_format=result_format).results)


def _failing_ids(result: dict) -> tuple[str, ...]:
    """Record ids of the failing rows, each once, in row order, capped at MAX_FAILING_IDS."""
    ids: dict[str, None] = {}
    for row in result.get("unexpected_index_list") or ():
        rid = row.get("record_id") if isinstance(row, dict) else None
        ids.setdefault(rid if isinstance(rid, str) else "<no record_id>", None)
    return tuple(ids)[:MAX_FAILING_IDS]


def _error_message(exception_info: dict) -> str:
    """GX reports an error either flat or keyed by metric; find the message in either shape."""
    infos = [exception_info, *(v for v in exception_info.values() if isinstance(v, dict))]
    messages = [str(i.get("exception_message")) for i in infos if i.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages))


def _column(kwargs: dict) -> str | None:
    if "column" in kwargs:
        return kwargs["column"]
    if "column_A" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return None


def _detail(gx_result: Any, error: str) -> str:
    """Why a check failed when no rows say so: GX's error, or a table-level observed value."""
    if error:
        return f"GX error: {error}"
    result = gx_result.result or {}
    if gx_result.success or "observed_value" not in result:
        return ""
    return f"observed {result['observed_value']!r}"


def _outcome(gx_result: Any) -> ExpectationOutcome:
    config, result = gx_result.expectation_config, gx_result.result or {}
    error = _error_message(gx_result.exception_info or {})
    return ExpectationOutcome(
        name=(config.meta or {}).get("check", config.type),
        column=_column(config.kwargs),
        success=bool(gx_result.success) and not error,
        unexpected_count=int(result.get("unexpected_count") or 0),
        failing_record_ids=_failing_ids(result),
        detail=_detail(gx_result, error),
    )


def validate_records(records: Sequence[Record], registry: Registry) -> ValidationReport:
    """Run the suite over ``records``; data failures are reported, never raised."""
    expectations = build_expectations(registry)
    gx_results = _run_suite(records_frame(records, registry), expectations)
    # GX returns results in its own order; report them in suite order.
    order = {e.meta["check"]: i for i, e in enumerate(expectations)}
    outcomes = sorted((_outcome(r) for r in gx_results), key=lambda o: order[o.name])
    return ValidationReport(
        success=all(o.success for o in outcomes),
        record_count=len(records),
        outcomes=tuple(outcomes),
    )


def write_report(report: ValidationReport, report_path: Path) -> None:
    data = json.dumps(report.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(Path(report_path), data.encode("utf-8"))


def run_validation(records_dir: Path, registry: Registry, report_path: Path) -> ValidationReport:
    """Validate every record under ``records_dir``; always write the report, raise if it failed.

    The report is written on failure too, because it is what the reader needs to
    fix the data.
    """
    report = validate_records(read_all(Path(records_dir)), registry)
    write_report(report, report_path)
    if not report.success:
        raise DataValidationError(
            f"records in {records_dir} failed data validation; "
            f"fix them and run again (full report: {report_path})",
            problems=report.problems(),
        )
    return report
