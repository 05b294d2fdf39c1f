"""Component rows kept between verification runs, so a deletion re-scores only what it changed.

Every subject of a verification is an ensemble: after a deletion in one shard,
each subject's ensemble changed, but only through that shard. The other
components (the unchanged shards, every baseline's forget-shard model, each
under every attack) would be scored on the same sequences again, to the same
numbers. Here the rows a component computed for one call of
:meth:`verify.subjects.ScoreCache.logprobs` (the sequences it had not scored
yet, in one batch) are kept, and a later run that makes the same call on the
same component reads them back instead of loading, quantizing or relearning
the model to compute them.

A stored call is exactly what would be computed again, bit for bit: it is
keyed by the run's shared inputs (:func:`verify.parts.shared_inputs`: the
code, the libraries, the params, the forget set and its companions, the
threads), the component's key (its weights' digest and the attack applied)
and the call's sequences and prompt lengths in order, and within one part the
calls a component gets depend on nothing else. So a verification that reads
rows back judges as one that computed them (a test holds the two results
equal).

Rows are log-probabilities of record texts under a model: from a model that
memorized a text they could spell it out. So they are kept only for the
models of the latest run (:func:`prune`, at the end of every run: another
run's scope and any component no longer among the release's shards or the
baselines' forget-shard models go), and a deletion removes the rows of every
model it retrained or purged (``exante._purge``). The store lives under
``.exante/cache/verify-rows`` (never tracked, never bundled), bounded per
process by :data:`STORE_BYTES`; a call whose rows do not fit is computed and
not kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

STORE_BYTES = 2 << 30  # written per process per run (the demo: 1.6 GB over 3 processes)
CALL_BYTES = 256 << 20  # one call's rows at most (a large vocabulary's long calls are not kept)


def base_of(key: str) -> str:
    """The weights' digest a component key starts with (``digest+attack...``)."""
    return key.split("+", 1)[0]


class RowStore:
    """Rows by (component key, call), under one run's scope; ``where`` None keeps nothing."""

    def __init__(self, where: Path | None, scope: str, budget: int = STORE_BYTES) -> None:
        self.root = Path(where) if where is not None else None
        self.scope, self.budget = scope, budget
        self.written = self.hits = self.misses = 0

    def _path(self, key: str, call: bytes) -> Path:
        digest = hashlib.sha256(key.encode() + b"\0" + call).hexdigest()
        return self.root / self.scope / base_of(key) / f"{digest}.safetensors"

    def get(self, key: str, seqs: Sequence[Sequence[int]],
            prompts: Sequence[int]) -> list[torch.Tensor] | None:  # fmt: skip
        """The rows of this call as stored, or None (not stored, or unreadable: computed again)."""
        stored = self.get_named(key, _scoring(seqs, prompts)) or {}
        rows = [stored.get(str(i)) for i in range(len(seqs))]
        whole = len(stored) == len(seqs) and all(
            r is not None and r.shape[0] == len(s) for r, s in zip(rows, seqs, strict=True)
        )
        self.hits, self.misses = self.hits + whole, self.misses + (not whole)
        return rows if whole else None

    def put(self, key: str, seqs: Sequence[Sequence[int]], prompts: Sequence[int],
            rows: Sequence[torch.Tensor]) -> None:  # fmt: skip
        """Keep a call's rows (written whole, then renamed), within the budget."""
        self.put_named(key, _scoring(seqs, prompts), {str(i): r for i, r in enumerate(rows)})

    def get_named(self, key: str, call: bytes) -> dict[str, torch.Tensor] | None:
        """The tensors stored for (``key``, ``call``), or None."""
        if self.root is None:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(self._path(key, call))
        except (OSError, SafetensorError, ValueError):
            return None

    def put_named(self, key: str, call: bytes, tensors: dict[str, torch.Tensor]) -> None:
        if self.root is None:
            return
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if nbytes > CALL_BYTES or self.written + nbytes > self.budget:
            return
        from safetensors.torch import save_file

        path = self._path(key, call)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: t.contiguous().clone() for k, t in tensors.items()}, tmp)
            os.replace(tmp, path)
        except OSError:  # a full disk costs the reuse, never the run
            tmp.unlink(missing_ok=True)
            return
        self.written += nbytes


def _scoring(seqs: Sequence[Sequence[int]], prompts: Sequence[int]) -> bytes:
    """A scoring call, as bytes: every sequence with its length and prompt length, in order."""
    out = [b"score"]
    for s, p in zip(seqs, prompts, strict=True):
        out += [np.asarray([len(s), p], np.int64).tobytes(), np.asarray(s, np.int64).tobytes()]
    return b"".join(out)


def generation(prompts: torch.Tensor, max_new_tokens: int) -> bytes:
    """A greedy generation's call, as bytes: its prompts (one length) and its budget."""
    return b"".join([b"greedy", np.asarray([*prompts.shape, max_new_tokens], np.int64).tobytes(),
                     prompts.to(torch.int64).numpy().tobytes()])  # fmt: skip


def prune(where: Path, scope: str | None, keep: Iterable[str]) -> list[Path]:
    """Every stored row but the ``scope``'s of the weights ``keep`` (digests); what went.

    ``scope`` None removes every scope: nothing stored can be read again.
    """
    keep = set(keep)
    runs = _dirs(Path(where))
    gone = [r for r in runs if r.name != scope]
    gone += [d for r in runs if r.name == scope for d in _dirs(r) if d.name not in keep]
    return _removed(gone)


def prune_models(where: Path, keep: Iterable[str] | None) -> list[Path]:
    """In every scope, the rows of every model but ``keep`` (digests); None: all of them."""
    where = Path(where)
    if keep is None:
        return _removed([where] if where.is_dir() else [])
    keep = set(keep)
    return _removed([d for r in _dirs(where) for d in _dirs(r) if d.name not in keep])


def _dirs(where: Path) -> list[Path]:
    return sorted(p for p in where.iterdir() if p.is_dir()) if where.is_dir() else []


def _removed(paths: list[Path]) -> list[Path]:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
    return paths
