"""Training evidence in MLflow: one parent run, one nested run per trained unit.

Training writes a metrics JSON per unit (base model, shard) and never imports
mlflow; this is the one module that talks to the tracking store, through an
explicit :class:`mlflow.MlflowClient` and run ids, never the fluent
``mlflow.start_run`` global state. The metrics files hold numbers only (no
record text), so logging them as artifacts leaks no training data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

from lineage.errors import LineageError
from lineage.layout import LAYOUT
from verify.verdicts import cell_outcome

DEFAULT_DB = LAYOUT.name(LAYOUT.mlflow_db)
ARTIFACTS_DIR = LAYOUT.name(LAYOUT.mlflow_artifacts)
TAG_PREFIX = "exante."

# What a store that is down, refused or misconfigured raises: MLflow wraps most of
# it, but SQLAlchemy engine errors and artifact copies escape unwrapped.
_STORE_ERRORS = (
    MlflowException,
    requests.RequestException,
    sqlalchemy.exc.SQLAlchemyError,
    OSError,
)


class VerifyError(LineageError):
    """Root of every error raised by :mod:`verify`."""


class EvidenceError(VerifyError):
    """The tracking store is unreachable or misconfigured: check MLFLOW_TRACKING_URI."""

    exit_code = 3


class MetricsFileError(VerifyError):
    """A unit's training metrics file is missing or malformed: re-run its train stage."""

    exit_code = 3


# -- the store ------------------------------------------------------------------


def tracking_uri(root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a sqlite database in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / DEFAULT_DB).resolve()}"


def client(root: Path) -> mlflow.MlflowClient:
    """An explicit client for the project's store (a sqlite store is created on first use)."""
    uri = tracking_uri(root)
    _check_sqlite_path(uri)
    with _store_errors(uri):
        return mlflow.MlflowClient(tracking_uri=uri)


def runs_of(root: Path, parent_run_id: str) -> list[Run]:
    """The runs nested under ``parent_run_id``, by run name."""
    c, uri = client(root), tracking_uri(root)
    with _store_errors(uri):
        experiment_id = c.get_run(parent_run_id).info.experiment_id
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
        runs, token = [], None
        while True:
            page = c.search_runs([experiment_id], filter_string=query, page_token=token)
            runs += page
            if not (token := page.token):
                return sorted(runs, key=lambda r: r.info.run_name)


# -- logging --------------------------------------------------------------------


def log_training(
    root: Path,
    *,
    params: dict,
    digests: Mapping[str, str],
    units: Mapping[str, Path],
    metrics: Mapping[str, float] | None = None,
    experiment: str = "exante-training",
) -> str:
    """Log a parent run "train" and one nested run per unit; return the parent run id.

    Every metrics file is read first, so a bad one fails before anything is
    logged. A run an exception escapes from is marked FAILED, not left RUNNING.
    """
    parsed = _read_units(units)
    c, uri = client(root), tracking_uri(root)
    now = int(time.time() * 1000)
    with _store_errors(uri):
        experiment_id = _experiment_id(c, experiment, _artifact_location(root, uri))
        digest_tags = {f"{TAG_PREFIX}{name}": value for name, value in digests.items()}
        with _run(c, experiment_id, "train", digest_tags) as parent_id:
            flat = _flatten(params)
            c.log_batch(
                parent_id,
                params=[Param(k, v) for k, v in flat.items()],
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            )
            for name, (path, data) in parsed.items():
                tags = digest_tags | _unit_tags(parent_id, data)
                with _run(c, experiment_id, name, tags) as run_id:
                    c.log_batch(run_id, metrics=_unit_metrics(data, now))
                    c.log_artifact(run_id, str(path))
    return parent_id


@contextlib.contextmanager
def _run(c: mlflow.MlflowClient, experiment_id: str, name: str, tags: dict) -> Iterator[str]:
    run_id = c.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    try:
        yield run_id
    except BaseException as exc:
        status = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        with contextlib.suppress(*_STORE_ERRORS):  # the store may be what failed
            c.set_terminated(run_id, RunStatus.to_string(status))
        raise
    c.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def _experiment_id(c: mlflow.MlflowClient, name: str, artifact_location: str | None) -> str:
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise EvidenceError(
                f"experiment {name!r} is deleted in the tracking store: restore it "
                "(mlflow experiments restore) or log to another experiment"
            )
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:  # created concurrently by another process
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return c.get_experiment_by_name(name).experiment_id


def _artifact_location(root: Path, uri: str) -> str | None:
    """Local (sqlite) stores keep artifacts under the project, not under the CWD;
    a tracking server decides for itself."""
    if urlsplit(uri).scheme != "sqlite":
        return None
    return (root / ARTIFACTS_DIR).resolve().as_uri()


# -- units and params ---------------------------------------------------------------


def _read_units(units: Mapping[str, Path]) -> dict[str, tuple[Path, dict]]:
    parsed, problems = {}, []
    for name in sorted(units):
        path = Path(units[name])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            _unit_tags("", data)  # read every field once, before logging anything
            _unit_metrics(data, 0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{name}: {path}: {type(exc).__name__}: {exc}")
            continue
        parsed[name] = (path, data)
    if problems:
        raise MetricsFileError(
            "training metrics files are missing or malformed; re-run their train stages",
            problems=problems,
        )
    return parsed


def _unit_tags(parent_id: str, data: dict) -> dict[str, str]:
    tags = {MLFLOW_PARENT_RUN_ID: parent_id, f"{TAG_PREFIX}kind": str(data["kind"])}
    if data.get("shard") is not None:
        tags[f"{TAG_PREFIX}shard"] = str(data["shard"])
    if (data.get("dp") or {}).get("accountant"):
        tags[f"{TAG_PREFIX}dp.accountant"] = str(data["dp"]["accountant"])
    return tags


def _unit_metrics(data: dict, timestamp: int) -> list[Metric]:
    """Loss (and slice, for shards) per epoch, step = running epoch index; then scalars."""
    metrics = []
    for step, epoch in enumerate(data["epochs"]):
        metrics.append(Metric("loss", float(epoch["loss"]), timestamp, step))
        if "slice" in epoch:  # a base model has no slices
            metrics.append(Metric("slice", float(epoch["slice"]), timestamp, step))
    scalars = {k: data[k] for k in ("records", "wall_seconds", "tokens_per_second")}
    scalars |= {k: len(data[k]) for k in ("trained_slices", "reused_slices") if k in data}
    scalars |= {f"slice_{r}_seconds": v for r, v in data.get("slice_seconds", {}).items()}
    dp = data.get("dp") or {}
    scalars |= {f"dp_{k}": dp[k] for k in ("epsilon", "delta") if dp.get(k) is not None}
    return metrics + [Metric(k, float(v), timestamp, 0) for k, v in scalars.items()]


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become ``a.b`` keys; non-strings are JSON (``true``, ``[1, 2]``)."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{name}.")
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        flat[_fit_key(name)] = _fit_value(text)
    return flat


def _fit_key(key: str) -> str:
    """Over-long keys keep a readable prefix and a digest, so two never collide."""
    if len(key) <= MAX_ENTITY_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{key[: MAX_ENTITY_KEY_LENGTH - 13]}~{digest}"


def _fit_value(value: str) -> str:
    if len(value) <= MAX_PARAM_VAL_LENGTH:
        return value
    return value[: MAX_PARAM_VAL_LENGTH - 3] + "..."


# -- errors ---------------------------------------------------------------------


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except _STORE_ERRORS as exc:
        raise EvidenceError(_store_message(uri, exc)) from exc


def _store_message(uri: str, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if password := urlsplit(uri).password:  # MLflow's own messages repeat the URI
        first = first.replace(password, "***")
    return (
        f"cannot record evidence in the tracking store {_redact(uri)}: {first}\n"
        "Check MLFLOW_TRACKING_URI (unset it to use sqlite in the project root) "
        "and that the tracking server is running and reachable."
    )


def _check_sqlite_path(uri: str) -> None:
    """Fail at once where MLflow would retry an unopenable sqlite file for ~100 s."""
    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or not parts.path.startswith("//"):
        return  # in-memory or relative: nothing to check
    db = Path(parts.path[1:])
    problem = None
    if db.is_dir():
        problem = "it is a directory"
    elif db.exists() and not os.access(db, os.R_OK | os.W_OK):
        problem = "it is not readable and writable"
    elif not db.exists():
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"its folder cannot be created ({exc.strerror})"
        else:
            if not os.access(db.parent, os.W_OK):
                problem = "its folder is not writable"
    if problem:
        raise EvidenceError(_store_message(uri, OSError(f"sqlite database {db}: {problem}")))


def _redact(uri: str) -> str:
    """Drop a password from ``scheme://user:password@host`` before printing a URI."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def log_deletion(
    root: Path,
    *,
    request_ids: list[str],
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    experiment: str = "exante-deletion",
) -> str:
    """One run per deletion: requests (ids only), shards retrained, slices reused, cost.

    Ids and numbers only: the run outlives the data, so it holds no record text.
    """
    c, uri = client(root), tracking_uri(root)
    now = int(time.time() * 1000)
    run_tags = {f"{TAG_PREFIX}{k}": str(v) for k, v in tags.items()}
    run_tags[f"{TAG_PREFIX}request_ids"] = ",".join(request_ids)
    with _store_errors(uri):
        experiment_id = _experiment_id(c, experiment, _artifact_location(root, uri))
        with _run(c, experiment_id, "delete", run_tags) as run_id:
            c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    return run_id


def log_verification(
    root: Path,
    *,
    params: dict,
    results: dict,
    tags: Mapping[str, str],
    files: Mapping[str, Path],
    experiment: str = "exante-verification",
) -> str:
    """A parent run per verification and a child run per subject × attack; return the parent's id.

    Children carry the metrics, a verdict tag (the cell's outcome, by the rule of
    :func:`verify.verdicts.cell_outcome`: pass, fail, inconclusive, ineffective, n/a) and
    their per-example table (ids and numbers only); relearning curves are
    logged as metric histories with the step as the relearning budget k. The
    parent carries the params, the lineage digests, the summary and ``files``
    (plots, the results table, the signed report).
    """
    c, uri = client(root), tracking_uri(root)
    now = int(time.time() * 1000)
    parent_tags = {f"{TAG_PREFIX}{k}": str(v) for k, v in tags.items()}
    verdicts: dict[tuple[str, str], list[dict]] = {}
    for v in results["verdicts"]:
        verdicts.setdefault((v["subject"], v["attack"]), []).append(v)
    with _store_errors(uri):
        experiment_id = _experiment_id(c, experiment, _artifact_location(root, uri))
        with _run(c, experiment_id, "verify", parent_tags) as parent_id:
            c.log_batch(parent_id, params=[Param(k, v) for k, v in _flatten(params).items()])
            for name, summary in results["summary"].items():
                c.set_tag(parent_id, f"{TAG_PREFIX}verdict.{name}", summary["verdict"])
            for name, path in files.items():
                if Path(path).is_dir():
                    c.log_artifacts(parent_id, str(path), artifact_path=name)
                else:
                    c.log_artifact(parent_id, str(path), artifact_path=name)
            for subject, by_attack in results["results"].items():
                for attack, r in by_attack.items():
                    mine = verdicts.get((subject, attack), [])
                    tags_ = parent_tags | {
                        MLFLOW_PARENT_RUN_ID: parent_id,
                        f"{TAG_PREFIX}subject": subject, f"{TAG_PREFIX}attack": attack,
                        f"{TAG_PREFIX}verdict": cell_outcome(mine),
                    }  # fmt: skip
                    with _run(c, experiment_id, f"{subject}/{attack}", tags_) as run_id:
                        metrics = [Metric(_fit_key(k), float(v), now, 0)
                                   for k, v in r["metrics"].items()
                                   if isinstance(v, int | float) and v == v]  # fmt: skip
                        for point in r.get("curve", []):
                            metrics += [Metric(f"curve_{k}", float(point[k]), now, point["k"])
                                        for k in ("em", "exposure_bits")
                                        if point[k] is not None]  # fmt: skip
                        c.log_batch(run_id, metrics=metrics)
                        c.log_dict(run_id, {"examples": r.get("examples", {}), "verdicts": mine},
                                   "examples.json")  # fmt: skip
    return parent_id
