"""Verifying a real deletion: the forget set is a ledger request's records, not a params draw.

``exante delete --verify`` calls :func:`verify_request` after the request is in
the ledger (and the deny set) and before the pipeline retrains: the records'
text still exists then, and nowhere afterwards. Everything is built in a
scratch workspace, ``models/verify-<request>.tmp``, whose entries link to the
project's files except those it writes (``models/verify``,
``data/verification`` and ``data/receipts``), so the params verification, its
cached DVC stages and the receipts are not touched:

- ``retrain``: the request's shard trained from scratch without the records;
- ``exact``: the deletion code path on a scratch copy of that shard's
  checkpoints (what the production retrain will then produce, bit for bit:
  :func:`exact_matches_release` checks it once the pipeline has run);
- ``approx:<m>``: the released shard model post-hoc unlearned on the records;
- ``original``: the release as it stands, trained on them.

The signed report, results (ids and numbers, no text), summary and plots are
moved to ``data/receipts/verification/<request>/`` (tracked with the receipts; the
report's subjects are those files, the tested models are named by digest in its
predicate, since the release it tested is purged); the workspace, which holds
models that know the records, is deleted, and the deletion's purge deletes any
that a crash left behind (``models/*.tmp``). A request whose records span
shards, or hold no fact to probe, is refused before anything is written.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from lineage.layout import LAYOUT, VerificationFiles, shard_name
from verify.forget import ForgetSet, for_records

REQUESTS = LAYOUT.request_verifications  # tracked with the receipts
# what verification writes in the workspace (top directory → its entries): never links
_WRITTEN: dict[str, set[str]] = {}
for _path in (LAYOUT.verify_models, LAYOUT.verification, LAYOUT.receipts):
    _WRITTEN.setdefault(_path.parts[0], set()).add(_path.parts[1])


def request_dir(request_id: str) -> Path:
    return REQUESTS / re.sub(r"[^A-Za-z0-9._-]", "_", request_id)


def forget_set_of(root: Path, params, record_ids: Sequence[str]) -> ForgetSet:
    """The request's forget set (raises ``ForgetSetError`` when it cannot be verified)."""
    from verify.forget import companions

    return for_records(root, record_ids, shards=params.train.shards,
                       companions=companions(params.verify))  # fmt: skip


def verify_request(
    root: Path,
    params,
    signer,
    request_id: str,
    fs: ForgetSet,
    *,
    progress: Callable[[str], None] = print,
) -> dict:
    """Build the subjects for ``fs`` in a scratch workspace, verify, publish, clean up."""
    from verify import baselines
    from verify.policy import load_policy
    from verify.stage import run_verify

    root = Path(root).resolve()
    out = request_dir(request_id)
    scratch = root / LAYOUT.verify_scratch(out.name)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        _link_workspace(root, scratch)
        policy = load_policy(scratch)
        for name in baselines.required(params, policy):  # under the project's registration
            progress(f"{request_id}: building {name}")
            baselines.build(scratch, name, params, policy, fs)
        results = run_verify(scratch, params, signer, progress=progress, fs=fs, out=out,
                             evidence_root=root, tags={"request_id": request_id},
                             sign_release=False)  # fmt: skip
        target = root / out
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        (scratch / out).rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    exact = results["subjects"]["exact"]["forget_shard_sha256"]
    return {
        "request_id": request_id,
        "report": VerificationFiles(out).report.as_posix(),
        "shard": fs.shard,
        "forget_people": list(fs.forget_people),
        "records": len(fs.forget),
        "verdicts": {n: s["verdict"] for n, s in results["summary"].items()},
        "exact_forget_shard_sha256": exact,
        "power": _power_ok(results),
        "mlflow_run_id": results["evidence"]["parent_run_id"],
        "results": results,
    }


def _link_workspace(root: Path, scratch: Path) -> None:
    """``scratch`` mirrors ``root`` by symlinks, except the directories verification writes."""
    scratch.mkdir(parents=True)
    for entry in root.iterdir():
        if entry.name in (".git", ".dvc"):
            continue
        if entry.name not in _WRITTEN:
            (scratch / entry.name).symlink_to(entry)
            continue
        (scratch / entry.name).mkdir()
        for sub in entry.iterdir():
            if sub.name not in _WRITTEN[entry.name] and not sub.name.endswith(".tmp"):
                (scratch / entry.name / sub.name).symlink_to(sub)


def exact_matches_release(root: Path, shard: int, digest: str) -> bool:
    """The released shard model (after the deletion's retrain) is the verified ``exact``."""
    from verify.subjects import weights_digest

    return weights_digest(Path(root) / LAYOUT.ensemble / shard_name(shard)) == digest


REQUESTED = "verification-requested"  # marker: --verify was asked; results replace it


def mark_requested(root: Path, request_id: str) -> None:
    """Record that ``request_id`` is to be verified, before anything can fail.

    Publishing the verification replaces the directory, marker included; a
    marker left alone means the verification never completed, and
    :func:`stored` then withholds the receipt on ``--resume``.
    """
    d = Path(root) / request_dir(request_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / REQUESTED).write_text(f"{request_id}\n")


def stored(root: Path, request_id: str, trusted) -> dict | None:
    """A request's verification as published and signed (for ``--resume``: the text is gone).

    None when none was asked for. The signed report is checked first (its
    signature, and the digest of every file it names, results.json included),
    so an edited verdict cannot buy a receipt. A verification that was asked
    for and never published reads as ``exact`` missing: the gate refuses it.
    """
    import json

    from verify.report import verify_report

    where = Path(root) / request_dir(request_id)
    report = VerificationFiles(where).report
    if not report.is_file():
        if not (where / REQUESTED).is_file():
            return None
        return {"request_id": request_id, "report": None, "shard": None, "forget_people": [],
                "records": 0, "verdicts": {}, "exact_forget_shard_sha256": None,
                "power": {}}  # fmt: skip
    predicate = verify_report(report, root=Path(root), trusted=trusted)
    results = json.loads(VerificationFiles(where).results.read_text())
    return {
        "request_id": request_id,
        "report": VerificationFiles(request_dir(request_id)).report.as_posix(),
        "shard": results["forget_set"]["shard"],
        "forget_people": results["forget_set"]["forget_people"],
        "records": len(results["forget_set"]["forget_records"]),
        "verdicts": {n: s["verdict"] for n, s in predicate["summary"].items()},
        "exact_forget_shard_sha256": predicate["subjects"]["exact"]["forget_shard_sha256"],
        "power": _power_ok(predicate),
    }  # fmt: skip


def _power_ok(results: dict) -> dict[str, bool]:
    return {n: bool(p.get("ok")) for n, p in results.get("power", {}).items()
            if n in ("planted", "heldout")}  # fmt: skip


def gate(info: dict) -> list[str]:
    """Why no receipt may be issued on this verification (empty: it may).

    The receipt says the records are gone from the release: not on an ``exact``
    subject that failed, nor on one that is not the release, bit for bit. An
    inconclusive verification (one person: nothing to relearn on) does not
    block the receipt, which records it as inconclusive, never as a pass.
    """
    problems = []
    if info.get("report") is None:
        return ["the verification asked for (--verify) never completed: no signed report"]
    verdict = info["verdicts"].get("exact")
    if verdict not in ("pass", "inconclusive"):
        problems.append(f"exact deletion is {verdict or 'missing'}, not pass")
    if not info.get("exact_is_release", False):
        problems.append(f"the released shard {info['shard']} is not the verified exact model")
    return problems


def summary_line(info: dict) -> str:
    verdicts = ", ".join(f"{k} {v}" for k, v in info["verdicts"].items())
    people = ", ".join(info["forget_people"])
    return (
        f"verified in shard {info['shard']} ({info['records']} records of {people}): "
        f"{verdicts}; report {info['report']}"
    )
