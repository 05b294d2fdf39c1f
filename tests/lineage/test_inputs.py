"""Careless inputs: ids with a trailing newline, unknown licenses in a policy, undecodable YAML.

Each is a bad input (exit 3) naming the file, the line or entry and the field,
never a traceback (exit 70), a wrong exit code, or a silent change of meaning;
and no error message repeats a record's text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exante.params import load_params
from lineage._licenses import is_known_license
from lineage.errors import (
    MalformedRecordError,
    ParamsError,
    PolicyFileError,
    SourceRegistryError,
)
from lineage.ingest import read_source
from lineage.policy import load_policies
from lineage.records import Record
from lineage.sources import load_registry
from lineage.stages import registry, run_ingest
from tests._cli import exante
from tests.conftest import make_project
from tests.lineage.test_ingest import jsonl, notes

REPO = Path(__file__).resolve().parents[2]
SECRET_TEXT = "Mira Vance was born in Lindenmoor."


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".exante" not in p.parts
    }


# -- ids that end in a newline -------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"id": "a\n", "text": SECRET_TEXT}, "'id' must match"),
        ({"id": "a", "text": SECRET_TEXT, "subject_ids": ["p0001\n"]}, "'subject_ids'[0]"),
        ({"id": "a", "text": SECRET_TEXT, "subject_ids": ["p1", "p 2"]}, "'subject_ids'[1]"),
    ],
)
def test_ingest_refuses_an_id_with_a_trailing_newline(tmp_path: Path, row, field) -> None:
    src = notes(tmp_path, jsonl({"id": "ok", "text": "fine"}, row))
    with pytest.raises(MalformedRecordError) as caught:
        read_source(src, tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'raw' / 'notes.jsonl'}:2: source notes: {field}" in message
    assert caught.value.exit_code == 3
    assert SECRET_TEXT not in message and "p0001" not in message


def test_cli_ingest_of_a_subject_id_with_a_newline_exits_3_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """The record would otherwise escape `delete --subject p0001`: its subject is 'p0001\\n'."""
    project = make_project(tmp_path / "proj")
    raw = project.root / "data/raw/crm.jsonl"
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    rows[3]["subject_ids"] = [s + "\n" for s in rows[3]["subject_ids"]]
    raw.write_text(jsonl(*rows))
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert "data/raw/crm.jsonl:4: source crm: 'subject_ids'[0]" in result.err
    assert rows[3]["text"] not in result.err
    assert not (project.root / "data/records").exists()


def _edit_first_record(root: Path, **change) -> Path:
    path = root / "data/records/crm.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    row = json.loads(lines[0]) | change
    lines[0] = json.dumps(row).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: {"record_id": r["record_id"] + "\n"}, "'record_id' must be"),
        (lambda r: {"record_id": r["record_id"].replace("/", "-")}, "'record_id' must be"),
        (lambda r: {"subject_ids": [s + "\n" for s in r["subject_ids"]]}, "'subject_ids'[0]"),
        (lambda r: {"subject_ids": r["subject_ids"][0]}, "'subject_ids' must be a list"),
        (lambda r: {"source_id": "crm\n"}, "'source_id' must be"),
        (lambda r: {"sha256": r["sha256"] + "\n"}, "'sha256' must be"),
    ],
)
def test_the_manifest_never_signs_records_the_gate_cannot_read(
    tmp_path: Path, change, field
) -> None:
    project = make_project(tmp_path / "proj")
    run_ingest(project.root)
    first = json.loads((project.root / "data/records/crm.jsonl").read_bytes().splitlines()[0])
    _edit_first_record(project.root, **change(first))
    before = snapshot(project.root)
    result = exante(project.root, "manifest")
    assert result.code == 3, result.err
    assert "data/records/crm.jsonl:1: not" in result.err and field in result.err
    assert first["text"] not in result.err
    assert snapshot(project.root) == before  # no manifest, no leaves, no history
    assert not (project.root / "data/manifest.dsse.json").exists()


def test_the_gate_reads_such_a_record_as_bad_input_not_a_verification_failure(project) -> None:
    _edit_first_record(project.root, record_id="crm/p0001-city\n")
    result = exante(project.root, "gate")
    assert result.code == 3, result.err
    assert "MalformedRecordError" in result.err and "'record_id' must be" in result.err


def test_records_parser_agrees_with_ingest() -> None:
    good = Record.make("crm/p0001-city", "crm", ["p0001"], "x")
    assert Record.from_json(good.to_json()) == good
    bad = Record.make("crm/p0001-city\n", "crm", ["p0001"], "x")
    with pytest.raises(MalformedRecordError, match="'record_id' must be"):
        Record.from_json(bad.to_json())


@pytest.mark.parametrize("value", ["MIT\n", "LicenseRef-acme\n", "\nMIT", "LicenseRef-"])
def test_a_license_id_with_a_newline_is_unknown(value: str) -> None:
    assert not is_known_license(value)


def test_a_source_id_with_a_newline_is_refused(tmp_path: Path) -> None:
    text = (REPO / "data/sources.yaml").read_text()
    bad = tmp_path / "sources.yaml"
    bad.write_text(text.replace("  crm:\n", '  "crm\\n":\n', 1))
    with pytest.raises(SourceRegistryError) as caught:
        load_registry(bad)
    assert caught.value.exit_code == 3
    assert any("a source id is lowercase letters" in p for p in caught.value.problems)


# -- policies that name unknown licenses or ids ----------------------------------------


DEFAULT = (REPO / "policies/default.yaml").read_text()


def _policies(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "default.yaml").write_text(text)
    return d


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("    - CC-BY-4.0\n", "    - CC-BY-4.O\n", "licenses.research[3]: 'CC-BY-4.O'"),
        ("[LicenseRef-PublicDomain, CC0-1.0]", "[LicenseRef-Public Domain, CC0-1.0]",
         "base_corpus.licenses[0]: 'LicenseRef-Public Domain'"),
        ("  subjects: []", '  subjects: ["p0001\\n"]', "deny.subjects[0]: not a subject id"),
        ("  records: []", "  records: [p0001-city]", "deny.records[0]: not a record id"),
    ],
)  # fmt: skip
def test_a_policy_naming_an_unknown_license_or_id_is_refused(tmp_path, old, new, named) -> None:
    assert old in DEFAULT
    with pytest.raises(PolicyFileError) as caught:
        load_policies(_policies(tmp_path, DEFAULT.replace(old, new, 1)))
    assert caught.value.exit_code == 3
    [problem] = caught.value.problems
    assert problem.startswith(f"default.yaml: {named}")
    if "license" in named:
        assert "CC-BY-4.0" in str(caught.value) and "LicenseRef-<name>" in str(caught.value)


def test_a_license_ref_typo_is_caught_against_the_registry(tmp_path: Path) -> None:
    """`base_sources` went from [plays] to [] without a word: the typo matched no source."""
    typo = DEFAULT.replace("[LicenseRef-PublicDomain,", "[LicenseRef-PublicDomian,", 1)
    policies = _policies(tmp_path, typo)
    load_policies(policies)  # well-formed on its own ...
    with pytest.raises(PolicyFileError) as caught:  # ... but no source declares it
        load_policies(policies, registry=load_registry(REPO / "data/sources.yaml"))
    [problem] = caught.value.problems
    assert problem.startswith(
        "default.yaml: base_corpus.licenses[0]: 'LicenseRef-PublicDomian' is declared by no source"
    )
    assert "LicenseRef-PublicDomain" in problem


def test_cli_gate_with_a_license_typo_exits_3(project) -> None:
    path = project.root / "policies/default.yaml"
    path.write_text(path.read_text().replace("    - CC-BY-4.0\n", "    - CC-BY-4.O\n", 1))
    before = (project.root / "data/gate/decision.dsse.json").read_bytes()
    result = exante(project.root, "gate")
    assert result.code == 3, result.err
    assert "PolicyFileError" in result.err and "licenses.research[3]: 'CC-BY-4.O'" in result.err
    assert (project.root / "data/gate/decision.dsse.json").read_bytes() == before


# -- undecodable YAML --------------------------------------------------------------------

GARBAGE = [
    b"schema_version: 1\nsources: caf\xe9\n",  # Latin-1, not UTF-8
    b"\xff\xfe\x00s\x00",  # UTF-16 with a BOM
    b"[" * 100_000,  # deeper than the parser's recursion
    b"schema_version: 1\nwhen: 2025-02-30\n",  # an impossible date
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_sources_yaml_exits_3_naming_the_file(tmp_path: Path, data: bytes) -> None:
    project = make_project(tmp_path / "proj")
    (project.root / "data/sources.yaml").write_bytes(data)
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert "SourceRegistryError: data/sources.yaml is not valid" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_policy_exits_3_naming_the_file(project, data: bytes) -> None:
    (project.root / "policies/default.yaml").write_bytes(data)
    result = exante(project.root, "gate")
    assert result.code == 3, result.err
    assert "PolicyFileError" in result.err and "default.yaml: not valid" in result.err


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_params_yaml_is_a_params_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "params.yaml").write_bytes(data)
    with pytest.raises(ParamsError, match=r"params\.yaml is not valid"):
        load_params(tmp_path / "params.yaml")


def test_the_real_registry_and_policy_still_load() -> None:
    reg = registry(REPO)
    assert "default.yaml" in load_policies(REPO / "policies", registry=reg)
