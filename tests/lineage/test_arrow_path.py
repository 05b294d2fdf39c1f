"""The Arrow path of columnar ingest against the per-row path: the same bytes, the same errors.

``lineage._arrow_rows`` builds a parquet/CSV/``datasets`` batch's records with
Arrow compute and ``lineage._arrow_runs`` sorts them as columns; both must give
exactly what the per-row path (``map_batch`` over Python lists, ``stage_sorted``
over ``(key, line)`` pairs) gives, on texts chosen to break a shortcut.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lineage._arrow_rows as arrow_rows_module
from lineage._arrow_rows import ArrowLines, ArrowRows, arrow_rows
from lineage._mapping import Rows, map_batch, mapping_of
from lineage._readers import ArrowBatch, Batch
from lineage._runs import stage_sorted
from lineage.errors import BadInputError, DuplicateRecordError
from lineage.gate import Denials
from lineage.ingest import ingest
from lineage.sources import Source, load_registry
from tests.conftest import source_entry
from tests.lineage.test_readers import keyed_lines, register

TRICKY = [
    "plain ascii",
    'a "quoted" word',
    "back\\slash and \\n literally",
    "tab\there, new\nline",
    "crlf\r\nand a lone cr\r!",
    "nul \x00 unit sep \x1f del \x7f",
    "café, naïve, Zürich (composed)",
    "cafe\u0301 (decomposed: NFC changes it)",
    "emoji 😀 and 𝄞 outside the BMP",
    'Zürich\t"already NFC" \\ escaped',
    "Greek question mark \u037e becomes ';'",
    "日本語のテキスト",  # no printable ASCII: the blank check must look closer
    "\u00a0nbsp then text",
    "line sep \u2028 para sep \u2029",
    '  "\\\r\n\t"  ',
    "x",
]


def _source(fields: dict, sid: str = "tricky") -> Source:
    entry = {"id": sid, "location": "x", "format": "parquet", "fields": fields}
    return Source.model_validate(source_entry(sid) | entry)


def _both(cols: dict, fields: dict) -> tuple[Rows | BaseException, Rows | BaseException]:
    """map_batch over Python lists, and over the same columns in Arrow."""
    m, out = mapping_of(_source(fields)), []
    for batch in (Batch(cols, lambda i: f"row {i + 1}"), _arrow(cols)):
        try:
            out.append(map_batch(m, batch))
        except BadInputError as exc:
            out.append(exc)
    return out[0], out[1]


def _arrow(cols: dict) -> ArrowBatch:
    return ArrowBatch(pa.RecordBatch.from_pydict(cols), lambda i: f"row {i + 1}")


def _pairs(lines) -> list[tuple[str, bytes]]:
    return lines.pairs() if isinstance(lines, ArrowLines) else lines


def test_tricky_texts_give_the_per_row_bytes_in_arrow() -> None:
    n = len(TRICKY)
    cols = {"k": [f"k{i:02d}" for i in range(n)], "t": TRICKY, "s": [f"p.{i}" for i in range(n)]}
    for fields in ({"id": "k", "text": "t", "subjects": "s"}, {"id": "k", "text": "t"}):
        per_row, arrow = _both(cols, fields)
        assert isinstance(arrow, ArrowRows)  # the fast path took it
        assert arrow.lines().pairs() == per_row.lines()
        assert list(arrow.records()) == list(per_row.records())
        assert arrow.ids == per_row.ids and arrow.subjects == per_row.subjects
        assert arrow.lines([3, 0]).pairs() == [per_row.lines()[3], per_row.lines()[0]]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("t", "   \n\t "),  # blank
        ("t", "\u00a0\u3000"),  # blank, in non-ASCII whitespace
        ("t", None),
        ("k", None),
        ("k", "has space"),
        ("k", "p1\n"),  # '$' must not match before a trailing newline
        ("k", "ünï"),
        ("s", "a,b c"),  # several subjects: the per-row path splits them
        ("s", "a b\n"),
        ("s", None),
        ("s", "bad/id"),
    ],
)
def test_rows_the_arrow_path_does_not_take_give_the_per_row_result(column, value) -> None:
    cols = {"k": ["k0", "k1", "k2"], "t": ["one", "two", "three"], "s": ["a", "b", "c"]}
    cols[column][1] = value
    m = mapping_of(_source({"id": "k", "text": "t", "subjects": "s"}))
    assert arrow_rows(m, _arrow(cols)) is None
    per_row, arrow = _both(cols, {"id": "k", "text": "t", "subjects": "s"})
    if isinstance(per_row, BaseException):
        assert type(arrow) is type(per_row) and str(arrow) == str(per_row)
        assert "row 2" in str(per_row)
    else:
        assert arrow.lines() == per_row.lines()


def test_large_strings_take_the_arrow_path_and_huge_columns_the_per_row_one(monkeypatch) -> None:
    n = len(TRICKY)
    cols = {"k": [f"k{i}" for i in range(n)], "t": TRICKY}
    m = mapping_of(_source({"id": "k", "text": "t"}))
    per_row = map_batch(m, Batch(cols, str))
    large = pa.RecordBatch.from_arrays(
        [pa.array(cols["k"], pa.large_string()), pa.array(TRICKY, pa.large_string())],
        names=["k", "t"],
    )
    assert arrow_rows(m, ArrowBatch(large, str)).lines().pairs() == per_row.lines()
    monkeypatch.setattr(arrow_rows_module, "MAX_BYTES", 100)  # as if the texts were gigabytes
    assert arrow_rows(m, ArrowBatch(large, str)) is None
    assert map_batch(m, ArrowBatch(large, str)).lines() == per_row.lines()


def test_integer_ids_and_list_subjects_take_the_per_row_path() -> None:
    cols = {"k": [7, 8], "t": ["a", "b"], "s": [["y", "x"], []]}
    per_row, arrow = _both(cols, {"id": "k", "text": "t", "subjects": "s"})
    assert not isinstance(arrow, ArrowRows) and arrow.lines() == per_row.lines()


@pytest.mark.parametrize("order", ["shuffled", "sorted"])
def test_arrow_runs_sort_as_the_per_row_runs(tmp_path: Path, order: str) -> None:
    pairs, chunks = keyed_lines(3000, order, seed=5, text=',"t":"é"')
    lines = [_as_lines(c) if k % 3 else c for k, c in enumerate(chunks)]  # mixed, as on fallback
    expected = b"".join(line + b"\n" for _, line in sorted(pairs))
    for run_bytes in (1000, 50_000, 1 << 30):  # many runs, a few, all in memory
        spilled = stage_sorted(
            tmp_path / "r.jsonl", [_as_lines(chunks[0]), *lines[1:]], run_bytes=run_bytes
        )
        assert spilled.read_bytes() == expected
        spilled.unlink()
    dupe = [("s/00007", b"{}"), ("s/02999", b"{}"), ("s/02999", b"{}")]
    for run_bytes in (1000, 1 << 30):
        with pytest.raises(DuplicateRecordError) as arrow_error:
            stage_sorted(tmp_path / "r.jsonl", [_as_lines(dupe), *lines], run_bytes=run_bytes)
        with pytest.raises(DuplicateRecordError) as python_error:
            stage_sorted(tmp_path / "r.jsonl", [dupe, *chunks], run_bytes=run_bytes)
        assert arrow_error.value.problems == python_error.value.problems
        assert len(arrow_error.value.problems) == 3
    assert list(tmp_path.iterdir()) == []  # no temp file, no run file left behind


def _as_lines(pairs: list[tuple[str, bytes]]) -> ArrowLines:
    keys = pa.array([k for k, _ in pairs], pa.string())
    return ArrowLines(keys, pa.array([line + b"\n" for _, line in pairs], pa.binary()))


def test_parquet_ingest_writes_the_bytes_of_the_same_rows_as_jsonl(project) -> None:
    """End to end: a parquet source and a jsonl source of the same rows, shuffled, one file."""
    import json

    rng = random.Random(9)
    n = 4000
    rows = [
        {"id": f"r{i:05d}", "text": rng.choice(TRICKY) + f" #{i}", "subject_ids": [f"p{i % 97}"]}
        for i in rng.sample(range(n), n)
    ]
    raw = project.root / "data" / "raw"
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    table = table.append_column("subject", pa.array([r["subject_ids"][0] for r in rows]))
    pq.write_table(table, raw / "same.parquet", row_group_size=700)
    (raw / "same.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = {"id": "id", "text": "text", "subjects": "subject"}
    register(project, "pq", location="data/raw/same.parquet", format="parquet", fields=fields)
    register(project, "js", location="data/raw/same.jsonl", format="jsonl")
    registry = load_registry(project.root / "data" / "sources.yaml")
    out = project.root / "data" / "records"
    denials = Denials(records=frozenset({"pq/r00003", "js/r00003"}), subjects=frozenset({"p5"}))
    pool = pa.default_memory_pool().backend_name
    for sid in ("pq", "js"):
        ingest(registry, project.root, out, only=sid, denials=denials)
    assert pa.default_memory_pool().backend_name == pool  # the reader's allocator switch undone
    parquet, jsonl = (out / "pq.jsonl").read_bytes(), (out / "js.jsonl").read_bytes()
    assert parquet.replace(b'"pq/', b'"js/').replace(b'"pq"', b'"js"') == jsonl
    assert parquet.count(b"\n") == n - 1 - len([i for i in range(n) if i % 97 == 5])
