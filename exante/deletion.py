"""``exante delete``: honour erasure requests exactly, purge every copy, issue a receipt.

The flow, under the ledger lock (:func:`lineage.ledger.ledger_lock`):

1. resolve each request to record ids and the digests of their text (a subject
   is all its records), checking everything before anything is written;
2. append the requests (``received``) and rewrite the deny set
   (:mod:`lineage.erasure`), then ``retraining`` with the model digests before;
3. erase the records from the raw files they were read from (:mod:`lineage.scrub`),
   then run ``dvc repro``: the deny set re-runs corpus and ingest, so the records
   leave the record files, the manifest gets a new version, and only the
   shards that held them retrain, from their last clean slice (found by lookup);
   the ensemble is re-signed and attested;
4. delete the slice checkpoints that saw a denied record, then purge the DVC
   cache and the default remote of the old file versions (``purged``);
5. verify (``verified``); 6. sign a receipt (``complete``).

A failure appends ``failed`` with the reason; ``--resume`` finishes every
pending request from where it stands. Queued requests (:mod:`exante.queue`)
wait for ``--flush``, which runs this same flow over all of them at once.
``dvc repro`` is streamed into ``.exante/logs`` (and to ``Context.progress``).
The previous release (``models/ensemble``, its signature, its attestation and
the checkpoints it names) stays in force until the attest stage replaces it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exante.params import load_params
from lineage._canonical import file_sha256
from lineage._shape import shown
from lineage.errors import BadInputError, LineageError, VerificationError
from lineage.layout import LAYOUT, shard_name
from lineage.ledger import (
    Ledger,
    StatusChange,
    append_request,
    append_status,
    ledger_lock,
    verify_ledger,
)
from lineage.records import Record, read_all
from lineage.stages import RECORDS

RECEIPTS = LAYOUT.receipts
ACKS = LAYOUT.acks
LOGS = LAYOUT.logs
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")


class UnknownTargetError(BadInputError):
    """A request names a record or subject that is not in the records (or was deleted)."""


class RequestFileError(BadInputError):
    """A line of a ``--from-file`` requests file is not a request."""


class UnverifiedDeletionError(VerificationError):
    """``--verify`` did not show the deletion exact; no receipt is issued for the request."""


class DeletionFailedError(VerificationError):
    """The pipeline, the purge or the verification failed; the request is marked failed."""


@dataclass(frozen=True)
class RequestSpec:
    """What a requester asks: records and/or subjects, a reason (a reference, not prose)."""

    reason: str
    record_ids: tuple[str, ...] = ()
    subject_ids: tuple[str, ...] = ()
    request_id: str = field(default_factory=lambda: f"del-{uuid.uuid4().hex[:12]}")


# -- reading and resolving requests ---------------------------------------------


def read_request_file(path: Path) -> list[RequestSpec]:
    """One JSON object a line: ``reason``, ``record_ids`` and/or ``subject_ids``, ``request_id``."""
    specs, problems = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestFileError(f"{path}: cannot read the requests file: {exc}") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                specs.append(_spec(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"line {n}: {exc}")
    if problems or not specs:
        raise RequestFileError(f"{path}: not a requests file:", problems=problems or ["no lines"])
    return specs


def _spec(d) -> RequestSpec:
    allowed = {"reason", "record_ids", "subject_ids", "request_id"}
    if not isinstance(d, dict) or not set(d) <= allowed or "reason" not in d:
        raise ValueError(f"expected an object with a reason and some of {sorted(allowed)}")
    ids = [d.get(k, []) for k in ("record_ids", "subject_ids")]
    if not all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in ids):
        raise ValueError("record_ids and subject_ids must be lists of strings")
    extra = {"request_id": d["request_id"]} if "request_id" in d else {}
    return RequestSpec(str(d["reason"]), tuple(ids[0]), tuple(ids[1]), **extra)


def resolve(
    specs: Sequence[RequestSpec], records: Sequence[Record], ledger: Ledger
) -> list[dict[str, str]]:
    """Each request's records (id → sha256); every unknown id of every request reported at once."""
    by_id = {r.record_id: r for r in records}
    deleted = {i: q.request_id for q in ledger.requests() for i in q.record_ids}
    problems, out = [], []
    known = {q.request_id for q in ledger.requests()}
    for spec in specs:
        if not spec.reason.strip():
            problems.append(f"{spec.request_id}: a reason is required")
        if not (spec.record_ids or spec.subject_ids):
            problems.append(f"{spec.request_id}: name at least one record or subject")
        if not _REQUEST_ID.fullmatch(spec.request_id):
            problems.append(f"request id {shown(spec.request_id)} is malformed: up to 128 "
                            "letters, digits and ._:@+-, from a letter or digit")  # fmt: skip
        if spec.request_id in known:
            problems.append(f"{spec.request_id}: a request with this id is already in the ledger")
        hashes = {}
        for rid in spec.record_ids:
            if rid in by_id:
                hashes[rid] = by_id[rid].sha256
            else:
                was = f" (deleted by request {deleted[rid]})" if rid in deleted else ""
                problems.append(f"record {rid!r} is not in {RECORDS}{was}")
        for sid in spec.subject_ids:
            theirs = {r.record_id: r.sha256 for r in records if sid in r.subject_ids}
            if not theirs:
                problems.append(f"subject {sid!r} has no records in {RECORDS}")
            hashes |= theirs
        out.append(hashes)
    if len({s.request_id for s in specs}) != len(specs):
        problems.append("two requests share one request id")
    if problems:
        raise UnknownTargetError(
            "refused the deletion request; nothing was written:", problems=problems
        )
    return out


# -- plan: what a deletion touches and what it costs ----------------------------


def plan(root: Path, cfg, record_ids: Sequence[str]) -> dict:
    """Shards and slices holding the records, and the retrain cost against a full retrain.

    Cost is counted as characters × epochs: slice r trains on slices 0..r, for
    ``slice_epochs`` epochs (the last slice up to ``max_epochs``, an upper bound);
    with ``replay``, slice r trains its own characters plus ``replay`` × the earlier
    slices' for up to ``max_epochs``; with ``slice_work: equal``, slice r trains slices
    0..r for up to ``max_epochs × R/(r+1)`` epochs. A shard is retrained from its earliest
    affected slice; earlier slices are reused.
    """
    from training.partition import read_shard

    paths, wanted = LAYOUT, set(record_ids)
    shards, full, retrain = {}, 0, 0
    for s in range(cfg.shards):
        placed = read_shard(Path(root) / paths.shard_file(s))
        chars = [sum(len(r.text) for q, r in placed if q == k) for k in range(cfg.slices)]
        costs = [_slice_cost(cfg, chars, k) for k in range(cfg.slices)]
        full += sum(costs)
        hit = sorted({q for q, r in placed if r.record_id in wanted})
        if hit:
            shards[s] = {"records": sorted(r.record_id for _, r in placed if r.record_id in wanted),
                         "first_slice": hit[0], "reused_slices": list(range(hit[0]))}  # fmt: skip
            retrain += sum(costs[hit[0] :])
    base = {r.record_id for _, r in read_shard(Path(root) / paths.base_file())} & wanted
    placed_ids = {i for v in shards.values() for i in v["records"]} | base
    return {
        "records": sorted(wanted),
        "shards": shards,
        "base_records": sorted(base),
        "untrained_records": sorted(wanted - placed_ids),
        "cost": {
            "retrain": retrain,
            "full": full,
            "ratio": retrain / full if full else 0.0,
            "unit": "characters × epochs",
        },
    }


def _slice_cost(cfg, chars: Sequence[int], r: int) -> float:
    """Characters × epochs of slice r, given each slice's own characters."""
    from exante._progress import slice_plan

    cap, work = slice_plan(cfg, chars)[r]
    return cap * work


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


def _check_verified(ctx: Context, verified: dict) -> dict:
    """After the retrain: the verified ``exact`` passed and is the released shard, or no receipt.

    Raises :class:`UnverifiedDeletionError` (the requests are marked failed with
    the reason; ``--resume`` checks again once the cause is fixed).
    """
    from verify.request import exact_matches_release, gate, summary_line

    problems = []
    for rid, info in verified.items():
        published = info["report"] is not None  # a --verify that never completed: no report
        info["exact_is_release"] = published and exact_matches_release(
            ctx.root, info["shard"], info["exact_forget_shard_sha256"]
        )
        if published:
            ctx.say(f"{rid}: {summary_line(info)}")
        problems += [f"{rid}: {p}" for p in gate(info)]
    if problems:
        raise UnverifiedDeletionError(
            "no receipt: the verification does not show this deletion exact; see the report "
            f"under {LAYOUT.request_verifications}/:",
            problems=problems,
        )
    return {"verification": verified} if verified else {}


def _process(
    ctx: Context, lock, request_ids: Sequence[str], forget: Mapping | None = None
) -> list[Path]:
    ledger = verify_ledger(ctx.root, ctx.trusted)
    removed = {i: h for rid in request_ids for i, h in ledger.request(rid).record_hashes.items()}
    step, started = _Stepper(ctx, lock, request_ids), time.perf_counter()
    try:
        before = _models_before(ctx, ledger, request_ids)
        verified = (_verify_requests(ctx, forget) if forget
                    else _stored_verifications(ctx, request_ids))  # fmt: skip
        shards, ratio = _affected(ctx, removed)
        step.to("retraining", from_={"received", "queued", "failed"}, shards=shards,
                meta={"models_before": before, "estimated_cost_ratio": ratio})  # fmt: skip
        erased = erase_at_source(ctx.root)
        _repro(ctx, removed)
        _tell(ctx, "step 2/4: purging old copies (checkpoints, DVC cache and remote)")
        purged = purge(ctx.root, ctx.cfg) | {"raw_rows_erased": erased}
        step.to("purged", from_={"retraining"}, meta=purged)
        _tell(ctx, "step 3/4: checking the records are gone and the release verifies")
        verify_deleted(ctx.root, ctx.cfg, ctx.trusted, removed)
        step.to("verified", from_={"purged"})
        _tell(ctx, "step 4/4: logging evidence and signing receipts")
        models = _models(ctx, request_ids)
        evidence = _log_evidence(ctx, request_ids, removed, started, models)
        evidence |= _check_verified(ctx, verified)
        receipts = _issue(ctx, lock, request_ids, evidence, models)
        _track_ledger(ctx.root)
    except (LineageError, OSError, subprocess.SubprocessError) as exc:
        step.fail(exc)
        raise DeletionFailedError(
            f"deletion of {', '.join(request_ids)} failed; the previous signed model stays "
            f"in force. Fix the cause and run `exante delete --resume`: {exc}"
        ) from exc
    _refresh_audit(ctx)
    return receipts


# -- progress: which step, which shard and slice, the retrain's own epochs -------------


def _tell(ctx: Context, line: str) -> None:
    if ctx.progress is not None:
        ctx.progress(line)


def _repro(ctx: Context, removed: Mapping[str, str]) -> None:
    """``dvc repro``, its output streamed line by line into a log under ``.exante/logs``.

    The shard retrain runs inside it as a child process: its per-epoch lines
    (slice, epoch, loss, time left) go to the log always, and to stderr with
    progress on, instead of minutes of silence.
    """
    from datetime import UTC, datetime

    from exante._stream import PROGRESS_ENV, run_streamed

    try:
        where = plan(ctx.root, ctx.cfg, list(removed))["shards"]
    except (FileNotFoundError, LineageError):
        where = {}
    todo = ", ".join(f"shard {s} from slice {v['first_slice']}" for s, v in where.items())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = ctx.root / LOGS / f"repro-{stamp}.log"
    _tell(ctx, f"step 1/4: retraining {todo or 'nothing (no shard holds the records)'} "
               f"in dvc repro; log: {log.relative_to(ctx.root)}")  # fmt: skip
    code, tail = run_streamed([sys.executable, "-m", "dvc", "repro"], ctx.root, log=log,
                              echo=ctx.progress, env={PROGRESS_ENV: "1"})  # fmt: skip
    if code != 0:
        raise DeletionFailedError(f"the pipeline (dvc repro) failed (exit {code}); "
                                  f"the whole output is in {log}:", problems=tail)  # fmt: skip


def _refresh_audit(ctx: Context) -> None:
    """Rebuild the audit bundle with the final ledger and receipts; record it in dvc.lock.

    The pipeline's audit stage ran mid-deletion, before the receipt existed. The
    deletion is complete either way: a failure here is reported, not raised.
    """
    if "audit" not in _stage_names(ctx.root):
        return
    from verify.audit.bundle import DEFAULT_HTML, DEFAULT_OUT, build_bundle

    try:
        build_bundle(ctx.root, signer=ctx.signer, out=ctx.root / DEFAULT_OUT,
                     html_out=ctx.root / DEFAULT_HTML)  # fmt: skip
        _run(ctx.root, ["commit", "-f", "-q", "audit"], "dvc commit (the audit bundle)")
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


def _affected(ctx: Context, removed: Mapping[str, str]) -> tuple[list[int], float | None]:
    """The shards holding the records, and the plan's cost ratio (None before any partition)."""
    try:
        p = plan(ctx.root, ctx.cfg, list(removed))
    except (FileNotFoundError, LineageError):
        return [], None
    return sorted(p["shards"]), p["cost"]["ratio"]


def model_digests(root: Path, cfg) -> dict[str, str]:
    """The released models: each shard's final checkpoint directory and the ensemble signature."""
    from training import checkpoints
    from training.sisa import final_checkpoint

    paths, out = LAYOUT, {}
    for s in range(cfg.shards):
        shard_dir = Path(root) / paths.shard_dir(s)
        try:
            out[shard_name(s)] = checkpoints.dir_digest(final_checkpoint(shard_dir))
        except FileNotFoundError:
            continue
    if (Path(root) / paths.signature).is_file():
        out["ensemble.sig"] = file_sha256(Path(root) / paths.signature)
    return out


def _retraining_meta(ledger: Ledger, request_ids: Sequence[str]) -> Mapping:
    """What was recorded when retraining began (a resumed request keeps its own)."""
    for entry in ledger.entries:
        if (
            isinstance(entry, StatusChange)
            and entry.request_id in request_ids
            and entry.status == "retraining"
            and "models_before" in entry.meta
        ):
            return entry.meta
    return {}


def _models_before(ctx: Context, ledger: Ledger, request_ids: Sequence[str]) -> dict[str, str]:
    meta = _retraining_meta(ledger, request_ids)
    return dict(meta["models_before"]) if meta else model_digests(ctx.root, ctx.cfg)


def _run(root: Path, args: list[str], what: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise DeletionFailedError(f"{what} failed (exit {out.returncode}):", problems=tail)
    return out.stdout


def _track_ledger(root: Path) -> None:
    """Put the ledger, its signed head and the receipts under DVC control (and on the remote).

    They hold ids and digests, never text, so their old versions may stay.
    """
    from lineage.ledger import HEAD, LEDGER

    targets = [LEDGER.as_posix(), HEAD.as_posix(), RECEIPTS.as_posix()]
    targets += [ACKS.as_posix()] if (root / ACKS).is_dir() else []  # queued requests' acks
    _run(root, ["add", "-q", *targets], "dvc add (the ledger and receipts)")
    if _default_remote(root):
        _run(root, ["push", "-q", *(f"{t}.dvc" for t in targets)], "dvc push (the ledger)")


# -- purge and verify -----------------------------------------------------------


def erase_at_source(root: Path) -> dict[str, int]:
    """The denied rows out of the raw files of the user's sources and of the probes file.

    Before the pipeline runs, so ingest reads files that no longer hold them; a
    resumed deletion erases again (a clean file is left as it is).
    """
    from lineage.erasure import denials
    from lineage.scrub import scrub_probes, scrub_sources
    from lineage.sources import load_registry
    from lineage.stages import REGISTRY as SOURCES

    root = Path(root)
    deny = denials(root)
    erased = scrub_sources(load_registry(root / SOURCES), root, deny)
    probes = load_params(root / LAYOUT.params).verify.probes
    if probes and (n := scrub_probes(root / probes, deny)):
        erased[probes] = n
    return erased


def _purge_copies(root: Path) -> list[Path]:
    """Logs of earlier runs may quote record text (the report's samples), and the datasets
    cache pieces of raw files: neither outlives a deletion. The newest log is this
    deletion's own retrain, run after the records were gone: it stays."""
    import shutil

    from lineage._readers import HF_CACHE

    gone = sorted((root / LOGS).glob("*.log"))[:-1]
    for log in gone:
        log.unlink()
    if (root / HF_CACHE).is_dir():
        shutil.rmtree(root / HF_CACHE)
        gone.append(root / HF_CACHE)
    return gone


def purge(root: Path, cfg) -> dict:
    """Remove old file versions from the DVC cache and the default remote, and temp files.

    The pipeline has rewritten every file that held the records and deleted the
    checkpoints that saw them; what is left are their old versions in the DVC
    cache (and, once pushed, the remote). Only versions the workspace uses are kept.
    """
    import shutil

    root = Path(root)
    temps = [p for p in (root / LAYOUT.models).glob("*.tmp") if p.is_dir()]
    for p in temps:
        shutil.rmtree(p)
    temps += _purge_copies(root)
    pruned = prune_checkpoints(root, cfg)
    if pruned:  # the shard directories changed after the pipeline: record them in dvc.lock
        stages = ["train", "attest"]
        forget = shard_name(load_params(root / LAYOUT.params).verify.forget_shard)
        if forget in pruned and "verify_baselines" in _stage_names(root):
            stages.append("verify_baselines")  # it depends on that shard's checkpoint directory
        _run(root, ["commit", "-f", "-q", *stages], "dvc commit (after pruning checkpoints)")
    remote = _default_remote(root)
    if remote:
        _run(root, ["push"], f"dvc push to remote {remote!r}")
        _run(root, ["gc", "--workspace", "--cloud", "--force"], "dvc gc (cache and remote)")
    else:
        _run(root, ["gc", "--workspace", "--force"], "dvc gc (cache)")
    return {"dvc_cache": "gc --workspace", "dvc_remote": remote or None,
            "temp_dirs": [p.relative_to(root).as_posix() for p in temps],
            "pruned_checkpoints": pruned}  # fmt: skip


def _stage_names(root: Path) -> set[str]:
    import yaml

    return set(yaml.safe_load((Path(root) / LAYOUT.dvc_file).read_text()).get("stages", {}))


def prune_checkpoints(root: Path, cfg) -> dict[str, list[str]]:
    """Delete every slice checkpoint that saw a record the ledger denies.

    This runs after the pipeline has attested the new models, not in the train
    stage: until then the previous release's checkpoints, which its attestation
    names, stay on disk, so a crash mid-retrain leaves that release verifiable.
    """
    from lineage.ledger import LEDGER
    from lineage.stages import ledger_denials
    from training import checkpoints
    from training.stages import slice_dirs

    paths, denied, out = LAYOUT, ledger_denials(Path(root) / LEDGER).records, {}
    for s in range(cfg.shards):
        keep = [d.name for d in slice_dirs(root, s, paths)]
        gone = checkpoints.prune(Path(root) / paths.shard_dir(s) / "ckpt", denied, keep=keep)
        if gone:
            out[shard_name(s)] = gone
    return out


def _default_remote(root: Path) -> str | None:
    out = subprocess.run([sys.executable, "-m", "dvc", "config", "core.remote"], cwd=root,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() or None if out.returncode == 0 else None


def verify_deleted(root: Path, cfg, trusted: Mapping, removed: Mapping[str, str]) -> None:
    """No record file or checkpoint holds a removed record; the released models verify."""
    from training.attest import verify_training_attestation

    root, paths, problems = Path(root), LAYOUT, []
    left = [r.record_id for r in read_all(root / RECORDS) if r.record_id in removed]
    problems += [f"{i} is still in {RECORDS}" for i in left]
    problems += _left_in_raw_files(root)
    for meta in sorted((root / paths.shard_models).glob("*/ckpt/*/exante-checkpoint.json")):
        seen = set(json.loads(meta.read_text()).get("records", []))
        if seen & set(removed):
            problems.append(f"checkpoint {meta.parent.relative_to(root)} has seen a removed record")
    if problems:
        raise DeletionFailedError("the records are not gone:", problems=problems)
    verify_training_attestation(root / paths.attestation, root=root, trusted=trusted)


def _left_in_raw_files(root: Path) -> list[str]:
    from lineage.erasure import denials
    from lineage.scrub import left_in_sources
    from lineage.sources import load_registry
    from lineage.stages import REGISTRY as SOURCES

    return left_in_sources(load_registry(root / SOURCES), root, denials(root))


@dataclass(frozen=True)
class _Models:
    """The released models before the deletion (as recorded when it began) and after it."""

    before: Mapping[str, str]
    after: Mapping[str, str]
    estimated_cost_ratio: float | None

    @property
    def retrained(self) -> list[int]:
        return [int(k[1:]) for k in self.after if k.startswith("s")
                and self.before.get(k) != self.after[k]]  # fmt: skip


def _models(ctx: Context, request_ids: Sequence[str]) -> _Models:
    """Hashes the released models once, for both the evidence and the receipts."""
    ledger = verify_ledger(ctx.root, ctx.trusted)
    ratio = _retraining_meta(ledger, request_ids).get("estimated_cost_ratio")
    before = _models_before(ctx, ledger, request_ids)
    return _Models(before, model_digests(ctx.root, ctx.cfg), ratio)


def _log_evidence(ctx: Context, request_ids, removed, started: float, models: _Models) -> dict:
    """The deletion's MLflow run: shards retrained, slices reused and trained, time, cost."""
    from verify.evidence import log_deletion

    shards = models.retrained
    units = [json.loads((ctx.root / LAYOUT.unit_metrics(shard_name(s))).read_text())
             for s in shards]  # fmt: skip
    metrics = {
        "records_removed": len(removed), "shards_retrained": len(shards),
        "slices_reused": sum(len(m["reused_slices"]) for m in units),
        "slices_trained": sum(len(m["trained_slices"]) for m in units),
        "retrain_wall_seconds": sum(m["wall_seconds"] for m in units),
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    if models.estimated_cost_ratio is not None:
        metrics["estimated_cost_ratio"] = models.estimated_cost_ratio
    run_id = log_deletion(ctx.root, request_ids=list(request_ids), metrics=metrics,
                          tags={"retrained_shards": ",".join(map(str, shards))})  # fmt: skip
    return {"mlflow_run_id": run_id}


def _issue(
    ctx: Context, lock, request_ids: Sequence[str], evidence: Mapping, models: _Models
) -> list[Path]:
    from lineage.manifest import load_leaves, load_manifest
    from lineage.receipt import issue_receipt

    ledger = verify_ledger(ctx.root, ctx.trusted)
    manifest = load_manifest(ctx.root, ctx.trusted)
    leaves = load_leaves(ctx.root, manifest)
    before, after, retrained = models.before, models.after, models.retrained
    paths = []
    for rid in request_ids:
        request = ledger.request(rid)
        out = ctx.root / RECEIPTS / f"{re.sub(r'[^A-Za-z0-9._-]', '_', rid)}.dsse.json"
        if ledger.status_of(rid) == "verified":
            issue_receipt(out, ctx.signer, request_id=rid, ledger_entry_sha256=request.sha256,
                          manifest=manifest, leaves=leaves, removed=request.record_hashes,
                          models_before=before, models_after=after,
                          retrained_shards=retrained)  # fmt: skip
            append_status(lock, ctx.signer, ctx.trusted, request_id=rid, status="complete",
                          shards=retrained, meta={"receipt": out.relative_to(ctx.root).as_posix(),
                          "manifest_version": manifest.version, **evidence})  # fmt: skip
            ctx.say(f"{rid}: complete; receipt → {out.relative_to(ctx.root)}")
        paths.append(out)
    return paths
