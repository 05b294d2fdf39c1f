"""Ingest: stable ids, subjects and digests, and bad input that stops before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from lineage.errors import DuplicateRecordError, MalformedRecordError
from lineage.ingest import read_source
from lineage.records import read_all, read_records
from lineage.sources import Source
from lineage.stages import run_ingest
from tests._cli import exante
from tests.conftest import make_project, source_entry

RECORDS = Path("data/records")


def notes(tmp_path: Path, content: str, *, fmt: str = "jsonl") -> Source:
    """A one-file source ``notes`` at ``tmp_path/raw/notes.<fmt>`` holding ``content``."""
    path = tmp_path / "raw" / f"notes.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return Source.model_validate(
        source_entry("notes") | {"location": f"raw/notes.{fmt}", "format": fmt, "id": "notes"}
    )


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_records_of_the_generated_corpus(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    counts = run_ingest(project.root)
    raw = [json.loads(line) for line in (project.root / "data/raw/crm.jsonl").open()]
    records = {r.record_id: r for r in read_all(project.root / RECORDS)}
    assert counts["crm"] == len(raw)
    assert sum(counts.values()) == len(records)
    for row in raw:
        r = records[f"crm/{row['id']}"]
        assert (r.source_id, r.subject_ids, r.text) == (
            "crm",
            tuple(row["subject_ids"]),
            row["text"],
        )
        assert r.sha256 == hashlib.sha256(row["text"].encode("utf-8")).hexdigest()
    assert records["forum/post-00001"].subject_ids == ()


def test_ids_subjects_and_digest_of_canonical_text(tmp_path: Path) -> None:
    text = "Cafe\u0301 menu\r\nline two"  # decomposed é, CRLF
    src = notes(tmp_path, jsonl({"id": "n-1", "text": text, "subject_ids": ["s2", "s1"], "x": 1}))
    [record] = read_source(src, tmp_path)
    assert record.record_id == "notes/n-1"
    assert record.subject_ids == ("s1", "s2")
    assert record.text == "Caf\u00e9 menu\nline two"
    assert record.sha256 == hashlib.sha256("Caf\u00e9 menu\nline two".encode()).hexdigest()


def test_duplicate_raw_ids(tmp_path: Path) -> None:
    src = notes(tmp_path, jsonl({"id": "a", "text": "one"}, {"id": "a", "text": "two"}))
    with pytest.raises(DuplicateRecordError) as caught:
        read_source(src, tmp_path)
    assert caught.value.problems == ("notes/a (in notes and notes)",)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[" * 100_000, "not JSON"),  # deeper than Python's recursion limit
        ('{"id": "b", "text": "x", "n": ' + "1" * 5000 + "}", "not JSON"),  # int digit limit
        ('["a list"]', "expected a JSON object"),
        ('{"id": "b", "text": ""}', "'text' must be a non-empty string"),
        ('{"id": "b", "text": "  \\n "}', "'text' must be a non-empty string"),
        ('{"id": "b"}', "'text' must be a non-empty string"),
        ('{"id": "b c", "text": "x"}', "'id' must match"),
        ('{"id": 7, "text": "x"}', "'id' must match"),
        ('{"id": "b", "text": "x", "subject_ids": "s1"}', "'subject_ids' must be a list"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, line: str, complaint: str) -> None:
    src = notes(tmp_path, jsonl({"id": "a", "text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(MalformedRecordError) as caught:
        read_source(src, tmp_path)
    assert f"{tmp_path / 'raw' / 'notes.jsonl'}:3: " in str(caught.value)
    assert complaint in str(caught.value)


def test_text_source_splits_on_blank_lines(tmp_path: Path) -> None:
    src = notes(tmp_path, "\n\nFirst  para.\n\nSecond\npara.\n\n \t\n\nThird.\n", fmt="text")
    records = read_source(src, tmp_path)
    assert [(r.record_id, r.text) for r in records] == [
        ("notes/000001", "First  para."),
        ("notes/000002", "Second\npara."),
        ("notes/000003", "Third."),
    ]
    assert all(r.subject_ids == () for r in records)


def test_text_source_must_be_utf8(tmp_path: Path) -> None:
    src = notes(tmp_path, "", fmt="text")
    (tmp_path / "raw" / "notes.text").write_bytes(b"caf\xe9\n")
    with pytest.raises(MalformedRecordError, match="not UTF-8"):
        read_source(src, tmp_path)


# -- nothing written half-way ------------------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def ingested(tmp_path: Path):
    """A project whose records were ingested once, and their bytes."""
    project = make_project(tmp_path / "proj")
    run_ingest(project.root)
    return project, snapshot(project.root / RECORDS)


def append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def test_one_malformed_source_leaves_every_records_file_untouched(ingested) -> None:
    project, before = ingested
    raw = project.root / "data" / "raw"
    # crm is read first and would change; support_legacy is read last and is broken
    append(raw / "crm.jsonl", json.dumps({"id": "p9999-city", "text": "Z lives in Y."}))
    append(raw / "support_legacy.jsonl", "{broken")
    lines = len((raw / "support_legacy.jsonl").read_text().splitlines())
    with pytest.raises(MalformedRecordError, match=rf"support_legacy\.jsonl:{lines}: not JSON"):
        run_ingest(project.root)
    assert snapshot(project.root / RECORDS) == before  # same files, same bytes, no temp files


def mutate_yaml(project, change) -> None:
    path = project.root / "data" / "sources.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))


def _malformed_yaml(project) -> None:
    (project.root / "data" / "sources.yaml").write_text("sources: [unclosed\n")


def _unknown_license(project) -> None:
    mutate_yaml(project, lambda raw: raw["sources"]["crm"].update(license="GPL-4.0"))


def _typo(project) -> None:
    mutate_yaml(project, lambda raw: raw["sources"]["plays"].update(retension="P1Y"))


def _missing_file(project) -> None:
    (project.root / "data" / "raw" / "forum.jsonl").unlink()


def _duplicate_ids(project) -> None:
    path = project.root / "data" / "raw" / "recipes.jsonl"
    append(path, path.read_text().splitlines()[0])


@pytest.mark.parametrize(
    ("breaks", "error", "named"),
    [
        (_malformed_yaml, "SourceRegistryError", "is not valid YAML"),
        (_typo, "SourceRegistryError", "sources.plays.retension: Extra inputs are not permitted"),
        (_unknown_license, "UnknownLicenseError", "crm: 'GPL-4.0'"),
        (_missing_file, "MissingSourceFileError", "forum: data/raw/forum.jsonl"),
        (_duplicate_ids, "DuplicateRecordError", "recipes/recipe-0001"),
    ],
)
def test_cli_bad_input_exits_3_and_writes_nothing(ingested, breaks, error, named) -> None:
    project, before = ingested
    breaks(project)
    result = exante(project.root, "ingest")
    assert result.code == 3
    assert f"exante: bad input: {error}: " in result.err
    assert named in result.err
    assert result.out == ""
    assert snapshot(project.root / RECORDS) == before


def test_cli_ingest_ok(ingested) -> None:
    project, before = ingested
    result = exante(project.root, "ingest", "--source", "recipes")
    assert result.code == 0, result.err
    assert result.out == "ingested      5 records from recipes\n"
    assert snapshot(project.root / RECORDS) == before  # same input, same bytes


@pytest.mark.parametrize("line", ["[" * 100_000, '{"record_id": ' + "1" * 5000 + "}", "[1]"])
def test_malformed_records_file_line_is_named(tmp_path: Path, line: str) -> None:
    path = tmp_path / "crm.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(MalformedRecordError, match=r"crm\.jsonl:1: not a record"):
        list(read_records(path))
