"""Purge every copy of the deleted records, and check that none is left.

Raw rows are erased at their source before the pipeline runs; afterwards the
checkpoints that saw a denied record, old logs, the ``datasets`` cache, temp
directories and the old file versions in the DVC cache and remote go.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from exante._dvc import LOGS, DeletionFailedError, default_remote, run, stage_names
from exante.params import load_params
from lineage.layout import LAYOUT, shard_name
from lineage.records import read_all
from lineage.stages import RECORDS


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
    cache pieces of raw files: neither outlives a deletion. The newest logs are this
    deletion's own retrain's, run after the records were gone (``repro-<time>.log`` and
    the warm process's ``warm-<time>.log``): they stay."""
    import shutil

    from lineage._readers import HF_CACHE

    logs = sorted((root / LOGS).glob("*.log"))
    newest = [p.name.split("-", 1)[-1] for p in logs if p.name.startswith("repro-")][-1:]
    gone = [p for p in logs if p.name.split("-", 1)[-1] not in newest] if newest else logs[:-1]
    for log in gone:
        log.unlink()
    if (root / HF_CACHE).is_dir():
        shutil.rmtree(root / HF_CACHE)
        gone.append(root / HF_CACHE)
    return gone + _purge_rows(root)


def _purge_rows(root: Path) -> list[Path]:
    """The verification's kept rows of every model that is gone (``verify.rows``).

    The ``verify`` stage keeps only its own run's models' rows, and it ran in this
    deletion's ``dvc repro``: its results name those models, and any other's rows
    (a retrained shard's old model, one measured by hand) go. Without the stage,
    or its results, nothing says which models are current: every row goes.
    """
    from verify.rows import prune_models

    keep = None
    results = root / LAYOUT.verification_files.results
    if "verify" in stage_names(root) and results.is_file():
        try:
            got = json.loads(results.read_text())
            keep = [*got["released_sha256"],
                    *(s["forget_shard_sha256"] for s in got["subjects"].values())]  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            keep = None
    return prune_models(root / LAYOUT.verify_rows, keep)


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
        if forget in pruned and "verify_baselines" in stage_names(root):
            stages.append("verify_baselines")  # it depends on that shard's checkpoint directory
        run(root, ["commit", "-f", "-q", *stages], "dvc commit (after pruning checkpoints)")
    remote = default_remote(root)
    if remote:
        run(root, ["push"], f"dvc push to remote {remote!r}")
        run(root, ["gc", "--workspace", "--cloud", "--force"], "dvc gc (cache and remote)")
    else:
        run(root, ["gc", "--workspace", "--force"], "dvc gc (cache)")
    return {"dvc_cache": "gc --workspace", "dvc_remote": remote or None,
            "temp_dirs": [p.relative_to(root).as_posix() for p in temps],
            "pruned_checkpoints": pruned}  # fmt: skip


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
