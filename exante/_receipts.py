"""A deletion's outcome: the released models before and after, its MLflow evidence,
the ``--verify`` gate, and the signed receipts (:mod:`lineage.receipt`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage._canonical import file_sha256
from lineage.errors import VerificationError
from lineage.layout import LAYOUT, shard_name
from lineage.ledger import Ledger, StatusChange, append_status, verify_ledger

if TYPE_CHECKING:
    from exante.deletion import Context

RECEIPTS = LAYOUT.receipts


class UnverifiedDeletionError(VerificationError):
    """``--verify`` did not show the deletion exact; no receipt is issued for the request."""


def check_verified(ctx: Context, verified: dict) -> dict:
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


def retraining_meta(ledger: Ledger, request_ids: Sequence[str]) -> Mapping:
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


def models_before(ctx: Context, ledger: Ledger, request_ids: Sequence[str]) -> dict[str, str]:
    meta = retraining_meta(ledger, request_ids)
    return dict(meta["models_before"]) if meta else model_digests(ctx.root, ctx.cfg)


@dataclass(frozen=True)
class Models:
    """The released models before the deletion (as recorded when it began) and after it."""

    before: Mapping[str, str]
    after: Mapping[str, str]
    estimated_cost_ratio: float | None

    @property
    def retrained(self) -> list[int]:
        return [int(k[1:]) for k in self.after if k.startswith("s")
                and self.before.get(k) != self.after[k]]  # fmt: skip


def released_models(ctx: Context, request_ids: Sequence[str]) -> Models:
    """Hashes the released models once, for both the evidence and the receipts."""
    ledger = verify_ledger(ctx.root, ctx.trusted)
    ratio = retraining_meta(ledger, request_ids).get("estimated_cost_ratio")
    before = models_before(ctx, ledger, request_ids)
    return Models(before, model_digests(ctx.root, ctx.cfg), ratio)


def log_evidence(ctx: Context, request_ids, removed, started: float, models: Models) -> dict:
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


def issue(
    ctx: Context, lock, request_ids: Sequence[str], evidence: Mapping, models: Models
) -> list[Path]:
    """Sign a receipt for each verified request and mark it complete; return every path."""
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
