"""The data-quality suite, run through real Great Expectations.

Each GX run costs about a second (plus ~7 s to import GX once), so one dirty
data set holding every kind of failure is validated once per module and each
test reads its own expectation from that shared report.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pandas as pd
import pytest

from lineage._canonical import text_sha256
from lineage.errors import DataValidationError
from lineage.records import Record, write_records
from lineage.sources import Registry
from lineage.validation import (
    EMAIL_REGEX,
    MAX_FAILING_IDS,
    PHONE_REGEX,
    ExpectationOutcome,
    ValidationReport,
    _error_message,
    _failing_ids,
    license_regex,
    records_frame,
    run_validation,
    validate_records,
)

EMAIL = "Write to alice.smith@example.com about the refund."
PHONE = "Call me on (555)123-4567x890 after six."
PROSE = "ACT III. SCENE 1. To be, or not to be, that is the question (line 56, 1603)."


def _source(source_id: str, *, personal: bool, license: str) -> dict:
    return {
        "id": source_id,
        "description": f"{source_id} test source",
        "location": f"raw/{source_id}.jsonl",
        "license": license,
        "terms": {"summary": "test terms", "permits_ml_training": True},
        "consent_basis": "consent" if personal else "none",
        "contains_personal_data": personal,
        "tdm_opt_out": False,
        "acquired": {"date": "2024-01-01", "method": "test fixture"},
        "jurisdiction": "EU",
        "retention": "P1Y" if personal else "indefinite",
    }


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.model_validate(
        {
            "schema_version": 1,
            "sources": {
                "plays": _source("plays", personal=False, license="CC0-1.0"),
                "tickets": _source("tickets", personal=True, license="LicenseRef-acme-tos"),
            },
        }
    )


def _clean() -> list[Record]:
    return [
        Record.make("plays-1", "plays", [], PROSE),
        Record.make("plays-2", "plays", [], "Exit, pursued by a bear."),
        Record.make("tickets-1", "tickets", ["subj-1"], EMAIL),
        Record.make("tickets-2", "tickets", ["subj-2", "subj-3"], PHONE),
    ]


def _dirty() -> list[Record]:
    tampered = dataclasses.replace(Record.make("tampered", "plays", [], "original"), text="edited")
    return [
        *_clean(),
        tampered,
        Record.make("dup", "plays", [], "first copy"),
        Record.make("dup", "plays", [], "second copy"),
        Record.make("email-public", "plays", [], EMAIL),
        Record.make("phone-public", "plays", [], PHONE),
        Record.make("orphan", "mystery", [], "from nowhere"),
        Record.make("no-subject", "tickets", [], "A ticket about nobody in particular."),
    ]


@pytest.fixture(scope="module")
def clean_report(registry: Registry) -> ValidationReport:
    return validate_records(_clean(), registry)


@pytest.fixture(scope="module")
def dirty_report(registry: Registry) -> ValidationReport:
    return validate_records(_dirty(), registry)


def _outcome(report: ValidationReport, name: str) -> ExpectationOutcome:
    (found,) = [o for o in report.outcomes if o.name == name]
    return found


def _failed(report: ValidationReport) -> dict[str, tuple[str, ...]]:
    return {o.name: o.failing_record_ids for o in report.outcomes if not o.success}


# -- clean data ------------------------------------------------------------------


def test_clean_data_passes_every_check(clean_report: ValidationReport) -> None:
    assert clean_report.success
    assert clean_report.record_count == 4
    assert _failed(clean_report) == {}
    assert len(clean_report.outcomes) == 16
    assert clean_report.summary().endswith("16/16 checks passed on 4 record(s)")


# -- each kind of bad record fails its own check, naming the record --------------


def test_dirty_data_fails_exactly_the_expected_checks(dirty_report: ValidationReport) -> None:
    assert not dirty_report.success
    assert dirty_report.record_count == 11
    assert _failed(dirty_report) == {
        "sha256_matches_text": ("tampered",),
        "record_id_unique": ("dup",),
        "source_known": ("orphan",),
        "license_present": ("orphan",),
        "no_email_outside_personal_sources": ("email-public",),
        "no_phone_outside_personal_sources": ("phone-public",),
        "personal_records_name_subjects": ("no-subject",),
    }


def test_text_changed_after_hashing_fails_the_hash_check(dirty_report: ValidationReport) -> None:
    outcome = _outcome(dirty_report, "sha256_matches_text")
    assert outcome.column == "sha256,computed_sha256"
    assert outcome.unexpected_count == 1
    assert outcome.failing_record_ids == ("tampered",)
    assert _outcome(dirty_report, "sha256_format").success


def test_duplicate_ids_fail_uniqueness_once_per_id(dirty_report: ValidationReport) -> None:
    outcome = _outcome(dirty_report, "record_id_unique")
    assert outcome.unexpected_count == 2  # both rows that share the id
    assert outcome.failing_record_ids == ("dup",)


def test_email_fails_only_outside_personal_data_sources(dirty_report: ValidationReport) -> None:
    outcome = _outcome(dirty_report, "no_email_outside_personal_sources")
    assert outcome.failing_record_ids == ("email-public",)
    assert "tickets-1" not in outcome.failing_record_ids  # same text, declared source


def test_phone_fails_only_outside_personal_data_sources(dirty_report: ValidationReport) -> None:
    outcome = _outcome(dirty_report, "no_phone_outside_personal_sources")
    assert outcome.failing_record_ids == ("phone-public",)
    assert "tickets-2" not in outcome.failing_record_ids


def test_unknown_source_fails_and_has_no_license(dirty_report: ValidationReport) -> None:
    assert _outcome(dirty_report, "source_known").failing_record_ids == ("orphan",)
    assert _outcome(dirty_report, "license_present").failing_record_ids == ("orphan",)
    assert _outcome(dirty_report, "license_known").success  # nulls are license_present's job


def test_summary_names_each_failure_and_a_total(dirty_report: ValidationReport) -> None:
    lines = dirty_report.summary().splitlines()
    assert len(lines) == 8
    assert "FAIL sha256_matches_text (sha256,computed_sha256): 1 record(s): tampered" in lines
    assert lines[-1] == "data validation FAILED: 9/16 checks passed on 11 record(s)"


def test_report_round_trips_through_json(dirty_report: ValidationReport) -> None:
    data = json.loads(json.dumps(dirty_report.to_dict(), sort_keys=True))
    rebuilt = ValidationReport(
        success=data["success"],
        record_count=data["record_count"],
        outcomes=tuple(
            ExpectationOutcome(**{**o, "failing_record_ids": tuple(o["failing_record_ids"])})
            for o in data["outcomes"]
        ),
    )
    assert rebuilt == dirty_report
    assert data["schema_version"] == 1


def test_report_never_copies_record_text(dirty_report: ValidationReport) -> None:
    dumped = json.dumps(dirty_report.to_dict())
    assert "alice.smith@example.com" not in dumped
    assert "555" not in dumped


# -- run_validation: the report is written even when it fails --------------------


def test_run_validation_writes_report_then_raises(tmp_path, registry: Registry) -> None:
    records_dir = tmp_path / "records"
    bad = Record.make("plays/email-public", "plays", [], EMAIL)
    clean = [dataclasses.replace(r, record_id=r.record_id.replace("-", "/")) for r in _clean()[:2]]
    write_records(records_dir / "plays.jsonl", [*clean, bad])  # ids as ingest writes them
    report_path = tmp_path / "reports" / "validation.json"
    with pytest.raises(DataValidationError) as info:
        run_validation(records_dir, registry, report_path)
    assert str(report_path) in str(info.value)
    assert info.value.exit_code == 3
    assert info.value.problems == (
        "no_email_outside_personal_sources (text): 1 record(s): plays/email-public",
    )
    written = json.loads(report_path.read_text(encoding="utf-8"))
    assert written["success"] is False and written["record_count"] == 3
    assert report_path.read_text(encoding="utf-8").startswith('{\n  "outcomes"')


# -- the pieces the suite is built from (no GX needed) ---------------------------


def test_frame_joins_each_record_with_its_source(registry: Registry) -> None:
    frame = records_frame([*_clean(), Record.make("orphan", "mystery", ["a", "b"], "x")], registry)
    orphan = frame.set_index("record_id").loc["orphan"]
    assert orphan["subject_ids"] == "a,b" and orphan["subject_count"] == 2
    assert pd.isna(orphan["license"])  # a string column stores None as its missing marker
    assert orphan["contains_personal_data"] is None  # object column: None, not False
    assert orphan["computed_sha256"] == text_sha256("x")
    assert frame.set_index("record_id").loc["tickets-1", "contains_personal_data"] is True


@pytest.mark.parametrize(
    "text",
    ["(555)123-4567x890", "+1-555-123-4567", "555.123.4567", "001-555-123-4567", "5551234567"],
)
def test_phone_regex_catches_faker_formats(text: str) -> None:
    assert re.search(PHONE_REGEX, f"reach me at {text}, thanks")


@pytest.mark.parametrize(
    "text",
    [
        PROSE,
        "Act 2, Scene 3, lines 101-120.",
        "Printed 1599-1601; Sonnet 18 (1609).",
        "digest 3fa5551234567890ab, ticket 12345678901234",
    ],
)
def test_phone_and_email_regexes_leave_prose_alone(text: str) -> None:
    assert not re.search(PHONE_REGEX, text)
    assert not re.search(EMAIL_REGEX, text)


def test_phone_regex_catches_every_faker_number() -> None:
    faker = pytest.importorskip("faker").Faker("en_US")
    faker.seed_instance(7)
    numbers = [faker.phone_number() for _ in range(500)]
    assert [n for n in numbers if not re.search(PHONE_REGEX, f"call {n} now")] == []


def test_license_regex_accepts_exactly_known_licenses() -> None:
    pattern = re.compile(license_regex())
    assert pattern.search("CC-BY-4.0") and pattern.search("LicenseRef-acme.tos-2")
    assert not pattern.search("CC-BY-4X0")  # '.' is escaped
    assert not pattern.search("MIT or GPL")  # anchored
    assert not pattern.search("LicenseRef-")


def test_failing_ids_are_named_once_and_capped() -> None:
    rows = [{"record_id": f"r{i}"} for i in range(MAX_FAILING_IDS + 10)]
    rows.insert(1, {"record_id": "r0"})
    ids = _failing_ids({"unexpected_index_list": rows})
    assert len(ids) == MAX_FAILING_IDS and ids[:2] == ("r0", "r1")


def test_no_records_fails_rather_than_passing_vacuously(registry: Registry) -> None:
    report = validate_records([], registry)
    assert _failed(report) == {"has_records": ()}
    assert report.summary().splitlines()[0] == "FAIL has_records: observed 0"


@pytest.mark.parametrize(
    "info",
    [
        {"raised_exception": True, "exception_message": "boom"},
        {"metric-a": {"raised_exception": True, "exception_message": "boom"}},
    ],
)
def test_gx_errors_are_found_in_either_shape(info: dict) -> None:
    assert _error_message(info) == "boom"
    assert _error_message({"raised_exception": False, "exception_message": None}) == ""
