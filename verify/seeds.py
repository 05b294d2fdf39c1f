"""The training seeds of the calibration references and of the held-out reference.

A null envelope needs clean retrains that differ only in their seed, and a
power control needs one more clean retrain that calibration never saw. The
seeds are derived from ``train.seed`` by a hash (not chosen by hand), so they
are fixed before any model exists, and raising ``calibration.references``
keeps the seeds already drawn: K=3's seeds are K=2's plus one.
"""

from __future__ import annotations

import hashlib
import hmac

SEED_SPACE = 2**31  # a non-negative int32: valid for torch, numpy and random alike


def _derive(*parts: object) -> int:
    data = ":".join(str(p) for p in ("exante-seed", *parts)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % SEED_SPACE


def heldout_seed(train_seed: int) -> int:
    """The held-out reference's seed: never ``train_seed``, never a calibration seed."""
    n = 0
    while (seed := _derive("heldout", train_seed, n)) == train_seed:
        n += 1
    return seed


def calibration_seeds(train_seed: int, k: int) -> list[int]:
    """The K-1 seeds of the calibration references besides the reference (seed ``train_seed``)."""
    taken, out, n = {train_seed, heldout_seed(train_seed)}, [], 0
    while len(out) < k - 1:
        seed = _derive("calibration", train_seed, n)
        n += 1
        if seed not in taken:
            taken.add(seed)
            out.append(seed)
    return out


def keyed_choice(key: int, candidates: list[str]) -> str:
    """The candidate whose HMAC under ``key`` is smallest: fixed by the key, not by order."""
    return min(candidates, key=lambda c: hmac.new(str(key).encode(), c.encode(), "sha256").digest())
