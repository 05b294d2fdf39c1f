"""The dvc operations of a deletion: repro (streamed to a log), commit, add, push, gc.

Each runs ``python -m dvc`` in the project; a failure raises
:class:`DeletionFailedError` with the tail of dvc's output.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lineage.errors import LineageError, VerificationError
from lineage.layout import LAYOUT

LOGS = LAYOUT.logs


class DeletionFailedError(VerificationError):
    """The pipeline, the purge or the verification failed; the request is marked failed."""


def run(root: Path, args: list[str], what: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise DeletionFailedError(f"{what} failed (exit {out.returncode}):", problems=tail)
    return out.stdout


def repro(
    root: Path,
    cfg,
    removed: Mapping[str, str],
    *,
    progress: Callable[[str], None] | None,
    skip: Sequence[str] = (),
    force: Sequence[str] = (),
) -> None:
    """``dvc repro``, its output streamed line by line into a log under ``.exante/logs``.

    The shard retrain runs inside it as a child process: its per-epoch lines
    (slice, epoch, loss, time left) go to the log always, and to stderr with
    progress on, instead of minutes of silence. The stages in ``skip`` (leaves
    of the pipeline that the caller builds and commits itself) are left out;
    those in ``force`` run first, even where DVC finds them up to date. The stage
    commands are forked by a warm process that imported their modules once
    (:mod:`exante.warm`; ``EXANTE_WARM=off`` runs each by itself); what it did is
    in ``warm-<time>.log`` beside the log.
    """
    from datetime import UTC, datetime

    from exante._cost import plan
    from exante._stream import PROGRESS_ENV, child_env, run_streamed
    from exante.warm import start as start_warm
    from exante.warm import stop as stop_warm

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    env = child_env({PROGRESS_ENV: "1"})  # the stages' own: the warm process must match it
    warm = start_warm(root, env, root / LOGS / f"warm-{stamp}.log")  # first: it imports a while
    try:
        try:
            where = plan(root, cfg, list(removed))["shards"]
        except (FileNotFoundError, LineageError):
            where = {}
        todo = ", ".join(f"shard {s} from slice {v['first_slice']}" for s, v in where.items())
        log = root / LOGS / f"repro-{stamp}.log"
        if progress is not None:
            progress(f"step 1/4: retraining {todo or 'nothing (no shard holds the records)'} "
                     f"in dvc repro; log: {log.relative_to(root)}")  # fmt: skip
        targets = _targets(root, skip)
        for args in ([["repro", "-f", "-s", *force]] if force else []) + [["repro", *targets]]:
            code, tail = run_streamed([sys.executable, "-m", "dvc", *args], root, log=log,
                                      echo=progress, env=warm[1] if warm else env)  # fmt: skip
            if code != 0:
                break
    finally:
        if warm:
            stop_warm(warm[0])
    if code != 0:
        raise DeletionFailedError(f"the pipeline (dvc repro) failed (exit {code}); "
                                  f"the whole output is in {log}:", problems=tail)  # fmt: skip


def _targets(root: Path, skip: Sequence[str]) -> list[str]:
    """The targets that make ``dvc repro`` run every stage but ``skip``: the stages whose
    outputs no other of them reads (``dvc repro`` runs a target's upstream too); none
    (all of them) where dvc.yaml is absent or unreadable, so that ``dvc repro`` itself
    says what is wrong with it.

    Naming every stage instead cost about 3 s of ``dvc repro`` start-up (DVC
    collects each target on its own). Where paths alone cannot tell what DVC
    links (a frozen stage cuts its upstream off; ``wdir`` and stage ``vars``
    move paths), every stage but ``skip`` is named, as it is when no stage
    comes out unread.
    """
    import yaml

    if not skip:
        return []
    try:
        stages = yaml.safe_load((Path(root) / LAYOUT.dvc_file).read_text()).get("stages", {})
        kept = {n: stages[n].get("do", stages[n]) for n in stages if n not in set(skip)}
        unsure = any(x.get(k) for n in kept for x in (stages[n], kept[n])
                     for k in ("frozen", "wdir", "vars"))  # fmt: skip
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    if unsure:
        return sorted(kept)
    outs = {n: _paths(s, "outs", "metrics", "plots") for n, s in kept.items()}
    deps = {n: _paths(s, "deps") for n, s in kept.items()}
    unread = [n for n in kept if not any(_reads(deps[m], outs[n]) for m in kept if m != n)]
    return sorted(unread or kept)


def _paths(stage: dict, *fields: str) -> list[str]:
    """The paths a stage lists under ``fields`` (an entry may be a path or ``{path: options}``)."""
    out = []
    for field in fields:
        for entry in stage.get(field) or []:
            out += list(entry) if isinstance(entry, dict) else [entry]
    return [str(p).rstrip("/") for p in out]


def _reads(deps: list[str], outs: list[str]) -> bool:
    """Whether a dep is one of the outputs, or a directory holding one, or inside one."""
    return any(d == o or o.startswith(d + "/") or d.startswith(o + "/") for d in deps for o in outs)


def track_ledger(root: Path) -> None:
    """Put the ledger, its signed head and the receipts under DVC control (and on the remote).

    They hold ids and digests, never text, so their old versions may stay.
    """
    from lineage.ledger import HEAD, LEDGER

    acks = LAYOUT.acks
    targets = [LEDGER.as_posix(), HEAD.as_posix(), LAYOUT.receipts.as_posix()]
    targets += [acks.as_posix()] if (root / acks).is_dir() else []  # queued requests' acks
    run(root, ["add", "-q", *targets], "dvc add (the ledger and receipts)")
    if default_remote(root):
        run(root, ["push", "-q", *(f"{t}.dvc" for t in targets)], "dvc push (the ledger)")


def default_remote(root: Path) -> str | None:
    out = subprocess.run([sys.executable, "-m", "dvc", "config", "core.remote"], cwd=root,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() or None if out.returncode == 0 else None


def stage_names(root: Path) -> set[str]:
    import yaml

    return set(yaml.safe_load((Path(root) / LAYOUT.dvc_file).read_text()).get("stages", {}))
