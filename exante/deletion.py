"""``exante delete``: honour erasure requests exactly, purge every copy, issue a receipt.

The flow, under the ledger lock (:func:`lineage.ledger.ledger_lock`):

1. resolve each request to record ids and the digests of their text (a subject
   is all its records), checking everything before anything is written;
2. append the requests (``received``) and rewrite the deny set
   (:mod:`lineage.erasure`), then ``retraining`` with the model digests before;
3. erase the records from the raw files they were read from (:mod:`lineage.scrub`),
   then run ``dvc repro``: the deny set re-runs the corpus, and the rewritten raw
   files the ingest of their sources, so the records leave the record files, the
   manifest gets a new version, and only the shards that held them retrain, from
   their last clean slice (found by lookup); the ensemble is re-signed and attested;
4. delete the slice checkpoints that saw a denied record, then purge the DVC
   cache and the default remote of the old file versions (``purged``);
5. verify (``verified``); 6. sign a receipt (``complete``).

A failure appends ``failed`` with the reason; ``--resume`` finishes every
pending request from where it stands. Queued requests (:mod:`exante.queue`)
wait for ``--flush``, which runs this same flow over all of them at once.
``dvc repro`` is streamed into ``.exante/logs`` (and to ``Context.progress``).
The previous release (``models/ensemble``, its signature, its attestation and
the checkpoints it names) stays in force until the attest stage replaces it.

This module is the conductor: each step lives with its concept, in
:mod:`exante._requests` (parsing and resolving requests), :mod:`exante._cost`
(the plan), :mod:`exante._dvc` (repro, commit, add, push), :mod:`exante._purge`
(erasing and purging copies, checking none is left) and :mod:`exante._receipts`
(models before and after, evidence, the ``--verify`` gate, receipts).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from exante import _dvc, _receipts
from exante._cost import affected, plan
from exante._dvc import LOGS, DeletionFailedError
from exante._purge import erase_at_source, prune_checkpoints, purge, verify_deleted
from exante._receipts import RECEIPTS, UnverifiedDeletionError, model_digests
from exante._requests import (
    RequestFileError,
    RequestSpec,
    UnknownTargetError,
    read_request_file,
    resolve,
)
from exante.params import load_params
from lineage.errors import LineageError
from lineage.layout import LAYOUT
from lineage.ledger import append_request, append_status, ledger_lock, verify_ledger
from lineage.records import read_all
from lineage.stages import RECORDS

ACKS = LAYOUT.acks
# What the steps after the pipeline import: torch (checkpoints), MLflow (evidence), the
# audit bundle. About 4.5 s of imports that followed the repro; now made while it runs.
AFTER_REPRO = ("training.checkpoints", "training.sisa", "training.stages", "verify.evidence",
               "verify.audit.bundle")  # fmt: skip
# The public names, wherever their concept lives (callers import them from here).
__all__ = [
    "ACKS", "LOGS", "RECEIPTS", "Context", "DeletionFailedError", "RequestFileError",
    "RequestSpec", "UnknownTargetError", "UnverifiedDeletionError", "delete", "erase_at_source",
    "finish_pending", "model_digests", "plan", "prune_checkpoints", "purge", "read_request_file",
    "resolve", "resume", "verify_deleted",
]  # fmt: skip


# -- the deletion ---------------------------------------------------------------


@dataclass
class Context:
    root: Path
    cfg: object  # training.config.TrainConfig
    signer: object
    trusted: Mapping
    say: Callable[[str], None] = print
    verify: bool = False  # verify each request against a retrain reference before retraining
    progress: Callable[[str], None] | None = None  # progress lines (stderr), None when quiet


def delete(ctx: Context, specs: Sequence[RequestSpec]) -> list[Path]:
    """Append the requests and carry them to ``complete``; return the receipt paths."""
    with ledger_lock(ctx.root) as lock:
        _recover(ctx, lock)
        ledger = verify_ledger(ctx.root, ctx.trusted)
        resolved = resolve(specs, read_all(ctx.root / RECORDS), ledger)
        forget = _forget_sets(ctx, specs, resolved) if ctx.verify else {}
        for spec, hashes in zip(specs, resolved, strict=True):
            append_request(lock, ctx.signer, ctx.trusted, request_id=spec.request_id,
                           reason=spec.reason, record_hashes=hashes,
                           subject_ids=spec.subject_ids)  # fmt: skip
            ctx.say(f"request {spec.request_id}: {len(hashes)} records → ledger (received)")
        _write_denied(ctx.root)
        return _process(ctx, lock, [s.request_id for s in specs], forget)


def resume(ctx: Context) -> list[Path]:
    """Finish every request under way, oldest first; queued ones wait for ``--flush``."""
    return finish_pending(ctx, queued=False)


def finish_pending(ctx: Context, *, queued: bool) -> list[Path]:
    """Carry every pending request (with ``queued``, the queued ones too) to ``complete``.

    They are processed together: one ``dvc repro``, so each affected shard
    retrains once, from the earliest slice any of them touches.
    """
    with ledger_lock(ctx.root) as lock:
        _recover(ctx, lock)
        ledger = verify_ledger(ctx.root, ctx.trusted)
        pending = [q.request_id for q in ledger.pending()
                   if queued or ledger.status_of(q.request_id) != "queued"]  # fmt: skip
        if not pending:
            waiting = len(ledger.pending())
            more = f"; {waiting} queued wait for `exante delete --flush`" if waiting else ""
            ctx.say(f"no pending deletion requests{more}")
            return []
        ctx.say(f"processing {len(pending)} requests together: {', '.join(pending)}")
        _write_denied(ctx.root)
        return _process(ctx, lock, pending)


def _recover(ctx: Context, lock) -> None:
    from lineage.ledger import roll_back_interrupted_append

    if (line := roll_back_interrupted_append(lock, ctx.trusted)) is not None:
        entry = json.loads(line)
        ctx.say(_rolled_back(entry))


def _rolled_back(entry: dict) -> str:
    rid = entry["request_id"]
    if entry["kind"] == "request":
        return (f"rolled back an interrupted ledger append: request {rid} was never "
                "acknowledged; send it again")  # fmt: skip
    if entry["kind"] == "ack":
        return (f"rolled back an interrupted ledger append: the acknowledgement of {rid} was "
                "not recorded; the request stays received and the next `exante delete "
                "--flush` (or --resume) processes it")  # fmt: skip
    return (f"rolled back an interrupted ledger append ({rid}: {entry.get('status')}); "
            "that step is redone now")  # fmt: skip


def _write_denied(root: Path) -> None:
    from lineage.erasure import write_denied

    write_denied(root)


def _forget_sets(ctx: Context, specs, resolved) -> dict:
    """Each request's forget set, read while its text exists; refused before anything is written."""
    from verify.request import forget_set_of

    params = load_params(ctx.root / LAYOUT.params)
    return {spec.request_id: forget_set_of(ctx.root, params, sorted(hashes))
            for spec, hashes in zip(specs, resolved, strict=True)}  # fmt: skip


def _verify_requests(ctx: Context, forget: Mapping) -> dict:
    """``exante delete --verify``: each request against a retrain reference, before retraining."""
    from verify.request import mark_requested, verify_request

    params, out = load_params(ctx.root / LAYOUT.params), {}
    for rid in forget:
        mark_requested(ctx.root, rid)
    for rid, fs in forget.items():
        ctx.say(f"{rid}: verifying against a retrain reference (shard {fs.shard}) …")
        info = verify_request(ctx.root, params, ctx.signer, rid, fs, progress=lambda s: None)
        out[rid] = {k: v for k, v in info.items() if k != "results"}
    return out


def _stored_verifications(ctx: Context, request_ids: Sequence[str]) -> dict:
    """On ``--resume``: the verifications published before the text was deleted, if any."""
    from verify.request import stored

    found = {rid: stored(ctx.root, rid, ctx.trusted) for rid in request_ids}
    return {rid: info for rid, info in found.items() if info is not None}


def _process(
    ctx: Context, lock, request_ids: Sequence[str], forget: Mapping | None = None
) -> list[Path]:
    ledger = verify_ledger(ctx.root, ctx.trusted)
    removed = {i: h for rid in request_ids for i, h in ledger.request(rid).record_hashes.items()}
    step, started = _Stepper(ctx, lock, request_ids), time.perf_counter()
    try:
        before = _receipts.models_before(ctx, ledger, request_ids)
        verified = (_verify_requests(ctx, forget) if forget
                    else _stored_verifications(ctx, request_ids))  # fmt: skip
        shards, ratio = affected(ctx.root, ctx.cfg, removed)
        step.to("retraining", from_={"received", "queued", "failed"}, shards=shards,
                meta={"models_before": before, "estimated_cost_ratio": ratio})  # fmt: skip
        erased = erase_at_source(ctx.root)
        ahead = _import_ahead(AFTER_REPRO)
        try:
            _repro(ctx, removed)
        finally:  # never an interpreter shutting down under a thread mid-import
            ahead.join()
        _tell(ctx, "step 2/4: purging old copies (checkpoints, DVC cache and remote)")
        purged = purge(ctx.root, ctx.cfg) | {"raw_rows_erased": erased}
        step.to("purged", from_={"retraining"}, meta=purged)
        _tell(ctx, "step 3/4: checking the records are gone and the release verifies")
        verify_deleted(ctx.root, ctx.cfg, ctx.trusted, removed)
        step.to("verified", from_={"purged"})
        _tell(ctx, "step 4/4: logging evidence and signing receipts")
        models = _receipts.released_models(ctx, request_ids)
        evidence = _receipts.log_evidence(ctx, request_ids, removed, started, models)
        evidence |= _receipts.check_verified(ctx, verified)
        receipts = _receipts.issue(ctx, lock, request_ids, evidence, models)
        _dvc.track_ledger(ctx.root)
    except (LineageError, OSError, subprocess.SubprocessError) as exc:
        step.fail(exc)
        raise DeletionFailedError(
            f"deletion of {', '.join(request_ids)} failed; the previous signed model stays "
            f"in force. Fix the cause and run `exante delete --resume`: {exc}"
        ) from exc
    _refresh_audit(ctx)
    return receipts


def _import_ahead(names: Sequence[str]) -> threading.Thread:
    """``names`` imported on a thread while this process waits for ``dvc repro``.

    Only the time moves: an import that fails here is left to fail again, with
    its own error, where the step that needs it imports it.
    """

    def run() -> None:
        # the lowest priority (Linux: this thread's, and that of threads its imports start,
        # such as OpenBLAS's pool): it must not slow the stages
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # raised again by the step's own import
                continue

    thread = threading.Thread(target=run, name="exante-import-ahead", daemon=True)
    thread.start()
    return thread


# -- progress: which step, which shard and slice, the retrain's own epochs -------------


def _tell(ctx: Context, line: str) -> None:
    if ctx.progress is not None:
        ctx.progress(line)


def _repro(ctx: Context, removed: Mapping[str, str]) -> None:
    """``dvc repro``, streamed into a log under ``.exante/logs`` (and to ``ctx.progress``).

    Without the audit stage: the bundle must hold the receipt, so it is built
    once, after the receipt is signed (:func:`_refresh_audit`), not also here.
    """
    _dvc.repro(ctx.root, ctx.cfg, removed, progress=ctx.progress, skip=("audit",))
    if stale := _still_ingested(ctx.root, removed):
        # their raw files changed where DVC does not look (a file .dvcignore hides), so
        # their ingest stages were not re-run: run them, then what depends on them
        _tell(ctx, f"the records of {', '.join(stale)} still hold removed records: "
                   "ingesting again")  # fmt: skip
        _dvc.repro(ctx.root, ctx.cfg, removed, progress=ctx.progress, skip=("audit",),
                   force=[f"ingest@{s}" for s in stale])  # fmt: skip


def _still_ingested(root: Path, removed: Mapping[str, str]) -> list[str]:
    """The sources whose records file still holds a removed record (ids name their source).

    A line scan: a record line is canonical JSON, its ``record_id`` first (what
    this misses, :func:`verify_deleted` still finds, after the pipeline).
    """
    out = []
    for source in sorted({rid.partition("/")[0] for rid in removed}):
        path = root / LAYOUT.records_file(source)
        heads = tuple(b'{"record_id":"%s"' % rid.encode() for rid in removed
                      if rid.startswith(source + "/"))  # fmt: skip
        if path.is_file():
            with open(path, "rb") as f:
                if any(line.startswith(heads) for line in f):
                    out.append(source)
    return out


def _refresh_audit(ctx: Context) -> None:
    """Build the audit bundle with the final ledger and receipts; record it in dvc.lock.

    The deletion's ``dvc repro`` leaves the audit stage out, so this is the one
    build of the new release's bundle. The deletion is complete either way: a
    failure here is reported, not raised (``dvc repro audit`` then builds it).
    """
    if "audit" not in _dvc.stage_names(ctx.root):
        return
    from verify.audit.bundle import DEFAULT_HTML, DEFAULT_OUT, build_bundle

    try:
        build_bundle(ctx.root, signer=ctx.signer, out=ctx.root / DEFAULT_OUT,
                     html_out=ctx.root / DEFAULT_HTML)  # fmt: skip
        _dvc.run(ctx.root, ["commit", "-f", "-q", "audit"], "dvc commit (the audit bundle)")
        ctx.say(f"audit bundle refreshed: {DEFAULT_OUT}")
    except (LineageError, OSError) as exc:
        ctx.say(f"the deletion is complete, but the audit bundle was not refreshed ({exc}); "
                "run `dvc repro audit` or `exante audit bundle`")  # fmt: skip


class _Stepper:
    """Moves each request one step in the ledger, skipping those already past it."""

    def __init__(self, ctx: Context, lock, request_ids: Sequence[str]) -> None:
        self.ctx, self.lock, self.ids = ctx, lock, request_ids

    def to(self, status: str, *, from_: set[str], meta=None, shards=()) -> None:
        ledger = verify_ledger(self.ctx.root, self.ctx.trusted)
        for rid in self.ids:
            if ledger.status_of(rid) in from_:
                append_status(self.lock, self.ctx.signer, self.ctx.trusted, request_id=rid,
                              status=status, meta=meta or {}, shards=shards)  # fmt: skip
        self.ctx.say(f"{', '.join(self.ids)}: {status}")

    def fail(self, exc: BaseException) -> None:
        ledger = verify_ledger(self.ctx.root, self.ctx.trusted)
        detail = f"{type(exc).__name__}: {exc}"[:2000]
        for rid in self.ids:
            if ledger.status_of(rid) not in {"complete", "failed"}:
                append_status(self.lock, self.ctx.signer, self.ctx.trusted, request_id=rid,
                              status="failed", detail=detail)  # fmt: skip
