"""The source registry: parsed once, strictly, with every problem reported together."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from lineage.errors import (
    BadInputError,
    MissingSourceFileError,
    SourceRegistryError,
    UnknownLicenseError,
)
from lineage.sources import Source, check_locations, load_registry
from tests.conftest import REPO

REAL = REPO / "data" / "sources.yaml"
SOURCE_IDS = {"crm", "holdout_people", "plays", "forum", "newswire", "recipes", "support_legacy"}


def real() -> dict:
    return yaml.safe_load(REAL.read_text(encoding="utf-8"))


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_the_real_registry_loads() -> None:
    registry = load_registry(REAL)
    assert set(registry.sources) == SOURCE_IDS
    assert all(s.id == key for key, s in registry.sources.items())
    assert registry.get("recipes").license == "CC-BY-NC-4.0"
    assert registry.get("newswire").tdm_opt_out is True


def test_unknown_source_id_names_the_known_ones() -> None:
    with pytest.raises(SourceRegistryError, match=r"no source 'crn' \(known: crm, forum"):
        load_registry(REAL).get("crn")


@pytest.mark.parametrize("text", ["sources: [unclosed", "a: b: c", "sources:\n  crm: {a: 1\n"])
def test_malformed_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceRegistryError, match="is not valid YAML"):
        load_registry(path)


@pytest.mark.parametrize("text", ["", "- a list\n", "schema_version: 1\n"])
def test_wrong_shape_is_a_registry_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceRegistryError, match="is malformed"):
        load_registry(path)


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(SourceRegistryError, match="does not exist"):
        load_registry(tmp_path / "sources.yaml")


def test_a_typo_is_an_error_naming_the_key(tmp_path: Path) -> None:
    raw = real()
    raw["sources"]["crm"]["licence"] = raw["sources"]["crm"].pop("license")
    with pytest.raises(SourceRegistryError) as caught:
        load_registry(write(tmp_path, raw))
    assert "sources.crm.licence: Extra inputs are not permitted" in caught.value.problems
    assert "sources.crm.license: Field required" in caught.value.problems
    assert "licence" in str(caught.value)


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    raw = real()
    raw["sources"]["crm"]["retention"] = "five years"
    del raw["sources"]["plays"]["description"]
    raw["sources"]["forum"]["consent_basis"] = "implied"
    raw["sources"]["newswire"]["terms"]["permits_ml_trainig"] = True
    with pytest.raises(SourceRegistryError) as caught:
        load_registry(write(tmp_path, raw))
    where = {p.split(":")[0] for p in caught.value.problems}
    assert where == {
        "sources.crm.retention",
        "sources.plays.description",
        "sources.forum.consent_basis",
        "sources.newswire.terms.permits_ml_trainig",
    }
    for problem in caught.value.problems:
        assert f"  - {problem}" in str(caught.value)


def test_an_id_that_differs_from_its_key(tmp_path: Path) -> None:
    raw = real()
    raw["sources"]["crm"]["id"] = "customers"
    with pytest.raises(SourceRegistryError) as caught:
        load_registry(write(tmp_path, raw))
    assert caught.value.problems == ("sources.crm: id is 'customers'",)


def test_unknown_license_names_source_and_license(tmp_path: Path) -> None:
    raw = real()
    raw["sources"]["crm"]["license"] = "GPL-4.0"
    raw["sources"]["recipes"]["license"] = "CC-BY-NC"
    with pytest.raises(UnknownLicenseError) as caught:
        load_registry(write(tmp_path, raw))
    assert caught.value.problems == ("crm: 'GPL-4.0'", "recipes: 'CC-BY-NC'")
    assert isinstance(caught.value, BadInputError)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("license_id", ["LicenseRef-Acme-Terms.v2", "CC0-1.0", "MIT"])
def test_spdx_ids_and_license_refs_are_accepted(tmp_path: Path, license_id: str) -> None:
    raw = real()
    raw["sources"]["forum"]["license"] = license_id
    assert load_registry(write(tmp_path, raw)).get("forum").license == license_id


@pytest.mark.parametrize("license_id", ["LicenseRef-", "LicenseRef-has space", "licenseref-x"])
def test_malformed_license_refs_are_unknown(tmp_path: Path, license_id: str) -> None:
    raw = real()
    raw["sources"]["forum"]["license"] = license_id
    with pytest.raises(UnknownLicenseError, match="forum"):
        load_registry(write(tmp_path, raw))


def test_missing_source_files(tmp_path: Path) -> None:
    registry = load_registry(REAL)
    with pytest.raises(MissingSourceFileError) as caught:
        check_locations(registry, tmp_path)
    assert len(caught.value.problems) == len(SOURCE_IDS)
    assert "forum: data/raw/forum.jsonl" in caught.value.problems
    with pytest.raises(MissingSourceFileError) as caught:
        check_locations(registry, tmp_path, only="forum")
    assert caught.value.problems == ("forum: data/raw/forum.jsonl",)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "forum.jsonl").write_text("")
    check_locations(registry, tmp_path, only="forum")  # present now: no error


def source(acquired: str, retention: str) -> Source:
    raw = real()["sources"]["crm"]
    return Source.model_validate(
        {**raw, "id": "crm", "retention": retention, "acquired": {"date": acquired, "method": "x"}}
    )


@pytest.mark.parametrize(
    ("acquired", "retention", "expires"),
    [
        ("2020-01-15", "P3Y", date(2023, 1, 15)),
        ("2025-06-01", "P18M", date(2026, 12, 1)),
        ("2025-01-31", "P30D", date(2025, 3, 2)),
        ("2025-03-30", "indefinite", None),
        ("2024-02-29", "P1Y", date(2025, 2, 28)),  # no 29 February in 2025
        ("2023-01-31", "P1M", date(2023, 2, 28)),
        ("2024-01-31", "P1M", date(2024, 2, 29)),  # a leap year's February has 29 days
        ("2023-08-31", "P1M", date(2023, 9, 30)),
        ("2024-02-29", "P1Y2M3D", date(2025, 5, 2)),
    ],
)
def test_retention_expiry_known_answers(acquired: str, retention: str, expires) -> None:
    assert source(acquired, retention).retention_expires() == expires


@pytest.mark.parametrize("retention", ["P", "5Y", "P5W", "forever", "P1.5Y", "p5y"])
def test_retention_must_be_a_duration(tmp_path: Path, retention: str) -> None:
    raw = real()
    raw["sources"]["crm"]["retention"] = retention
    with pytest.raises(SourceRegistryError) as caught:
        load_registry(write(tmp_path, raw))
    assert [p.split(":")[0] for p in caught.value.problems] == ["sources.crm.retention"]
