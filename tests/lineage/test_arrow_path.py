"""The Arrow path of columnar ingest against the per-row path: the same bytes, the same errors.

``lineage._arrow_rows`` builds a parquet/CSV/``datasets`` batch's records with
Arrow compute and ``lineage._arrow_runs`` sorts them as columns; both must give
exactly what the per-row path (``map_batch`` over Python lists, ``stage_sorted``
over ``(key, line)`` pairs) gives, on texts chosen to break a shortcut.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the NFC shortcut, native hashing, batches mapped on threads --------------------


def test_the_nfc_table_is_what_this_python_s_unicodedata_gives() -> None:
    import unicodedata

    from lineage import _nfc_stable

    if unicodedata.unidata_version != _nfc_stable.UNIDATA_VERSION:
        assert _nfc_stable.starts_and_ends() is None  # another Unicode: all non-ASCII in Python
        pytest.skip(f"Unicode {unicodedata.unidata_version}: the table is for another version")
    assert _nfc_stable.unstable_ranges() == list(_nfc_stable.RANGES)
    assert _nfc_stable._source() == Path(_nfc_stable.__file__).read_text(encoding="utf-8")


def _stable(cp: int) -> bool:
    return cp not in _unstable()


@functools.cache
def _unstable() -> frozenset[int]:
    from lineage._nfc_stable import RANGES

    return frozenset(cp for a, b in RANGES for cp in range(a, b + 1))


def test_texts_of_stable_characters_are_their_own_nfc() -> None:
    """Every stable character alone, and random texts of them, are unchanged by NFC."""
    import unicodedata

    stable = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and _stable(c)]
    assert all(unicodedata.normalize("NFC", c) == c for c in stable)
    assert not any(map(unicodedata.combining, stable))
    # what starts a stable character's decomposition can join nothing on its left either
    leads = {unicodedata.normalize("NFD", c)[0] for c in stable}
    assert all(_stable(ord(c)) and not unicodedata.combining(c) for c in leads)
    rng = random.Random(3)
    latin = [c for c in stable if ord(c) < 0x3000]  # dense in letters that do compose
    for _ in range(20_000):
        text = "".join(rng.choice(latin if rng.random() < 0.8 else stable) for _ in range(6))
        assert unicodedata.normalize("NFC", text) == text, ascii(text)


@given(st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1), min_size=1))
@settings(max_examples=300, deadline=None)
def test_random_unicode_gives_the_per_row_bytes_in_arrow(texts: list[str]) -> None:
    texts = [f"x{t}" for t in texts]  # never blank: the blank check has its own test
    cols = {"k": [f"k{i}" for i in range(len(texts))], "t": texts}
    per_row, arrow = _both(cols, {"id": "k", "text": "t"})
    assert isinstance(arrow, ArrowRows)
    assert arrow.lines().pairs() == per_row.lines()


@given(st.lists(st.text(st.characters(exclude_categories=("Cs",))), min_size=1))
@settings(max_examples=300, deadline=None)
def test_the_byte_scan_finds_exactly_the_texts_with_an_unstable_character(texts) -> None:
    """The scan decodes UTF-8 itself: it must pick the rows a per-character lookup picks."""
    from lineage._nfc_stable import starts_and_ends

    if starts_and_ends() is None:
        pytest.skip("another Unicode version: every non-ASCII text goes to Python")
    texts = [*texts, "caf\u00e9 \U0001d11e", "x\u0301", "\r", "\u037e", "\U0002f800", "\u1161"]
    canon, _ = arrow_rows_module._scan(pa.array(texts, pa.string()))
    expected = [i for i, t in enumerate(texts) if any(c == "\r" or not _stable(ord(c)) for c in t)]
    assert canon.tolist() == expected
    both_ends = pa.array(["\u0301", *texts, "\u0301"], pa.string()).slice(1, len(texts))
    assert arrow_rows_module._scan(both_ends)[0].tolist() == expected  # offsets at both ends


def test_without_a_table_every_text_with_a_non_ascii_character_goes_to_python(monkeypatch):
    monkeypatch.setattr(arrow_rows_module, "_UNSTABLE", None)
    monkeypatch.setattr(arrow_rows_module, "_FIRST_LEAD", 0x80)
    texts = ["plain", "caf\u00e9", "\u0416", "a\rb", "x\u0301", "\U0001d11e", "done"]
    assert arrow_rows_module._scan(pa.array(texts, pa.string()))[0].tolist() == [1, 2, 3, 4, 5]


def test_a_column_of_non_latin_text_is_scanned_a_slice_at_a_time(monkeypatch) -> None:
    """Cyrillic and CJK (every byte non-ASCII): the rows that hold a combining mark, exactly."""
    rng = random.Random(8)
    letters = [chr(c) for c in (*range(0x410, 0x450), *range(0x4E00, 0x4E40))]
    texts = ["".join(rng.choices(letters, k=400)) for _ in range(300)]
    marked = sorted(rng.sample(range(300), 20))
    for i in marked:
        texts[i] += "\u0301"  # a combining acute: NFC may change it
    monkeypatch.setattr(arrow_rows_module, "_SCAN", 1000)  # many slices; characters cross them
    assert arrow_rows_module._scan(pa.array(texts, pa.string()))[0].tolist() == marked


def test_a_decomposed_accent_in_a_latin_text_is_still_composed() -> None:
    """The shortcut skips only texts NFC leaves alone: one combining mark sends a row to Python."""
    texts = ["Zürich café", "Zu\u0308rich cafe\u0301", "Ζεύς", "Ζευ\u0301ς", "한국"]
    texts.append("\u1112\u1161n")  # Hangul jamo that compose
    m = mapping_of(_source({"id": "k", "text": "t"}))
    rows = arrow_rows(m, _arrow({"k": [f"k{i}" for i in range(len(texts))], "t": texts}))
    import unicodedata

    assert rows.texts.to_pylist() == [unicodedata.normalize("NFC", t) for t in texts]
    assert rows.texts.to_pylist()[1] == "Zürich café" and rows.texts.to_pylist()[3] == "Ζεύς"


def test_native_sha256_is_hashlib_s() -> None:
    import hashlib

    texts = [*TRICKY, "", "x" * 100_000, "\u00e9" * 3]
    digests = arrow_rows_module._sha256_hex(pa.array(texts, pa.string())).to_pylist()
    assert digests == [hashlib.sha256(t.encode()).hexdigest() for t in texts]


def test_in_order_keeps_the_order_looks_ahead_a_bounded_way_and_raises_in_place() -> None:
    import threading
    import time

    from lineage.ingest import in_order

    pulled = []

    def items():
        for i in range(40):
            pulled.append(i)
            yield i

    def slow_first(i):  # later items finish first
        time.sleep(0.02 if i % 3 == 0 else 0)
        return i * 10, threading.current_thread().name

    out = in_order(slow_first, items(), 2)
    first = next(out)
    assert first[0] == 0 and len(pulled) <= 3  # workers + the one yielded: bounded look-ahead
    rest = list(out)
    assert [v for v, _ in [first, *rest]] == [i * 10 for i in range(40)]
    assert {name for _, name in [first, *rest]} <= {f"exante-map_{i}" for i in range(2)}

    def fails_at_7(i):
        if i == 7:
            raise ValueError("row 7 is bad")
        time.sleep(0.01 if i < 7 else 0)
        return i

    got = []
    with pytest.raises(ValueError, match="row 7 is bad"):
        for v in in_order(fails_at_7, iter(range(40)), 2):
            got.append(v)
    assert got == list(range(7))  # every batch before the bad one, none after it

    def unreadable_after(n):
        yield from range(n)
        raise OSError("unreadable after row n")

    got = []
    with pytest.raises(OSError, match="unreadable"):
        for v in in_order(lambda i: i, unreadable_after(5), 2):
            got.append(v)
    assert got == list(range(5))  # the batches read before the error come first
    with pytest.raises(ValueError, match="row 7 is bad") as caught:  # a bad row before it first
        list(in_order(fails_at_7, unreadable_after(9), 2))
    assert caught.value.__context__ is None  # not chained to the read error it came before


def test_in_order_maps_on_several_threads_and_cleans_up_when_the_caller_stops() -> None:
    import threading

    from lineage.ingest import in_order

    both = threading.Barrier(2, timeout=10)  # broken (an error) unless two items map at once
    assert list(in_order(lambda i: both.wait() >= 0 and i, iter(range(4)), 2)) == [0, 1, 2, 3]

    closed, started = [], []

    def items():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    def slow(i):
        started.append(i)
        threading.Event().wait(0.01)
        return i

    reader = items()  # held here too, so only an explicit close runs its finally
    out = in_order(slow, reader, 2)
    assert [next(out), next(out)] == [0, 1]
    out.close()  # the caller stops early, e.g. on a duplicate id
    assert closed == [True] and len(started) <= 4  # reader closed, nothing more queued
    done = len(started)
    threading.Event().wait(0.05)
    assert len(started) == done  # and nothing ran after the close returned


def test_a_bad_row_in_a_later_batch_of_a_threaded_ingest_is_named_as_without_threads(
    project, monkeypatch
) -> None:
    import lineage._readers
    import lineage.ingest

    n = 2000
    ids = [f"r{i:05d}" for i in range(n)]
    texts = [TRICKY[i % len(TRICKY)] + f" {i}" for i in range(n)]
    raw = project.root / "data" / "raw"
    pq.write_table(pa.table({"id": ids, "text": texts}), raw / "many.parquet")
    register(project, "many", location="data/raw/many.parquet", format="parquet",
             fields={"id": "id", "text": "text"})  # fmt: skip
    monkeypatch.setattr(lineage._readers, "ARROW_BATCH", 64)  # 32 batches
    out = project.root / "data" / "records"
    results = {}
    for workers in (1, 2):
        monkeypatch.setattr(lineage.ingest, "WORKERS", workers)
        registry = load_registry(project.root / "data" / "sources.yaml")
        ingest(registry, project.root, out, only="many")
        results[workers] = (out / "many.jsonl").read_bytes()
    assert results[1] == results[2] and results[1].count(b"\n") == n
    ids[1300] = "bad id"
    pq.write_table(pa.table({"id": ids, "text": texts}), raw / "many.parquet")
    errors = {}
    for workers in (1, 2):
        monkeypatch.setattr(lineage.ingest, "WORKERS", workers)
        registry = load_registry(project.root / "data" / "sources.yaml")
        with pytest.raises(BadInputError) as caught:
            ingest(registry, project.root, out, only="many")
        errors[workers] = str(caught.value)
        assert (out / "many.jsonl").read_bytes() == results[1]  # the last good records stay
    assert errors[1] == errors[2] and "row 1301" in errors[2]
