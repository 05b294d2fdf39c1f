"""Measured verification parts, kept to be reused when a later run's inputs are the same.

A part (one attack, the shard alone, relearning, in-context, extraction) is a
function of the models it measures and what it measures them with: the
subjects' forget-shard weights, the released shards' weights (every part but
the shard alone, which never sees them), the forget set and its companions
(texts included), the train and verify params, the pretrained checkpoint's
files the tokenizer is read from, the measuring code, the versions of the
libraries that compute its numbers (:data:`LIBRARIES`), and the threads it
runs on. :func:`part_key` digests all of it; a stored part whose key matches
is the measurement that would be made again, so it is reused, and the run
says so (``cache.reused_parts`` in the results).

After a deletion in another shard, the shard-alone part is the same
measurement and is reused; a deletion in the forget shard changes the
baselines, and everything is measured again. Stored parts hold what
``results.json`` holds (ids and numbers, never record text) under
``.exante/cache/verify-parts``, the newest :data:`KEEP` of them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json, file_sha256, sha256_hex

KEEP = 64  # stored parts kept, newest first: a few runs' worth (each run stores 7-9)
MEASURING_CODE = ("lineage", "training", "verify")  # everything a part's numbers depend on


def shared_inputs(*, names: Sequence[str], forget_shards: Mapping[str, str], inputs,
                  threads: int) -> str:  # fmt: skip
    """The digest of what every part of one run is measured with, taken once per run.

    The forget set's texts, the code and the tokenizer's files are the costly
    parts of a key; :func:`part_key` adds what differs between the parts.
    """
    import torch

    from verify.provenance import code_digest

    return sha256_hex(canonical_json({
        "subjects": {n: forget_shards[n] for n in names},
        "order": list(names),
        "inputs": plain(inputs),
        "tokenizer": tokenizer_files(getattr(inputs, "cfg", None)),
        "code": code_digest(MEASURING_CODE),
        "libraries": library_versions(),
        "cuda": torch.cuda.is_available(),
        "threads": threads,
    }))  # fmt: skip


def part_key(part: str, *, shared: str, released: Sequence[str], alone: bool) -> str:
    """The digest of everything ``part``'s measurement depends on (``shared``: the run's).

    ``alone``: the part measures the forget-shard models by themselves, so the
    released shards' weights are not among its inputs.
    """
    return sha256_hex(canonical_json({
        "part": part, "shared": shared, "released": [] if alone else list(released),
    }))  # fmt: skip


LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "peft",
             "optimum-quanto", "opacus")  # fmt: skip


def library_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`LIBRARIES` (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def tokenizer_files(cfg) -> dict[str, str] | None:
    """sha256 of each file a pretrained model's tokenizer may be read from; None for bytes.

    The GGUF file itself, or a checkpoint directory's files but its weights
    (every component's weights are keyed by their own digest already).
    """
    local = getattr(getattr(cfg, "model", None), "local_path", None)
    if local is None:
        return None
    from training._pretrained import locate

    where = locate(local)
    if where.gguf_file:
        files = [where.directory / where.gguf_file]
    else:
        files = sorted(p for p in where.directory.iterdir()
                       if p.is_file() and p.suffix not in WEIGHTS)  # fmt: skip
    return {p.name: _file_digest(p, p.stat().st_size, p.stat().st_mtime_ns) for p in files}


WEIGHTS = {".safetensors", ".bin", ".pt", ".pth"}


@functools.lru_cache(maxsize=64)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Once per process per file version (a GGUF file is hundreds of MB)."""
    return file_sha256(path)


def plain(x):
    """``x`` as JSON values, the same on every run: dataclasses and models as dicts, sets sorted."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"__type__": type(x).__name__} | {
            f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)
        }
    if hasattr(x, "model_dump"):  # a pydantic model (params)
        return {"__type__": type(x).__name__} | x.model_dump(mode="json")
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, set | frozenset):
        return sorted((plain(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, Path):
        return x.as_posix()
    if x is None or isinstance(x, str | int | float | bool):
        return x
    raise TypeError(f"cannot digest a {type(x).__name__} among a verification part's inputs")


class PartStore:
    """Stored parts by key, in a directory (None: nothing is stored or reused)."""

    def __init__(self, where: Path | None) -> None:
        self.where = where

    def get(self, key: str) -> dict | None:
        if self.where is None:
            return None
        path = self.where / f"{key}.json"
        try:
            out = json.loads(path.read_text())
        except (OSError, ValueError):  # absent, or unreadable: measured again
            return None
        return out if out.get("key") == key else None

    def put(self, key: str, measured: dict) -> None:
        if self.where is None:
            return
        self.where.mkdir(parents=True, exist_ok=True)
        atomic_write(self.where / f"{key}.json", canonical_json(measured | {"key": key}))
        stored = sorted(self.where.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stored[KEEP:]:
            old.unlink(missing_ok=True)


def as_stored(measured: dict) -> dict:
    """A part's output as it reads back from the store, so a fresh and a reused part judge alike."""
    return json.loads(canonical_json(measured))
