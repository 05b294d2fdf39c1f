"""Source readers: raw files in, batches of named columns out, in bounded memory.

Each reader yields :class:`Batch` es of at most ``BATCH`` rows holding only the
columns ingest asked for, so an unmapped column is never even read. The
columnar formats stream with the libraries made for them — pyarrow's
``ParquetFile.iter_batches`` and CSV streaming reader, ``datasets``
memory-mapped ``load_from_disk`` and streaming ``load_dataset`` — imported here,
lazily, so the hashing and signing core never loads them.

``datasets`` normally caches Arrow files under ``~/.cache/huggingface``; a
record there would outlive its deletion. Readers here never ask it to build a
cache: saved datasets are memory-mapped where they lie and data files are
streamed, with ``cache_dir`` pointed into the project (``HF_CACHE``) for
anything it writes regardless.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lineage.errors import MalformedRecordError, MissingColumnError
from lineage.layout import LAYOUT
from lineage.sources import Source

BATCH = 65_536
ARROW_BATCH = 32_768  # rows per batch of a parquet or datasets source: see lineage.ingest.in_order
DECAY_MS = 250  # how long jemalloc keeps a freed page while a columnar source is read
HF_CACHE = LAYOUT.datasets_cache  # relative to the project root; purge with the project
MISSING = object()  # a key a JSON row lacks (a column absent from one row only)
_HF_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
_HF_BUILDERS |= {".txt": "text", ".arrow": "arrow"}
_SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")  # save_to_disk markers


@dataclass(frozen=True)
class Batch:
    """Up to ``BATCH`` rows as columns; ``locate(i)`` names row ``i`` for an error message."""

    columns: dict[str, list]
    locate: Callable[[int], str]
    sparse: bool = False  # rows may lack a column (JSON objects): cells may be MISSING

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))


@dataclass(frozen=True)
class ArrowBatch:
    """Columnar rows left in Arrow memory (``arrow``: a record batch or table of the columns).

    :mod:`lineage._arrow_rows` builds their records without a Python object
    per cell; ``columns``, the per-row path's lists, are made only if it asks.
    """

    arrow: Any
    locate: Callable[[int], str]
    sparse: bool = False

    @cached_property
    def columns(self) -> dict[str, list]:
        return {c: self.utf8(c, self.arrow.column(c)).to_pylist() for c in self.arrow.schema.names}

    def utf8(self, name: str, col):
        """``col`` (column ``name``), checked to be valid UTF-8 where it holds strings.

        Parquet and ``datasets`` hand string columns over as they were written,
        never checking that their bytes are UTF-8; a stray byte would otherwise
        reach the records file as it is, or crash the conversion to Python.
        Strings anywhere in the column count (a list of subject ids, a
        dictionary-encoded column). The first row that is not names the file,
        the row and the column (a MalformedRecordError).
        """
        import pyarrow as pa

        try:
            col.validate(full=True)  # checks UTF-8 wherever the type holds strings; cheap elsewhere
        except pa.ArrowInvalid:
            raise _not_utf8(self, name, col) from None
        return col

    def __len__(self) -> int:
        return self.arrow.num_rows


def read_batches(source: Source, root: Path, columns: Sequence[str]) -> Iterator[Batch]:
    """The rows of ``source``, ``columns`` only; a column no row has is a MissingColumnError."""
    reader = _READERS[source.format]
    return reader(source, Path(root), tuple(columns))


def _missing(source: Source, present: Sequence[str], wanted: Sequence[str], where) -> None:
    absent = [c for c in wanted if c not in present]
    if absent:
        raise MissingColumnError(
            f"{where}: source {source.id} maps column(s) {', '.join(map(repr, absent))}, "
            f"which it does not have (it has: {', '.join(map(str, present))}); "
            "fix 'fields' in data/sources.yaml",
        )


# -- line- and file-based formats --------------------------------------------------


def _jsonl(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    path = source.path(root)
    rows, lines = [], []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                rows.append(_json_object(line, f"{path}:{n}"))
                lines.append(n)
            if len(rows) == BATCH:
                yield _row_batch(rows, lines, columns, path)
                rows, lines = [], []
    if rows:
        yield _row_batch(rows, lines, columns, path)


def _json_object(line: bytes, where: str) -> dict:
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge int, deep nesting
        raise MalformedRecordError(f"{where}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise MalformedRecordError(f"{where}: expected a JSON object")
    return row


def _row_batch(rows: list[dict], lines: list[int], columns, path: Path) -> Batch:
    cols = {c: [row.get(c, MISSING) for row in rows] for c in columns}
    return Batch(cols, lambda i: f"{path}:{lines[i]}", sparse=True)


def split_blocks(text: str) -> list[str]:
    """Paragraphs: text split at blank lines, stripped, empty ones dropped."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecordError(f"{path}: not UTF-8 ({exc})") from None


def _text(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    path = source.path(root)
    blocks = split_blocks(_read_utf8(path))
    cols = {"id": [f"{n:06d}" for n in range(1, len(blocks) + 1)], "text": blocks}
    _missing(source, tuple(cols), columns, path)
    yield Batch({c: cols[c] for c in columns}, lambda i: f"{path}:para {i + 1}")


def _dir(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    """One record per file (id: its relative path, '/' as ':') or per blank-line block."""
    base = source.path(root)
    _missing(source, ("id", "path", "text"), columns, base)
    per_block = source.read is not None and source.read.records == "block"
    pattern = (source.read and source.read.pattern) or "**/*"
    files = sorted(p for p in base.glob(pattern) if p.is_file())
    for start in range(0, len(files), 256):
        rows: list[tuple[str, str, str]] = []  # (id, path, text)
        for f in files[start : start + 256]:
            rel = f.relative_to(base).as_posix()
            text = _read_utf8(f)
            if per_block:
                rows += [(f"{rel}:{n:06d}", rel, b) for n, b in enumerate(split_blocks(text), 1)]
            else:
                rows.append((rel, rel, text))
        cols = {"id": [r[0].replace("/", ":") for r in rows], "path": [r[1] for r in rows]}
        cols["text"] = [r[2] for r in rows]
        yield Batch({c: cols[c] for c in columns}, lambda i, rows=rows: f"{base / rows[i][0]}")


# -- columnar formats (pyarrow, datasets) ------------------------------------------


_FIX = "write the file with its text encoded as UTF-8"


def _not_utf8(batch: ArrowBatch, name: str, col) -> MalformedRecordError:
    """The error for the first row of ``col`` whose bytes are not UTF-8 (strings, or strings
    inside lists, dictionaries or structs: each row converted until one fails)."""
    for i in range(len(col)):
        try:
            col[i].as_py()
        except UnicodeDecodeError as exc:
            byte = f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
            return MalformedRecordError(
                f"{batch.locate(i)}: column {name!r} is not valid UTF-8 ({byte}); {_FIX}"
            )
    return MalformedRecordError(f"{batch.locate(0)}: column {name!r} is not a valid column; {_FIX}")


def _arrow_batch(batch, columns: tuple[str, ...], offset: int, where: Path) -> ArrowBatch:
    return ArrowBatch(batch.select(list(columns)), lambda i: f"{where}: row {offset + i + 1}")


def _arrow_errors():
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def _warm_allocator(reader):
    """``reader``, with Arrow allocating from jemalloc while its rows are used.

    Arrow's default allocator, mimalloc, hands freed pages back to the OS
    within milliseconds, so every batch faulted all of its memory in afresh:
    ingest of a million parquet rows took 1.6x as long (bench/bench_ingest.py).
    jemalloc keeps them about a second, and its peak memory stayed flatter
    than the system allocator's (used where a pyarrow build lacks jemalloc).
    It keeps a freed page ``DECAY_MS``: long enough for the next batches to
    reuse it, short enough that an ingest of a second or two (batches mapped
    on every core at once) does not keep every page it ever used, which made
    peak memory grow with the rows read. The decay is process-wide and applies
    to jemalloc arenas made after it is set: in an ingest process, all of them.
    The previous default is restored once the reader is done (or dropped).
    """

    @functools.wraps(reader)
    def read(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[ArrowBatch]:
        import pyarrow as pa

        pool = pa.default_memory_pool()
        warm = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else "system"
        if warm == "jemalloc":
            pa.jemalloc_set_decay_ms(DECAY_MS)
        pa.set_memory_pool(getattr(pa, f"{warm}_memory_pool")())
        try:
            yield from reader(source, root, columns)
        finally:
            pa.set_memory_pool(pool)

    return read


@_warm_allocator
def _parquet(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    """The file's row groups read a batch at a time, its mapped columns only.

    Neither memory-mapped nor pre-buffered: pyarrow's pre-buffering (on by
    default) keeps every column chunk it has read until the file is closed,
    in the mapped file's pages (counted in the process's RSS) or, unmapped,
    in memory of its own, so an ingest's RSS grew by about half the file's
    size though nothing of it was used again.
    """
    import pyarrow.parquet as pq

    path = source.path(root)
    try:
        pf = pq.ParquetFile(path, memory_map=False, pre_buffer=False)
    except _arrow_errors() as exc:
        raise MalformedRecordError(f"{path}: not a readable Parquet file ({exc})") from None
    _missing(source, pf.schema_arrow.names, columns, path)
    batches = pf.iter_batches(batch_size=ARROW_BATCH, columns=list(columns))
    yield from _guarded(batches, columns, path)


def _guarded(batches, columns: tuple[str, ...], path: Path) -> Iterator[ArrowBatch]:
    """Arrow record batches as :class:`ArrowBatch`; a decoding error names the file."""
    offset = 0
    while True:
        try:
            batch = next(batches, None)
        except _arrow_errors() as exc:
            raise MalformedRecordError(f"{path}: unreadable after row {offset} ({exc})") from None
        if batch is None:
            return
        yield _arrow_batch(batch, columns, offset, path)
        offset += batch.num_rows


@_warm_allocator
def _csv(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    """Every mapped column read as a string (ids such as ``007`` keep their zeros)."""
    import pyarrow as pa
    from pyarrow import csv

    path = source.path(root)
    read = csv.ReadOptions(block_size=1 << 22)
    parse = csv.ParseOptions(
        delimiter=(source.read.delimiter if source.read else ","), newlines_in_values=True
    )
    try:
        header = csv.open_csv(path, read_options=read, parse_options=parse).schema.names
        _missing(source, header, columns, path)
        convert = csv.ConvertOptions(
            include_columns=list(columns),
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        reader = csv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except _arrow_errors() as exc:
        raise MalformedRecordError(f"{path}: not a readable CSV file ({exc})") from None
    yield from _guarded(iter(reader), columns, path)


@_warm_allocator
def _hf(source: Source, root: Path, columns: tuple[str, ...]) -> Iterator[Batch]:
    """A ``save_to_disk`` directory (memory-mapped) or local data files (streamed)."""
    path = source.path(root)
    ds = _saved_dataset(source, path) if _is_saved(path) else _streamed(source, root, path)
    _missing(source, _column_names(ds), columns, path)
    batches = ds.select_columns(list(columns)).with_format("arrow").iter(batch_size=ARROW_BATCH)
    yield from _guarded(iter(batches), columns, path)


def _column_names(ds) -> list[str]:
    """A streamed CSV does not know its columns until read: peek at the first row."""
    if ds.column_names is not None:
        return list(ds.column_names)
    first = next(iter(ds.take(1)), None)
    return list(first) if first else []


def _is_saved(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _SAVED)


def _saved_dataset(source: Source, path: Path):
    import datasets

    try:
        ds = datasets.load_from_disk(str(path), keep_in_memory=False)
    except (FileNotFoundError, ValueError, OSError, KeyError) as exc:
        raise MalformedRecordError(f"{path}: not a readable saved dataset ({exc})") from None
    return _one_split(source, ds, path)


def _one_split(source: Source, ds, path: Path):
    """A dataset of one split: the one named in ``read.split``, or the only one there is."""
    if not hasattr(ds, "keys"):  # a Dataset, not a DatasetDict
        return ds
    split = source.read.split if source.read else None
    splits = sorted(ds.keys())
    if split is None and len(splits) == 1:
        return ds[splits[0]]
    if split not in splits:
        raise MalformedRecordError(
            f"{path}: source {source.id} has splits {', '.join(splits)}; "
            "name one in 'read: {split: ...}' in data/sources.yaml"
        )
    return ds[split]


def _data_files(source: Source, path: Path) -> list[Path]:
    pattern = (source.read and source.read.pattern) or "*"
    files = [path] if path.is_file() else sorted(p for p in path.glob(pattern) if p.is_file())
    kinds = {_HF_BUILDERS.get(f.suffix) for f in files}
    if not files or None in kinds or len(kinds) > 1:
        raise MalformedRecordError(
            f"{path}: source {source.id} needs data files of one kind "
            f"({', '.join(sorted(_HF_BUILDERS))}); set 'read: {{pattern: ...}}' to select them"
        )
    return files


def _streamed(source: Source, root: Path, path: Path):
    import datasets

    files = _data_files(source, path)
    builder = _HF_BUILDERS[files[0].suffix]
    options = {}
    if builder == "parquet":  # no pre-buffering: it keeps what it read (see _parquet)
        import pyarrow.dataset

        options["fragment_scan_options"] = pyarrow.dataset.ParquetFragmentScanOptions(
            pre_buffer=False
        )
    try:
        return datasets.load_dataset(
            builder,
            data_files=[str(f) for f in files],
            split=(source.read and source.read.split) or "train",
            streaming=True,
            cache_dir=str(root / HF_CACHE),
            **options,
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise MalformedRecordError(f"{path}: not readable as {builder} files ({exc})") from None


_READERS = {
    "jsonl": _jsonl,
    "text": _text,
    "dir": _dir,
    "parquet": _parquet,
    "csv": _csv,
    "hf": _hf,
}
