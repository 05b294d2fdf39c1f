"""Progress of a training run: slice, epoch, loss, and an upper bound of the time left.

A slice trains for at most its schedule's ``max_epochs`` (it may stop early at
``target_loss``), and an epoch of slice r costs in proportion to the characters
it reads. The time left is measured seconds per unit of that work, times the
work the remaining epochs may still do: an upper bound, hence the "≤".
"""

from __future__ import annotations

import time
from collections.abc import Sequence

# (max epochs, work per epoch) for each slice of a unit; a base model is one "slice"
Plan = Sequence[tuple[int, float]]


def per_slice(placed, slices: int, keep=None) -> tuple[list[int], list[int]]:
    """Each slice's characters and record count, from a shard's ``(slice, record)`` pairs.

    With ``keep``, only the records it accepts are counted (those a deletion leaves).
    """
    chars, counts = [0] * slices, [0] * slices
    for q, r in placed:
        if keep is None or keep(r):
            chars[q] += len(r.text)
            counts[q] += 1
    return chars, counts


def slice_plan(
    cfg, chars: Sequence[int], records: Sequence[int] | None = None
) -> list[tuple[int, float]]:
    """Each slice's epoch cap and its characters per epoch, given each slice's own characters.

    With ``replay``, slice r reads its own characters plus ``replay`` × the earlier
    slices'; otherwise it reads slices 0..r (see :func:`training.sisa.slice_schedule`).
    Given each slice's own record count, a cap raised by ``shard.min_steps`` is
    counted too, taking one window a record (long records make more windows,
    more steps an epoch and a lower cap: the plan stays an upper bound).
    """
    from training.loop import steps_per_epoch
    from training.sisa import slice_schedule

    out = []
    for r in range(cfg.slices):
        if cfg.shard.replay is not None:
            work = chars[r] + cfg.shard.replay * sum(chars[:r])
            n = None if records is None else records[r] + round(cfg.shard.replay * sum(records[:r]))
        else:
            work, n = float(sum(chars[: r + 1])), None if records is None else sum(records[: r + 1])
        steps = None if n is None else steps_per_epoch(n, cfg.shard.batch_size)
        out.append((slice_schedule(cfg, r, steps).max_epochs, work))
    return out


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class EpochProgress:
    """Turns ``on_epoch`` events (``(slice, stats)`` for a shard, ``(stats,)`` for the base)
    into one line each; slices before the first event were reused, not trained."""

    def __init__(self, name: str, plan: Plan) -> None:
        self.name, self.plan = name, list(plan)
        self.start, self.done, self.slice, self.epoch = time.monotonic(), 0.0, None, 0

    def line(self, *event) -> str:
        *slice_, stats = event
        r = slice_[0] if slice_ else 0
        if r != self.slice:
            self.slice, self.epoch = r, 0
        self.epoch += 1
        cap, work = self.plan[r]
        self.done += work
        rate = (time.monotonic() - self.start) / max(self.done, 1e-9)
        left = max(cap - self.epoch, 0) * work + sum(e * w for e, w in self.plan[r + 1 :])
        where = f"slice {r + 1}/{len(self.plan)} " if slice_ else ""
        return (f"{self.name}: {where}epoch {self.epoch}/≤{cap} loss {stats.loss:.4f}, "
                f"≤ {duration(rate * left)} left")  # fmt: skip
