"""Where a project keeps everything exante reads or writes, relative to its root.

One object answers every path question, so no module spells a project path of its
own and a second layout (another data directory, another model directory) cannot
miss one: the pipeline renderer, the stages, the deletion and the audit bundle all
ask this object. The top-level names (``data``, ``models``, ``policies``, the params,
pipeline and MLflow files, local state) are fields; every other path is derived from
one of them, so moving a directory moves everything under it. Paths are relative
``Path``s; :meth:`Layout.name` gives the POSIX spelling that manifests, attestations
and audit bundles record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


class _Under:
    """A path below another of the object's paths: ``_Under("data", "records")``."""

    def __init__(self, parent: str, *parts: str) -> None:
        self.parent, self.parts = parent, parts

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, layout, owner=None) -> Path:
        if layout is None:
            return self  # type: ignore[return-value]  # the class attribute itself
        for name, path in reversed(getattr(layout, "moved", ())):
            if name == self.name:
                return Path(path)
        return Path(getattr(layout, self.parent)).joinpath(*self.parts)


def shard_name(shard: int) -> str:
    """A shard's file and directory name: ``sNN``."""
    return f"s{shard:02d}"


@dataclass(frozen=True)
class VerificationFiles:
    """The files one verification writes into its directory, wherever that lies."""

    directory: Path

    report = _Under("directory", "report.dsse.json")  # signs the files below and the models
    results = _Under("directory", "results.json")
    summary = _Under("directory", "summary.json")
    evidence = _Under("directory", "evidence.json")  # the MLflow tracking URI and run ids
    plots = _Under("directory", "plots")


@dataclass(frozen=True)
class Layout:
    """Every path of one project, relative to its root; :data:`LAYOUT` is exante's own."""

    data: Path = Path("data")
    models: Path = Path("models")
    policies: Path = Path("policies")
    params: Path = Path("params.yaml")
    dvc_file: Path = Path("dvc.yaml")
    mlflow_db: Path = Path("mlruns.db")  # MLflow's store
    mlflow_artifacts: Path = Path("mlartifacts")
    local: Path = Path(".exante")  # keys, locks, logs, caches: never tracked, never bundled
    dvc_remote: Path = Path(".dvc-remote")  # the remote `exante init` sets up
    moved: tuple[tuple[str, Path], ...] = ()  # derived paths set apart (see :meth:`moving`)

    def moving(self, **paths: Path) -> Layout:
        """This layout with some derived paths elsewhere (a bench's scratch shard directory);
        what is derived from them follows."""
        unknown = sorted(n for n in paths if not isinstance(vars(Layout).get(n), _Under))
        if unknown:
            raise TypeError(f"not a derived path of the layout: {', '.join(unknown)}")
        return replace(self, moved=(*self.moved, *((n, Path(p)) for n, p in paths.items())))

    @staticmethod
    def name(path: Path) -> str:
        """A project path as recorded in signed files and bundles (POSIX, relative)."""
        return Path(path).as_posix()

    @property
    def dvc_lock(self) -> Path:
        return self.dvc_file.with_suffix(".lock")

    # configuration
    registry = _Under("data", "sources.yaml")
    trusted = _Under("policies", "trusted_keys")  # public keys and their validity metadata
    default_policy = _Under("policies", "default.yaml")
    verification_policy = _Under("policies", "verification.yaml")

    # sources, records, manifests, gate
    raw = _Under("data", "raw")  # sources' own files (the demo's generated ones, a user's)
    records = _Under("data", "records")
    validation_report = _Under("data", "reports", "validation.json")
    manifest = _Under("data", "manifest.dsse.json")
    manifest_leaves = _Under("data", "manifest.leaves")
    manifest_history = _Under("data", "manifests")
    gate = _Under("data", "gate")
    gate_decision = _Under("gate", "decision.dsse.json")
    gate_allowed = _Under("gate", "allowed.leaves")
    gate_summary = _Under("gate", "summary.json")

    def records_file(self, source_id: str) -> Path:
        return self.records / f"{source_id}.jsonl"

    # deletion: the ledger, the deny set derived from it, receipts, acknowledgements
    ledger = _Under("data", "ledger.jsonl")
    ledger_head = _Under("data", "ledger.head.dsse.json")
    ledger_denied = _Under("data", "ledger.denied.json")  # a dep of the corpus
    receipts = _Under("data", "receipts")
    acks = _Under("data", "acks")
    request_verifications = _Under("receipts", "verification")  # delete --verify, per request

    # training
    shards = _Under("data", "shards")
    partition = _Under("shards", "partition.dsse.json")
    base = _Under("models", "base")
    shard_models = _Under("models", "shards")
    ensemble = _Under("models", "ensemble")
    signature = _Under("models", "ensemble.sig")
    attestation = _Under("models", "attestation.dsse.json")
    report = _Under("models", "report.json")
    evidence = _Under("models", "evidence.json")
    knowledge = _Under("models", "knowledge.json")  # a bundle member only, never on disk
    metrics = _Under("models", "metrics")  # timings: DVC metrics, never another stage's dep

    def base_file(self) -> Path:
        return self.shards / "base.jsonl"

    def holdout_file(self) -> Path:
        """The held-out records (registry ``holdout``): never trained, the non-members."""
        return self.shards / "holdout.jsonl"

    def shard_file(self, shard: int) -> Path:
        return self.shards / f"{shard_name(shard)}.jsonl"

    def shard_dir(self, shard: int) -> Path:
        return self.shard_models / shard_name(shard)

    def unit_metrics(self, unit: str) -> Path:
        """A training unit's full metrics (``base``, ``s00``…), timings included."""
        return self.metrics / f"{unit}.json"

    # verification
    verify_registration = _Under("models", "verify-registration.dsse.json")
    verify_models = _Under("models", "verify")  # the baselines: retrain, exact, approx/<m>, …
    verification = _Under("data", "verification")
    verification_subjects = _Under("data", "verification-subjects")  # one directory per name

    @property
    def verification_files(self) -> VerificationFiles:
        """What ``exante verify run`` writes (a deletion's ``--verify``: under its receipts)."""
        return VerificationFiles(self.verification)

    def verify_scratch(self, name: str) -> Path:
        """A deletion request's verification workspace (purged if a crash left it)."""
        return self.models / f"verify-{name}.tmp"

    # audit
    audit = _Under("data", "audit")
    audit_bundle = _Under("audit", "bundle.tar.gz")
    audit_html = _Under("audit", "report.html")
    audit_exports = _Under("audit", "exports")

    # local state: never tracked
    signing_key = _Under("local", "keys", "signing.key.pem")
    dp_secret = _Under("local", "keys", "dp.secret")
    ledger_lock = _Under("local", "locks", "ledger.lock")
    verifier_state = _Under("local", "state", "verifier.json")  # highest manifest version seen
    logs = _Under("local", "logs")
    datasets_cache = _Under("local", "cache", "datasets")  # inside the project: purged with it
    verify_parts = _Under("local", "cache", "verify-parts")  # measured parts: ids, numbers
    verify_rows = _Under("local", "cache", "verify-rows")  # components' rows: pruned every run


LAYOUT = Layout()
