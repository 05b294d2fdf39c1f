"""Erasure at the source: raw files rewritten without denied rows, every other record unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage.gate import Denials
from lineage.ingest import read_source
from lineage.scrub import ScrubError, left_in_sources, scrub_probes, scrub_source, scrub_sources
from lineage.sources import Registry, Source
from tests.conftest import source_entry
from tests.lineage.test_readers import (
    FIELDS,
    ROWS,
    write_csv,
    write_data_files,
    write_parquet,
    write_saved,
)

# ROWS: k-1 (ada, bo), k-2 (cy), k-3 (no one). Deny subject bo and record k-3.
DENY = Denials(records=frozenset({"src/k-3"}), subjects=frozenset({"bo"}))
GONE = (b"Ada met Bo at the pier.", b"Nobody in particular.")


def source(location: str, fmt: str, **extra) -> Source:
    entry = source_entry("src") | {"id": "src", "location": location, "format": fmt} | extra
    return Source.model_validate(entry)


def raw_bytes(path: Path) -> bytes:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return b"".join(p.read_bytes() for p in files)


def write_jsonl(root: Path, rows: dict = ROWS) -> str:
    lines = [json.dumps({k: rows[k][i] for k in rows}) for i in range(len(rows["body"]))]
    (root / "data/raw/docs.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    return "data/raw/docs.jsonl"


TABULAR = {
    "jsonl": ("jsonl", write_jsonl, {}),
    "parquet": ("parquet", write_parquet, {}),
    "csv": ("csv", write_csv, {}),
    "hf-saved": ("hf", write_saved, {}),
    "hf-files": ("hf", write_data_files, {"read": {"pattern": "*.parquet"}}),
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data/raw").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("kind", sorted(TABULAR))
def test_a_tabular_source_loses_exactly_the_denied_rows(root: Path, kind: str) -> None:
    fmt, write, extra = TABULAR[kind]
    s = source(write(root), fmt, fields=FIELDS, **extra)
    before = read_source(s, root)
    assert any(g in raw_bytes(s.path(root)) for g in GONE) or kind == "parquet"
    assert scrub_source(s, root, DENY) == 2
    after = read_source(s, root)
    assert after == [r for r in before if r.record_id == "src/k-2"]  # the same record, unchanged
    assert not [g for g in GONE if g in raw_bytes(s.path(root))]
    assert scrub_source(s, root, DENY) == 0  # nothing left to erase: the file is left as is
    assert left_in_sources(Registry(schema_version=1, sources={"src": s}), root, DENY) == []


def test_the_unmapped_columns_of_the_kept_rows_survive(root: Path) -> None:
    s = source(write_csv(root), "csv", fields=FIELDS)
    scrub_source(s, root, DENY)
    text = (root / "data/raw/docs.csv").read_text()
    assert "nor this" in text and "do not ingest" not in text and "44" in text


@pytest.mark.parametrize("per", ["file", "block"])
def test_a_directory_source_keeps_every_other_id(root: Path, per: str) -> None:
    base = root / "data/raw/notes"
    (base / "deep").mkdir(parents=True)
    (base / "a.md").write_text("Keep me.\n\nDrop me now.\n\nKeep me too.\n", encoding="utf-8")
    (base / "deep" / "b.md").write_text("Drop me now.", encoding="utf-8")
    s = source("data/raw/notes", "dir", read={"pattern": "**/*.md", "records": per})
    before = {r.record_id: r for r in read_source(s, root)}
    denied = [i for i, r in before.items() if "Drop" in r.text]
    deny = Denials(records=frozenset(denied))
    assert scrub_source(s, root, deny) == len(denied) > 0
    after = {r.record_id: r for r in read_source(s, root) if r.record_id not in denied}
    assert after == {i: r for i, r in before.items() if i not in denied}
    assert b"Drop me" not in raw_bytes(base)


def test_a_text_source_keeps_its_paragraph_numbers(root: Path) -> None:
    (root / "data/raw/book.txt").write_text("One.\n\nTwo, to go.\n\nThree.\n", encoding="utf-8")
    s = source("data/raw/book.txt", "text")
    assert scrub_source(s, root, Denials(records=frozenset({"src/000002"}))) == 1
    got = {r.record_id: r.text for r in read_source(s, root)}
    assert got["src/000001"] == "One." and got["src/000003"] == "Three."
    assert "to go" not in (root / "data/raw/book.txt").read_text()


def test_generated_sources_are_left_to_their_generator(root: Path) -> None:
    path = write_jsonl(root)
    s = source(path, "jsonl", fields=FIELDS, generated_by="corpus")
    before = (root / path).read_bytes()
    assert scrub_sources(Registry(schema_version=1, sources={"src": s}), root, DENY) == {}
    assert (root / path).read_bytes() == before


def test_a_file_that_reads_differently_on_rewrite_is_left_untouched(root: Path) -> None:
    from lineage.scrub import _jsonl

    path = root / write_jsonl(root)
    before = path.read_bytes()
    with pytest.raises(ScrubError, match="nothing was changed"):
        _jsonl(source("x", "jsonl"), path, [True])  # one row known, three in the file
    assert path.read_bytes() == before


def test_probes_of_denied_records_and_subjects_go(root: Path) -> None:
    path = root / "probes.jsonl"
    rows = [{"id": "a", "record": "src/k-3", "subject": "x", "prompt": "p", "answer": "1"},
            {"id": "b", "subject": "bo", "prompt": "p", "answer": "2"},
            {"id": "c", "subject": "cy", "prompt": "p", "answer": "3"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert scrub_probes(path, DENY) == 2
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["c"]
