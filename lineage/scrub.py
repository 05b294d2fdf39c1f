"""Erasure at the source: the raw files a deletion's records were read from, rewritten without them.

The deny set keeps a deleted record out of every later ingest, but the raw file
under ``location`` would still hold its text, and "no copy left" covers the
project's raw data too. So a deletion rewrites each registered source's raw
files without the rows the ledger denies, before the pipeline re-runs. Every
other row keeps its id: ``jsonl`` lines are dropped byte for byte; ``parquet``
and ``csv`` rows are filtered with pyarrow (CSV cells are read and written as
text, so ``007`` stays ``007``); a ``dir`` record's file is deleted; a numbered
paragraph or block (``text``, ``dir`` with ``records: block``) is replaced by a
tombstone so the paragraphs after it keep their numbers; a saved ``datasets``
dataset is saved again without the rows, and its data files are filtered one by
one. Sources the pipeline generates (``generated_by``) are left to it: their
generator leaves denied rows out. Each file is replaced atomically (a temp file
then a rename), so a crash leaves either the old file or the new one, and a
resumed deletion scrubs again (a clean file is left untouched).

pyarrow and ``datasets`` are imported here only, lazily, as in the readers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from lineage._canonical import atomic_write
from lineage._mapping import map_batch, mapping_of
from lineage._readers import BATCH, read_batches, split_blocks
from lineage.errors import BadInputError
from lineage.gate import Denials
from lineage.sources import Registry, Source

TOMBSTONE = "[erased]"  # stands in for a numbered paragraph, so later ones keep their numbers


class ScrubError(BadInputError):
    """A raw file that holds denied records cannot be rewritten without them."""


def scrub_sources(registry: Registry, root: Path, denials: Denials) -> dict[str, int]:
    """Rewrite every user-supplied source's raw files without denied rows; rows removed each."""
    out = {s.id: scrub_source(s, Path(root), denials) for s in _user_sources(registry, root)}
    return {k: v for k, v in out.items() if v}


def _user_sources(registry: Registry, root: Path) -> list[Source]:
    """The sources whose raw files the user supplies (not a pipeline generator's), present."""
    return [s for s in registry.sources.values()
            if s.generated_by is None and s.path(root).exists()]  # fmt: skip


def scrub_source(source: Source, root: Path, denials: Denials) -> int:
    """Remove the denied rows of one source from its raw files; return how many went."""
    if not (denials.records or denials.subjects):
        return 0
    if source.format == "hf":
        return _scrub_hf(source, root, denials)
    denied = _denied_rows(source, root, denials)
    if any(denied):
        _REWRITERS[source.format](source, source.path(root), denied)
    return sum(denied)


def left_in_sources(registry: Registry, root: Path, denials: Denials) -> list[str]:
    """``source: n rows`` for each user-supplied source whose raw files still hold denied rows."""
    out = []
    for source in _user_sources(registry, root):
        n = sum(_denied_rows(source, Path(root), denials))
        out += [f"{source.id}: {n} denied row(s) in {source.location}"] if n else []
    return out


def scrub_probes(path: Path, denials: Denials) -> int:
    """Drop the probes cut from a denied record or about a denied subject; how many went."""
    import json

    if not path.is_file() or not (denials.records or denials.subjects):
        return 0
    kept, gone = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        row = json.loads(line) if line.strip() else {}
        if row.get("record") in denials.records or row.get("subject") in denials.subjects:
            gone += 1
        else:
            kept.append(line)
    if gone:
        atomic_write(path, b"".join(kept))
    return gone


def _denied_rows(source: Source, root: Path, denials: Denials) -> list[bool]:
    """Per row, in the reader's order: whether the ledger denies it (by id or subject)."""
    from lineage.erasure import is_denied

    m = mapping_of(source)
    out: list[bool] = []
    for batch in read_batches(source, root, m.fields.columns()):
        rows = map_batch(m, batch)
        out += [is_denied(denials, i, s) for i, s in zip(rows.ids, rows.subjects, strict=True)]
    return out


def _jsonl(source: Source, path: Path, denied: list[bool]) -> None:
    kept, n = [], 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
                if n <= len(denied) and denied[n - 1]:
                    continue
            kept.append(line)
    _same_rows(path, n, denied)
    atomic_write(path, b"".join(kept))


def _same_rows(path: Path, n: int, denied: list[bool], tmp: Path | None = None) -> None:
    """The rewrite saw exactly the rows the reader did, or nothing is replaced."""
    if n != len(denied):
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise ScrubError(
            f"{path}: read {len(denied)} rows as records but {n} when rewriting; "
            "nothing was changed: erase the deleted rows there yourself"
        )


def _parquet(source: Source, path: Path, denied: list[bool]) -> None:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    tmp = path.with_name(f".{path.name}.scrub")
    with pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
        n = _write_kept(pf.iter_batches(batch_size=BATCH), writer, denied)
    _same_rows(path, n, denied, tmp)
    _replace(tmp, path)


def _csv(source: Source, path: Path, denied: list[bool]) -> None:
    import pyarrow as pa
    from pyarrow import csv

    delimiter = source.read.delimiter if source.read else ","
    parse = csv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    names = csv.open_csv(path, parse_options=parse).schema.names
    convert = csv.ConvertOptions(
        column_types={c: pa.string() for c in names},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    reader = csv.open_csv(path, parse_options=parse, convert_options=convert)
    tmp = path.with_name(f".{path.name}.scrub")
    options = csv.WriteOptions(delimiter=delimiter)
    with csv.CSVWriter(tmp, reader.schema, write_options=options) as writer:
        n = _write_kept(reader, writer, denied)
    _same_rows(path, n, denied, tmp)
    _replace(tmp, path)


def _write_kept(batches, writer, denied: list[bool]) -> int:
    """Each Arrow batch without its denied rows; returns the rows read (checked by the caller)."""
    import pyarrow as pa

    offset = 0
    for batch in batches:
        part = denied[offset : offset + batch.num_rows]
        offset += batch.num_rows
        if len(part) == batch.num_rows:  # else the counts differ: nothing will be replaced
            writer.write_batch(batch.filter(pa.array([not d for d in part], type=pa.bool_())))
    return offset


def _text(source: Source, path: Path, denied: list[bool]) -> None:
    blocks = split_blocks(path.read_text(encoding="utf-8"))
    kept = [TOMBSTONE if d else b for b, d in zip(blocks, denied, strict=True)]
    atomic_write(path, ("\n\n".join(kept) + "\n").encode("utf-8"))


def _dir(source: Source, path: Path, denied: list[bool]) -> None:
    per_block = source.read is not None and source.read.records == "block"
    pattern = (source.read and source.read.pattern) or "**/*"
    files = sorted(p for p in path.glob(pattern) if p.is_file())
    row = 0
    for f in files:
        if not per_block:
            if denied[row]:
                f.unlink()
            row += 1
            continue
        blocks = split_blocks(f.read_text(encoding="utf-8"))
        mine = denied[row : row + len(blocks)]
        row += len(blocks)
        if any(mine):
            kept = [TOMBSTONE if d else b for b, d in zip(blocks, mine, strict=True)]
            atomic_write(f, ("\n\n".join(kept) + "\n").encode("utf-8"))


def _scrub_hf(source: Source, root: Path, denials: Denials) -> int:
    """A saved dataset is saved again without the rows; data files are filtered one by one."""
    from lineage._readers import _data_files, _is_saved

    path = source.path(root)
    if _is_saved(path):
        return _scrub_saved(source, root, path, denials)
    removed = 0
    for f in _data_files(source, path):
        kind = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(
            f.suffix
        )
        if kind is None:
            raise ScrubError(
                f"{f}: source {source.id} holds deleted records in a {f.suffix} file, which "
                "exante cannot rewrite; erase them there yourself, or keep the data as "
                "parquet, csv or jsonl files"
            )
        one = source.model_copy(update={"location": os.path.relpath(f, root), "format": kind,
                                        "read": None})  # fmt: skip
        denied = _denied_rows(one, root, denials)
        if denied and all(denied):  # nothing left: an empty data file is no dataset file
            f.unlink()
        elif any(denied):
            _REWRITERS[kind](one, f, denied)
        removed += sum(denied)
    return removed


def _scrub_saved(source: Source, root: Path, path: Path, denials: Denials) -> int:
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    from lineage._readers import _one_split

    denied = _denied_rows(source, root, denials)
    loaded = datasets.load_from_disk(str(path), keep_in_memory=False)
    split = _one_split(source, loaded, path)
    _same_rows(path, len(split), denied)
    # take() copies the kept rows into new buffers: a slice would still carry the rest
    keep = pa.array([i for i, d in enumerate(denied) if not d], type=pa.int64())
    table = split.with_format("arrow")[:]  # the split's rows, as one Arrow table
    kept = datasets.Dataset(InMemoryTable(table.take(keep)), info=split.info.copy(),
                            split=split.split)  # fmt: skip
    if hasattr(loaded, "keys"):  # a DatasetDict: replace the one split
        name = next(k for k in loaded if loaded[k] is split)
        kept = datasets.DatasetDict({k: kept if k == name else v for k, v in loaded.items()})
    tmp = path.with_name(f".{path.name}.scrub")
    shutil.rmtree(tmp, ignore_errors=True)
    kept.save_to_disk(str(tmp))
    del loaded, split, kept
    old = path.with_name(f".{path.name}.old")
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old)
    return sum(denied)


def _replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


_REWRITERS: dict[str, Callable[[Source, Path, list[bool]], None]] = {
    "jsonl": _jsonl,
    "parquet": _parquet,
    "csv": _csv,
    "text": _text,
    "dir": _dir,
}
