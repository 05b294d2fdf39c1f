"""Source formats beside jsonl: parquet, csv, a directory, a `datasets` dataset, mapped by fields.

Every test uses column names the code has never seen (``doc_key``, ``body``,
``people``) and goes through the real readers (pyarrow, ``datasets``) into a
small project's ingest → manifest → gate.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from lineage._canonical import canonical_json
from lineage._mapping import map_batch, mapping_of
from lineage._readers import Batch
from lineage._runs import stage_sorted
from lineage.errors import DuplicateRecordError, RecordHashMismatchError
from lineage.gate import Denials
from lineage.ingest import ingest
from lineage.records import Record, read_records
from lineage.sources import Source, load_registry
from lineage.stages import run_gate, run_ingest, run_manifest
from tests._cli import exante
from tests.conftest import AS_OF, Project, make_project, source_entry

RECORDS = Path("data/records")
FIELDS = {"id": "doc_key", "text": "body", "subjects": "people"}
ROWS = {
    "doc_key": ["k-1", "k-2", "k-3"],
    "body": ["Ada met Bo at the pier.", "Cy sells bread.", "Nobody in particular."],
    "people": [["ada", "bo"], ["cy"], []],
    "shoe_size": [38, 44, 40],  # unmapped: must never reach a record
    "secret_note": ["do not ingest", "nor this", "nor this"],
}


def register(project: Project, sid: str, **entry) -> None:
    """Add source ``sid`` (CC0, no personal data) to the project's registry."""
    path = project.root / "data" / "sources.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["sources"][sid] = source_entry(sid) | entry
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def table(rows: dict = ROWS) -> pa.Table:
    return pa.table(rows)


def write_parquet(root: Path, rows: dict = ROWS) -> str:
    pq.write_table(table(rows), root / "data/raw/docs.parquet")
    return "data/raw/docs.parquet"


def write_csv(root: Path, rows: dict = ROWS) -> str:
    flat = dict(rows) | {"people": [";".join(p) for p in rows["people"]]}
    pacsv.write_csv(table(flat), root / "data/raw/docs.csv")
    return "data/raw/docs.csv"


def write_saved(root: Path, rows: dict = ROWS) -> str:
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "data/raw/saved"))
    return "data/raw/saved"


def write_data_files(root: Path, rows: dict = ROWS) -> str:
    (root / "data/raw/files").mkdir()
    half = len(rows["body"]) // 2
    for n, part in enumerate((slice(0, half), slice(half, None))):
        pq.write_table(
            table({k: v[part] for k, v in rows.items()}), root / f"data/raw/files/{n}.parquet"
        )
    return "data/raw/files"


TABULAR = {
    "parquet": ("parquet", write_parquet, {}),
    "csv": ("csv", write_csv, {}),
    "hf-saved": ("hf", write_saved, {}),
    "hf-files": ("hf", write_data_files, {"read": {"pattern": "*.parquet"}}),
}


def lines(root: Path, sid: str) -> list[dict]:
    return [json.loads(x) for x in (root / RECORDS / f"{sid}.jsonl").read_text().splitlines()]


def allowed(root: Path) -> set[str]:
    data = (root / "data/gate/allowed.leaves").read_text()
    return {line.split("\t")[0] for line in data.splitlines()}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / RECORDS).iterdir())}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "proj")


@pytest.mark.parametrize("kind", sorted(TABULAR))
def test_tabular_source_through_manifest_and_gate(project: Project, kind: str) -> None:
    fmt, write, extra = TABULAR[kind]
    register(project, "docs", format=fmt, location=write(project.root), fields=FIELDS, **extra)
    project.build()
    got = lines(project.root, "docs")
    assert [(r["record_id"], r["subject_ids"], r["text"]) for r in got] == [
        ("docs/k-1", ["ada", "bo"], ROWS["body"][0]),
        ("docs/k-2", ["cy"], ROWS["body"][1]),
        ("docs/k-3", [], ROWS["body"][2]),
    ]
    assert all(set(r) == {"record_id", "source_id", "subject_ids", "text", "sha256"} for r in got)
    raw = (project.root / RECORDS / "docs.jsonl").read_text()
    assert "secret_note" not in raw and "do not ingest" not in raw and "shoe_size" not in raw
    assert {"docs/k-1", "docs/k-2", "docs/k-3"} <= allowed(project.root)


@pytest.mark.parametrize("per", ["file", "block"])
def test_directory_source(project: Project, per: str) -> None:
    base = project.root / "data/raw/notes"
    (base / "deep").mkdir(parents=True)
    (base / "a.md").write_text("First block.\n\nSecond block.\n", encoding="utf-8")
    (base / "deep" / "b.md").write_text("Only block.", encoding="utf-8")
    (base / "skip.bin").write_bytes(b"\xff not matched by the pattern")
    read = {"pattern": "**/*.md", "records": per}
    register(project, "notes", format="dir", location="data/raw/notes", read=read)
    project.build()
    got = {r["record_id"]: r["text"] for r in lines(project.root, "notes")}
    if per == "file":
        assert got == {
            "notes/a.md": "First block.\n\nSecond block.\n",
            "notes/deep:b.md": "Only block.",
        }
    else:
        assert got == {
            "notes/a.md:000001": "First block.",
            "notes/a.md:000002": "Second block.",
            "notes/deep:b.md:000001": "Only block.",
        }
    assert set(got) <= allowed(project.root)


def test_a_file_name_that_is_no_id_is_named_with_the_way_out(project: Project) -> None:
    (project.root / "data/raw/notes").mkdir()
    (project.root / "data/raw/notes/my note.txt").write_text("Text.", encoding="utf-8")
    register(project, "notes", format="dir", location="data/raw/notes")
    result = exante(project.root, "ingest", "--source", "notes")
    assert result.code == 3 and "my note.txt: source notes: 'id' must match" in result.err
    assert "fields: {id_from: [text]}" in result.err
    register(
        project, "notes", format="dir", location="data/raw/notes", fields={"id_from": ["text"]}
    )
    assert exante(project.root, "ingest", "--source", "notes").code == 0


@pytest.mark.parametrize("kind", sorted(TABULAR))
def test_missing_mapped_column_exits_3_naming_source_and_column(project: Project, kind) -> None:
    fmt, write, extra = TABULAR[kind]
    fields = FIELDS | {"subjects": "persons"}
    register(project, "docs", format=fmt, location=write(project.root), fields=fields, **extra)
    run_ingest(project.root, source="crm")
    before = snapshot(project.root)
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert "source docs" in result.err and "'persons'" in result.err
    assert snapshot(project.root) == before


def test_missing_mapped_key_in_a_jsonl_row_exits_3(project: Project) -> None:
    raw = project.root / "data/raw/posts.jsonl"
    raw.write_text('{"doc_key": "a", "body": "x"}\n{"doc_key": "b"}\n', encoding="utf-8")
    fields = {"id": "doc_key", "text": "body"}
    register(project, "posts", format="jsonl", location="data/raw/posts.jsonl", fields=fields)
    result = exante(project.root, "ingest")
    assert result.code == 3
    assert "data/raw/posts.jsonl:2: source posts: mapped column 'body' is missing" in result.err
    assert not (project.root / RECORDS).exists()


@pytest.mark.parametrize(
    ("fmt", "name", "content"),
    [
        ("parquet", "bad.parquet", b"PAR1 this is not parquet at all"),
        ("csv", "bad.csv", b'doc_key,body,people\nk-1,"unterminated\n'),
        ("hf", "bad.parquet", b"PAR1 nor is this"),
    ],
)
def test_malformed_file_is_named_and_nothing_written(project, fmt, name, content) -> None:
    (project.root / "data/raw" / name).write_bytes(content)
    register(project, "bad", format=fmt, location=f"data/raw/{name}", fields=FIELDS)
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert name in result.err
    assert not (project.root / RECORDS).exists()


def _unchecked_strings(values: list[bytes]) -> pa.Array:
    """A string array of ``values`` as they are: pyarrow builds it without checking UTF-8."""
    import numpy as np

    offsets = np.zeros(len(values) + 1, np.int32)
    offsets[1:] = np.cumsum([len(v) for v in values])
    data = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.string(), len(values), data)


@pytest.mark.parametrize(
    ("fmt", "column", "fields"),
    [
        ("parquet", "body", FIELDS),  # the columnar path
        ("parquet", "lic", {"id": "doc_key", "text": "body", "license": "lic"}),  # per row
        ("hf", "body", FIELDS),  # datasets' own parquet reader
    ],
)
def test_a_string_that_is_not_utf8_is_named_and_nothing_is_lost(project, fmt, column, fields):
    """Parquet keeps a string column's bytes unchecked: ingest names the row and column (exit 3)."""
    rows = dict(ROWS) | {"lic": [None, "MIT", None]}
    write_parquet(project.root, rows)
    register(project, "docs", format=fmt, location="data/raw/docs.parquet", fields=fields)
    run_ingest(project.root)
    before = snapshot(project.root)
    bad = [v.encode() if v else b"" for v in rows[column]]
    bad[1] = b"caf\xe9 au lait"  # Latin-1, not UTF-8
    table_ = table(rows).set_column(
        table(rows).schema.get_field_index(column), column, _unchecked_strings(bad)
    )
    pq.write_table(table_, project.root / "data/raw/docs.parquet")
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert "docs.parquet: row 2: column" in result.err and repr(column) in result.err
    assert "not valid UTF-8 (byte 0xe9 at offset 3)" in result.err
    assert snapshot(project.root) == before  # the records of the last good ingest, untouched


@pytest.mark.parametrize("encoding", ["list", "dictionary"])
def test_strings_inside_a_list_or_a_dictionary_are_checked_too(project, encoding) -> None:
    """A list of subject ids, or a dictionary-encoded text column, holds strings all the same."""
    write_parquet(project.root)
    register(project, "docs", format="parquet", location="data/raw/docs.parquet", fields=FIELDS)
    run_ingest(project.root)
    before = snapshot(project.root)
    if encoding == "list":  # row 2's subjects: ["c\xe9"]
        column = "people"
        values = _unchecked_strings([b"ada", b"bo", b"c\xe9"])
        bad = pa.ListArray.from_arrays(pa.array([0, 2, 3, 3], pa.int32()), values)
    else:  # row 2's text, through the dictionary's second entry
        column = "body"
        values = _unchecked_strings([ROWS["body"][0].encode(), b"Cy sells br\xe9ad."])
        bad = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), values)
    rows = table().set_column(table().schema.get_field_index(column), column, bad)
    pq.write_table(rows, project.root / "data/raw/docs.parquet")
    result = exante(project.root, "ingest")
    assert result.code == 3, result.err
    assert f"docs.parquet: row 2: column {column!r} is not valid UTF-8" in result.err
    assert snapshot(project.root) == before


def test_derived_ids_are_stable_when_rows_move_and_others_change(project: Project) -> None:
    fields = {"id_from": ["body"], "text": "body", "subjects": "people"}
    register(project, "docs", format="parquet", location=write_parquet(project.root), fields=fields)
    run_ingest(project.root, source="docs")
    first = {r["text"]: r["record_id"] for r in lines(project.root, "docs")}
    moved = {k: list(reversed(v)) for k, v in ROWS.items()}
    moved["body"][0] = "A new row, changed."  # was the last row
    write_parquet(project.root, moved)
    run_ingest(project.root, source="docs")
    second = {r["text"]: r["record_id"] for r in lines(project.root, "docs")}
    kept = ROWS["body"][:2]
    assert {t: second[t] for t in kept} == {t: first[t] for t in kept}
    assert second["A new row, changed."] not in first.values()


# -- per-record terms ------------------------------------------------------------------


TERMS_ROWS = {
    "doc_key": ["ok", "own-mit", "proprietary", "opted-out", "expired"],
    "body": ["Plain text.", "MIT text.", "Closed text.", "Reserved text.", "Old text."],
    "lic": [None, "MIT", "LicenseRef-Closed", None, None],
    "optout": [None, None, None, True, None],
    "since": [None, None, None, None, "2020-01-01"],
}
TERMS_FIELDS = {
    "id": "doc_key",
    "text": "body",
    "license": "lic",
    "tdm_opt_out": "optout",
    "retention_start": "since",
}


def register_mixed(project: Project, rows: dict = TERMS_ROWS, **entry) -> None:
    """Source ``mixed``: a parquet file whose rows may carry their own terms."""
    location = write_parquet(project.root, rows)
    register(project, "mixed", format="parquet", location=location, fields=TERMS_FIELDS, **entry)


def test_per_record_terms_are_judged_per_record(project: Project) -> None:
    register_mixed(project, retention="P2Y")
    project.build()
    ok = allowed(project.root)
    assert {"mixed/ok", "mixed/own-mit"} <= ok
    assert not {"mixed/proprietary", "mixed/opted-out", "mixed/expired"} & ok
    summary = json.loads((project.root / "data/gate/summary.json").read_text())
    assert summary["sources"]["mixed"]["reasons"] == []  # the source's own terms are fine
    refused = refusals(project.root)
    assert "record mixed/proprietary (own terms)" in refused["mixed/proprietary"]
    assert "license LicenseRef-Closed" in refused["mixed/proprietary"]
    assert "text-and-data mining" in refused["mixed/opted-out"]
    assert "expired on 2022-01-01" in refused["mixed/expired"]


def test_own_terms_only_narrow_a_source_unless_the_registry_says_override(project: Project):
    register_mixed(project, license="LicenseRef-Closed")  # the source itself is refused
    project.build()
    ok = allowed(project.root)
    assert not {"mixed/own-mit", "mixed/ok"} & ok  # an unsigned raw column cannot widen
    assert "license LicenseRef-Closed" in refusals(project.root)["mixed/own-mit"]


def test_own_license_admits_a_record_of_a_refused_source_under_override(project: Project):
    fields = TERMS_FIELDS | {"record_terms": "override"}
    location = write_parquet(project.root, TERMS_ROWS)
    register(project, "mixed", format="parquet", location=location, fields=fields,
             license="LicenseRef-Closed")  # fmt: skip
    project.build()
    ok = allowed(project.root)
    assert "mixed/own-mit" in ok
    assert "mixed/ok" not in ok  # the source's own license applies to it
    assert "source mixed is refused" in refusals(project.root)["mixed/ok"]


def refusals(root: Path) -> dict[str, str]:
    from lineage.gate import PREDICATE_TYPE
    from lineage.signing import parse_statement, read_envelope

    env = read_envelope(root / "data/gate/decision.dsse.json", what="decision")
    pred = parse_statement(base64.b64decode(env["payload"]), PREDICATE_TYPE)["predicate"]
    return {r["record_id"]: " | ".join(r["reasons"]) for r in pred["refused_records"]}


def test_terms_are_bound_by_the_signed_digest(project: Project) -> None:
    register_mixed(project)
    run_ingest(project.root)
    run_manifest(project.root, project.signer)
    path = project.root / RECORDS / "mixed.jsonl"
    records = list(read_records(path))
    [closed] = [r for r in records if r.record_id == "mixed/proprietary"]
    assert closed.terms == (("license", "LicenseRef-Closed"),) and closed.digest_matches()
    lax = Record(**{**closed.__dict__, "terms": (("license", "MIT"),)})  # a swapped license
    assert not lax.digest_matches()
    path.write_bytes(b"".join(
        (lax if r.record_id == closed.record_id else r).to_json() + b"\n" for r in records
    ))  # fmt: skip
    with pytest.raises(RecordHashMismatchError, match="mixed/proprietary"):
        run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)


def test_malformed_record_terms_name_the_column(project: Project) -> None:
    rows = TERMS_ROWS | {"since": ["2020-13-01", None, None, None, None]}
    register_mixed(project, rows)
    result = exante(project.root, "ingest")
    assert result.code == 3
    assert "row 1: source mixed" in result.err
    assert "column 'since' (retention_start) must be an ISO date" in result.err


# -- datasets caches ----------------------------------------------------------------


def _files_holding(marker: bytes, top: Path, *, since: float, skip: Path) -> list[Path]:
    """Files under ``top`` (not under ``skip``) changed since ``since`` that contain ``marker``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in filenames:
            path = here / name
            try:
                if path.is_file() and path.stat().st_mtime >= since and marker in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def test_hf_ingest_leaves_no_copy_outside_the_project(project: Project) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    rows = ROWS | {"body": [f"{b} {marker}" for b in ROWS["body"]]}
    since = time.time() - 2
    register(project, "saved", format="hf", location=write_saved(project.root, rows),
             fields=FIELDS)  # fmt: skip
    register(project, "files", format="hf", location=write_data_files(project.root, rows),
             fields=FIELDS, read={"pattern": "*.parquet"})  # fmt: skip
    run_ingest(project.root)
    root = project.root.resolve()
    assert _files_holding(
        marker.encode(), root, since=since, skip=Path("/nonexistent")
    )  # the probe works
    tops = {Path.home(), Path(tempfile.gettempdir()), Path("/dev/shm")}
    tops |= {Path(os.environ[v]) for v in ("HF_HOME", "HF_DATASETS_CACHE") if v in os.environ}
    tops |= {Path(datasets.config.HF_DATASETS_CACHE), Path(datasets.config.HF_CACHE_HOME)}
    leaked = [
        p
        for t in tops
        if t.exists()
        for p in _files_holding(marker.encode(), t.resolve(), since=since, skip=root)
    ]
    assert leaked == []


# -- fast paths against the obvious ones ----------------------------------------------


ODD_TEXTS = [
    "plain",
    'quote " and \\ slash',
    "tab\tnew\nline",
    "ctrl \x01\x1f del \x7f",
    "Zürich ☃ 𝄞",
]


def test_batch_lines_are_the_canonical_json_of_the_records() -> None:
    fields = {"id": "k", "text": "t", "subjects": "s", "license": "l"}
    source = Source.model_validate(
        source_entry("odd") | {"id": "odd", "location": "x", "format": "parquet", "fields": fields}
    )
    n = len(ODD_TEXTS)
    cols = {
        "k": [f"k{i}" for i in range(n)],
        "t": ODD_TEXTS,
        "s": [["b", "a"], [], "c;d e", None, ["x:1"]],
        "l": [None, "MIT", None, "LicenseRef-A.b", None],
    }
    rows = map_batch(mapping_of(source), Batch(cols, str))
    records = list(rows.records())
    for (rid, line), r in zip(rows.lines(), records, strict=True):
        made = Record.make(r.record_id, "odd", r.subject_ids, r.text, r.terms)
        assert r == made and rid == r.record_id
        d = {k: v for k, v in made.__dict__.items() if k != "terms"}
        expected = canonical_json(d | {"subject_ids": list(made.subject_ids)} | (
            {"terms": dict(made.terms)} if made.terms else {}
        ))  # fmt: skip
        assert line == expected == made.to_json()
    assert [r.subject_ids for r in records] == [("a", "b"), (), ("c", "d", "e"), (), ("x:1",)]
    assert rows.lines([1, 3]) == [rows.lines()[1], rows.lines()[3]]


def keyed_lines(n: int, order: str, *, seed: int, text: str = ""):
    """``n`` ``(key, line)`` pairs in key order or shuffled, and the same in batches of 100."""
    pairs = [(f"s/{i:05d}", f'{{"n":{i}{text}}}'.encode()) for i in range(n)]
    if order == "shuffled":
        random.Random(seed).shuffle(pairs)
    return pairs, [pairs[i : i + 100] for i in range(0, n, 100)]


@pytest.mark.parametrize("order", ["shuffled", "sorted"])
def test_sorted_runs_give_the_bytes_of_an_in_memory_sort(tmp_path: Path, order: str) -> None:
    pairs, batches = keyed_lines(2000, order, seed=3)
    spilled = stage_sorted(tmp_path / "r.jsonl", batches, run_bytes=1000)  # about 100 runs
    assert spilled.read_bytes() == b"".join(line + b"\n" for _, line in sorted(pairs))
    spilled.unlink()
    with pytest.raises(DuplicateRecordError, match="s/00007"):
        stage_sorted(
            tmp_path / "r.jsonl", [*batches, [pairs[0], ("s/00007", b"{}")]], run_bytes=1000
        )
    in_order = sorted([*pairs, ("s/01234", b"{}")])  # runs in order, one holding a duplicate
    pieces = [in_order[i : i + 100] for i in range(0, len(in_order), 100)]
    with pytest.raises(DuplicateRecordError, match="s/01234"):
        stage_sorted(tmp_path / "r.jsonl", pieces, run_bytes=1000)
    assert list(tmp_path.iterdir()) == []  # no temp file, no run file left behind


# -- the dvc ingest stage ---------------------------------------------------------------


def test_dvc_ingest_stage_tracks_a_directory_and_a_mapped_source(project: Project) -> None:
    """``${item.location}`` of the real dvc.yaml as a dep: a directory works, fields are params."""
    repo, root = Path(__file__).resolve().parents[2], project.root
    shutil.copytree(repo / "lineage", root / "lineage", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(repo / "data" / "ledger.denied.json", root / "data" / "ledger.denied.json")
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    only_ingest = {"vars": pipeline["vars"], "stages": {"ingest": pipeline["stages"]["ingest"]}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(only_ingest))
    registry = root / "data" / "sources.yaml"
    registry.write_text(yaml.safe_dump({"schema_version": 1, "sources": {}}))
    (root / "data/raw/notes").mkdir()
    (root / "data/raw/notes/a.txt").write_text("A note.", encoding="utf-8")
    register(project, "notes", format="dir", location="data/raw/notes")
    register(project, "docs", format="parquet", location=write_parquet(root), fields=FIELDS)
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "repro", "-q")
    assert {r["record_id"] for r in lines(root, "notes")} == {"notes/a.txt"}
    assert len(lines(root, "docs")) == 3
    (root / "data/raw/notes/b.txt").write_text("Another note.", encoding="utf-8")
    stale = dvc(root, "status").stdout
    assert "ingest@notes" in stale and "ingest@docs" not in stale
    raw = yaml.safe_load(registry.read_text())
    raw["sources"]["docs"]["fields"]["subjects"] = "shoe_size"  # a mapping change is a param
    registry.write_text(yaml.safe_dump(raw))
    assert "ingest@docs" in dvc(root, "status").stdout


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"dvc {args} failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_denied_subjects_and_records_are_left_out_of_a_mapped_source(project: Project) -> None:
    register(project, "docs", format="parquet", location=write_parquet(project.root), fields=FIELDS)
    registry = load_registry(project.root / "data/sources.yaml")
    denials = Denials(records=frozenset({"docs/k-3"}), subjects=frozenset({"bo"}))
    counts = ingest(registry, project.root, project.root / RECORDS, only="docs", denials=denials)
    assert counts == {"docs": 1}
    assert [r["record_id"] for r in lines(project.root, "docs")] == ["docs/k-2"]


def test_a_dataset_dict_needs_its_split_named(project: Project) -> None:
    splits = {"train": datasets.Dataset.from_dict(ROWS), "test": datasets.Dataset.from_dict(ROWS)}
    datasets.DatasetDict(splits).save_to_disk(str(project.root / "data/raw/dd"))
    register(project, "dd", format="hf", location="data/raw/dd", fields=FIELDS)
    result = exante(project.root, "ingest", "--source", "dd")
    assert result.code == 3 and "has splits test, train" in result.err
    register(
        project, "dd", format="hf", location="data/raw/dd", fields=FIELDS, read={"split": "test"}
    )
    assert exante(project.root, "ingest", "--source", "dd").code == 0
    assert len(lines(project.root, "dd")) == 3


def test_an_integer_id_column_names_rows_by_its_decimal_string(project: Project) -> None:
    rows = ROWS | {"doc_key": [7, 8, 9]}
    register(
        project, "docs", format="parquet", location=write_parquet(project.root, rows), fields=FIELDS
    )
    run_ingest(project.root, source="docs")
    assert [r["record_id"] for r in lines(project.root, "docs")] == ["docs/7", "docs/8", "docs/9"]


def test_registry_refuses_a_tabular_source_without_fields_and_misplaced_options(project) -> None:
    register(project, "docs", format="parquet", location=write_parquet(project.root))
    register(project, "notes", format="csv", location="x.csv", fields=FIELDS, read={"split": "a"})
    result = exante(project.root, "ingest")
    assert result.code == 3
    assert "sources.docs: Value error, a parquet source needs 'fields'" in result.err
    assert "read.split applies to format hf only" in result.err


def test_hf_over_csv_data_files_knows_its_columns(project: Project) -> None:
    """A streamed CSV learns its columns from its first row, not from a schema."""
    (project.root / "data/raw/csvs").mkdir()
    flat = {k: v for k, v in ROWS.items() if k != "people"}
    pacsv.write_csv(table(flat), project.root / "data/raw/csvs/a.csv")
    register(project, "csvs", format="hf", location="data/raw/csvs",
             fields={"id": "doc_key", "text": "body"}, read={"pattern": "*.csv"})  # fmt: skip
    run_ingest(project.root)
    assert [r["text"] for r in lines(project.root, "csvs")] == sorted(
        ROWS["body"], key=lambda t: ROWS["doc_key"][ROWS["body"].index(t)]
    )


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_ingest_of_a_parquet_source_never_imports_pandas(project: Project, order: str) -> None:
    """pyarrow imports pandas on its first conversion of a Python object (0.13-0.19 s);
    the columnar path builds its Arrow values from bytes (``lineage._arrow_build``).

    Shuffled ids with runs of 4 KiB: sorted, spilled and merged; texts with quotes,
    a ``\\r`` and a character NFC changes: replaced rows.
    """
    n = 2000
    keys = [f"k-{i:05d}" for i in range(n)]
    if order == "shuffled":
        random.Random(5).shuffle(keys)
    texts = [f'Row {k} says "hi"\r\n' if int(k[2:]) % 7 == 0 else f"Row {k}, e\u0301 too"
             for k in keys]  # fmt: skip
    pq.write_table(pa.table({"doc_key": keys, "body": texts}), project.root / "data/raw/d.parquet")
    register(project, "d", format="parquet", location="data/raw/d.parquet",
             fields={"id": "doc_key", "text": "body"})  # fmt: skip
    code = f"""if True:
        import sys
        from pathlib import Path
        import lineage._runs
        from lineage.ingest import ingest
        from lineage.sources import load_registry

        lineage._runs.stage_sorted.__kwdefaults__["run_bytes"] = 4096  # about 80 runs
        root = Path({str(project.root)!r})
        counts = ingest(load_registry(root / "data/sources.yaml"), root, root / "data/records")
        print(counts["d"], "pandas" in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == [str(n), "False"]
    got = lines(project.root, "d")
    assert [r["record_id"] for r in got] == [f"d/{k}" for k in sorted(keys)]
    assert (
        got[0]["text"] == 'Row k-00000 says "hi"\n' and got[1]["text"] == "Row k-00001, \u00e9 too"
    )


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the mappings from /proc")
def test_reading_a_parquet_file_keeps_nothing_of_what_it_read(project: Project) -> None:
    """Arrow's pools and Python's heap stay flat while batch after batch is read; nothing is mapped.

    What the reader keeps is counted where it is allocated, not as the
    resident set, whose size also follows the allocator's timing (it grew
    22 MiB on one CI machine and not at all on another, for the same code).
    Pre-buffering keeps each column chunk in an arrow pool until the file
    closes (53 MiB over the second half of this file); a memory-mapped file
    keeps its pages as the mapping. The file is written, and read, each in a
    process of its own.
    """
    from lineage._readers import ARROW_BATCH

    rows, path = 32 * ARROW_BATCH, project.root / "data" / "raw" / "big.parquet"
    write = f"""if True:
        import os, pyarrow as pa, pyarrow.parquet as pq
        rows = {rows}
        texts = [os.urandom(50).hex() for _ in range(rows)]  # 100 characters, incompressible
        cols = {{"id": [f"r{{i}}" for i in range(rows)], "t": texts, "unmapped": [0.5] * rows}}
        pq.write_table(pa.table(cols), {str(path)!r}, row_group_size=2 * {ARROW_BATCH})
    """
    subprocess.run([sys.executable, "-c", write], check=True)
    size = path.stat().st_size / (1 << 20)
    register(project, "big", format="parquet", location="data/raw/big.parquet",
             fields={"id": "id", "text": "t"})  # fmt: skip
    read = f"""if True:
        import json, tracemalloc
        from pathlib import Path
        import pyarrow as pa
        from lineage._readers import read_batches
        from lineage.sources import load_registry

        def mapped():
            maps = Path("/proc/self/maps").read_text().splitlines()
            return any(line.endswith("/big.parquet") for line in maps)

        pools = [getattr(pa, f"{{name}}_memory_pool")() for name in pa.supported_memory_backends()]

        root = Path({str(project.root)!r})
        source = load_registry(root / "data" / "sources.yaml").get("big")
        seen = []
        tracemalloc.start()
        for batch in read_batches(source, root, ("id", "t")):  # the file open throughout
            held = sum(p.bytes_allocated() for p in pools)
            seen.append((batch.arrow.num_rows, held, tracemalloc.get_traced_memory()[0], mapped()))
            del batch
        print(json.dumps(seen))
    """
    out = subprocess.run([sys.executable, "-c", read], check=True, capture_output=True, text=True)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert sum(n for n, *_ in seen) == rows and len(seen) == 32
    assert not any(m for *_, m in seen), "the parquet file was memory-mapped"
    mib = 1 << 20
    for what, at in (("arrow's pools", 1), ("Python's heap", 2)):
        first = max(s[at] for s in seen[:16])  # the reader's working set
        grew = (max(s[at] for s in seen[16:]) - first) / mib
        assert grew < size / 2 / 8, f"{what} grew {grew:.0f} MiB over the second half of {size:.0f}"
