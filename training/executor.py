"""Independent training units (shards, baselines) on a pool of worker processes.

SISA's shards never share data or weights, and neither do the verification's
baselines, so they may train at the same time. ``train.workers`` processes each
run one unit at a time with ``train.threads`` torch threads: on a small model
two one-thread processes do about 1.6x the work of one two-thread process
(docs/benchmarks.md). Every unit seeds itself from its params and reads only
files that no other unit writes, so a unit trains to the same bits in a pool
as alone with the same thread count (a test holds it).

Workers are spawned, not forked: a forked child would inherit the parent's
torch thread pool and any lock held at fork time. A unit that fails does not
stop the others (their work is valid); once all have ended, the first failure
is raised with its exit code (3 for bad input, 1 for a failed check), and no
unit publishes anything partial because each writes through a temporary
directory as it does alone.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from lineage.errors import LineageError


class UnitFailedError(LineageError):
    """A training unit failed in a worker process; its exit code is the unit's own."""

    def __init__(self, message: str, *, exit_code: int = 1, problems=()) -> None:
        super().__init__(message, problems=problems)
        self.exit_code = exit_code


def run_units(
    fn: Callable, jobs: Sequence[tuple], *, workers: int, names: Sequence[str] | None = None
) -> list:
    """``[fn(*job) for job in jobs]``, on up to ``workers`` processes; results in job order.

    ``fn`` must be importable by name (a module-level function) and its
    arguments and result picklable. With one worker or one job everything runs
    here, in this process, exactly as a loop would.
    """
    names = list(names or [str(i) for i in range(len(jobs))])
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_guarded, fn, job) for job in jobs]
        outcomes = [f.result() for f in futures]
    failed = [(n, o) for n, o in zip(names, outcomes, strict=True) if o[0] == "error"]
    if failed:
        (name, (_, code, _, message, trace)), rest = failed[0], failed[1:]
        others = [f"{n}: {o[2]}: {o[3].splitlines()[0] if o[3] else ''}" for n, o in rest]
        text = f"{name}: {message}" + ("" if code in (1, 3) else f"\n{trace}")
        raise UnitFailedError(text, exit_code=code if code in (1, 3) else 70,
                              problems=[f"also failed: {x}" for x in others])  # fmt: skip
    return [o[1] for o in outcomes]


def _guarded(fn: Callable, job: tuple) -> tuple:
    """Run one unit in a worker; report an error as data (custom exceptions may not unpickle)."""
    try:
        return ("ok", fn(*job))
    except LineageError as e:
        return ("error", e.exit_code, type(e).__name__, str(e), "")
    except Exception as e:
        return ("error", 70, type(e).__name__, str(e), traceback.format_exc())
