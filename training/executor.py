"""Independent training units (shards, baselines) on a pool of worker processes.

SISA's shards never share data or weights, and neither do the verification's
baselines, so they may train at the same time. ``train.workers`` processes each
run one unit at a time with ``train.threads`` torch threads: on a small model
two one-thread processes do about 1.6x the work of one two-thread process
(docs/benchmarks.md). Every unit seeds itself from its params and reads only
files that no other unit writes, so a unit trains to the same bits in a pool
as alone with the same thread count (a test holds it).

Workers are spawned, not forked: a forked child would inherit the parent's
torch thread pool and any lock held at fork time. The command layer may give
another way to start them that keeps this isolation (:func:`start_workers_with`:
inside a deletion's pipeline, ``exante.warm`` forks them from a process that has
only imported modules, saving each worker's imports). A unit that fails does not
stop the others (their work is valid); once all have ended, the first failure
is raised with its exit code (3 for bad input, 1 for a failed check), and no
unit publishes anything partial because each writes through a temporary
directory as it does alone.

``train.executor: ray`` runs the same units as Ray tasks (the ``ray`` extra):
each asks for ``train.threads`` CPUs, a task whose worker dies is retried
(``RETRIES`` times) from scratch, and a cluster is joined through
``RAY_ADDRESS`` or ``train.ray_address``; without either, a local one is
started for the call (``workers × threads`` CPUs, no dashboard, a 100 MiB
object store: units exchange file paths, not tensors) and shut down after.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from lineage.errors import BadInputError, LineageError

RETRIES = 2  # a Ray task whose worker process dies is run again this many times
_OBJECT_STORE = 100 * 1024 * 1024


class ExecutorError(BadInputError):
    """The executor asked for cannot run here (Ray not installed, an unreachable cluster)."""


class UnitFailedError(LineageError):
    """A training unit failed in a worker process; its exit code is the unit's own."""

    def __init__(self, message: str, *, exit_code: int = 1, problems=()) -> None:
        super().__init__(message, problems=problems)
        self.exit_code = exit_code


_START: Callable[[], object | None] | None = None


def start_workers_with(context: Callable[[], object | None] | None) -> None:
    """Start local pool workers with the ``multiprocessing`` context ``context()`` returns
    when a pool is made (spawn where it returns None, or with None here)."""
    global _START
    _START = context


def pool_of(cfg) -> dict:
    """The keyword arguments of :func:`run_units` that a ``TrainConfig`` sets."""
    return {"workers": cfg.workers, "executor": cfg.executor, "threads": cfg.threads,
            "address": cfg.ray_address, "gpus": _gpus(cfg)}  # fmt: skip


def _gpus(cfg) -> float:
    """GPUs a Ray task asks for: ``gpus_per_unit`` when units train on CUDA, else none.

    ``device: cuda`` asks even where this process sees no GPU (a CPU head node of a
    GPU cluster); ``auto`` asks only when a GPU is visible here.
    """
    if cfg.device == "cpu":
        return 0.0
    if cfg.device == "cuda":
        return cfg.gpus_per_unit
    import torch

    return cfg.gpus_per_unit if torch.cuda.is_available() else 0.0


def run_units(
    fn: Callable,
    jobs: Sequence[tuple],
    *,
    workers: int,
    names: Sequence[str] | None = None,
    executor: str = "local",
    threads: int = 1,
    address: str | None = None,
    gpus: float = 0.0,
) -> list:
    """``[fn(*job) for job in jobs]``, on up to ``workers`` processes; results in job order.

    ``fn`` must be importable by name (a module-level function) and its
    arguments and result picklable. Locally, with one worker or one job,
    everything runs here, in this process, exactly as a loop would. With
    ``executor="ray"`` every job is a Ray task asking for ``threads`` CPUs.
    """
    names = list(names or [str(i) for i in range(len(jobs))])
    if executor == "ray":
        outcomes = _on_ray(
            fn, jobs, names, workers=workers, threads=threads, address=address, gpus=gpus
        )
    elif workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    else:
        ctx = (_START and _START()) or multiprocessing.get_context("spawn")
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


def _on_ray(
    fn: Callable, jobs, names, *, workers: int, threads: int, address: str | None, gpus: float = 0.0
):
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "train.executor is ray, but ray is not installed: pip install 'exante[ray]' "
            "(or set train.executor: local)"
        ) from None
    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, logging_level="ERROR")
            else:
                ray.init(num_cpus=workers * threads, include_dashboard=False,
                         object_store_memory=_OBJECT_STORE, logging_level="ERROR")  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "(local)"
            raise ExecutorError(f"cannot start or join the Ray cluster {where}: {e}; "
                                "check RAY_ADDRESS / train.ray_address") from None  # fmt: skip
    try:
        task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=RETRIES)(_guarded)
        refs = [task.remote(fn, job) for job in jobs]
        return [_ray_outcome(ray, ref) for ref in refs]
    finally:
        if started:
            ray.shutdown()


def _ray_outcome(ray, ref) -> tuple:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # its worker died RETRIES + 1 times
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # Ray colours its messages
        first = text.splitlines()[0] if text else type(e).__name__
        why = f"its Ray worker failed {RETRIES + 1} times: {first}"
        return ("error", 70, type(e).__name__, why, "")
