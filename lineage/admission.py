"""Admission: the check training runs before it reads a single record.

Given the records it is about to use, re-hash each one and prove that each is
exactly a record of the current signed manifest, that the manifest is not a
replay of an older one, and that a signed gate decision for *this* manifest
allowed it. Any failure raises its own :class:`~lineage.errors.VerificationError`
subclass, naming the records concerned; nothing is trained.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lineage._canonical import atomic_write, sha256_hex
from lineage.errors import (
    ForgedDecisionError,
    ManifestRollbackError,
    MissingRecordError,
    RecordHashMismatchError,
    RecordTamperedError,
    RefusedRecordError,
    UnsignedRecordError,
)
from lineage.gate import PREDICATE_TYPE as DECISION_TYPE
from lineage.gate import GatePaths
from lineage.layout import LAYOUT
from lineage.manifest import (
    ManifestPaths,
    SignedManifest,
    history_versions,
    load_leaves,
    load_manifest,
    merkle_root,
    parse_leaves,
)
from lineage.records import Record
from lineage.signing import (
    load_trusted_keys,
    parse_statement,
    read_envelope,
    subjects_of,
    verify_envelope,
)

STATE_PATH = LAYOUT.verifier_state


@dataclass(frozen=True)
class Admitted:
    """The proof that a set of records may be trained on."""

    manifest_version: int
    manifest_root: str
    manifest_payload_sha256: str
    decision_payload_sha256: str
    allowed_root: str
    record_ids: tuple[str, ...]
    base_sources: tuple[str, ...] = ()
    dp_required: dict[str, float] = field(default_factory=dict)  # source -> max epsilon
    holdout: dict[str, str | float] = field(default_factory=dict)  # source -> "all" or fraction
    models: dict[str, dict] = field(default_factory=dict)  # registered pretrained models' verdicts

    def max_epsilon(self, source_ids) -> float | None:
        """The DP budget a model trained on these sources must meet (None: DP not required)."""
        limits = [self.dp_required[s] for s in set(source_ids) if s in self.dp_required]
        return min(limits) if limits else None


def _high_water(root: Path, state: Path) -> int:
    try:
        return int(json.loads((root / state).read_text())["manifest_version"])
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return 0


def check_rollback(root: Path, manifest: SignedManifest, *, state: Path, history: Path) -> None:
    """Refuse a manifest older than the newest kept or ever verified here (a replay)."""
    newest = max([_high_water(root, state), *history_versions(root / history)], default=0)
    if manifest.version < newest:
        raise ManifestRollbackError(
            f"manifest v{manifest.version} is older than v{newest}, the newest seen; "
            "an older manifest was put back. Rebuild it with `exante manifest`."
        )


def _record_high_water(root: Path, state: Path, version: int) -> None:
    if version > _high_water(root, state):
        atomic_write(root / state, json.dumps({"manifest_version": version}).encode())


def _load_decision(root: Path, manifest: SignedManifest, trusted, paths: GatePaths):
    env = read_envelope(root / paths.decision, what="gate decision")
    payload = verify_envelope(env, trusted, what="gate decision")
    statement = parse_statement(payload, DECISION_TYPE, what="gate decision")
    subjects = subjects_of(statement)
    if subjects.get(f"manifest:v{manifest.version}") != manifest.payload_sha256:
        raise ForgedDecisionError(
            f"the gate decision does not judge manifest v{manifest.version}; run `exante gate`"
        )
    data = (root / paths.allowed).read_bytes()
    if subjects.get(paths.allowed.as_posix()) != sha256_hex(data):
        raise ForgedDecisionError(f"{paths.allowed} differs from the signed decision")
    allowed = parse_leaves(data, what=str(paths.allowed))
    if merkle_root(allowed)[0] != statement["predicate"].get("allowed", {}).get("merkle_root"):
        raise ForgedDecisionError("the allowed set does not hash to the decision's signed root")
    return statement, sha256_hex(payload), dict(allowed)


def _check_records(records, signed: dict[str, str], allowed: dict[str, str] | None) -> None:
    checks = [
        (
            RecordHashMismatchError,
            "text no longer matches its digest",
            lambda r: not r.digest_matches(),
        ),
        (
            UnsignedRecordError,
            "not in the signed manifest (added after signing)",
            lambda r: r.record_id not in signed,
        ),
        (
            RecordTamperedError,
            "digest differs from the signed manifest",
            lambda r: signed[r.record_id] != r.sha256,
        ),
    ]
    if allowed is not None:
        checks.append(
            (RefusedRecordError, "refused by the gate", lambda r: r.record_id not in allowed)
        )  # fmt: skip
    for error, what, failed in checks:
        bad = [r.record_id for r in records if failed(r)]
        if bad:
            raise error(f"{len(bad)} record(s): {what}:", problems=bad[:20])


def verify_training_input(
    records: Iterable[Record],
    *,
    root: Path = Path("."),
    complete: bool = False,
    skip_refused: bool = False,
    trusted_keys: Path = LAYOUT.trusted,
    state: Path = STATE_PATH,
    manifest_paths: ManifestPaths = ManifestPaths(),
    gate_paths: GatePaths = GatePaths(),
) -> Admitted:
    """Admit ``records`` for training or raise the error that says why not.

    With ``complete=True`` the records must also be *all* of the manifest's
    records (a removed record is then detected, not just an added one). With
    ``skip_refused=True`` refused records are left out of the admitted set
    instead of stopping everything (the full record set holds refused sources).
    """
    root, records = Path(root), list(records)
    trusted = load_trusted_keys(root / trusted_keys)
    manifest = load_manifest(root, trusted, manifest_paths)
    check_rollback(root, manifest, state=state, history=manifest_paths.history)
    signed = dict(load_leaves(root, manifest, manifest_paths))
    decision, decision_sha, allowed = _load_decision(root, manifest, trusted, gate_paths)
    if not set(allowed.items()) <= set(signed.items()):
        raise ForgedDecisionError("the decision allows records that the manifest does not sign")
    _check_records(records, signed, None if skip_refused else allowed)
    if complete:
        missing = sorted(set(signed) - {r.record_id for r in records})
        if missing:
            raise MissingRecordError(
                f"{len(missing)} signed record(s) are missing (removed after signing):",
                problems=missing[:20],
            )
    _record_high_water(root, state, manifest.version)
    return Admitted(
        manifest_version=manifest.version,
        manifest_root=manifest.root,
        manifest_payload_sha256=manifest.payload_sha256,
        decision_payload_sha256=decision_sha,
        allowed_root=decision["predicate"]["allowed"]["merkle_root"],
        record_ids=tuple(sorted(r.record_id for r in records if r.record_id in allowed)),
        base_sources=tuple(decision["predicate"].get("base_sources", ())),
        dp_required=dict(decision["predicate"].get("dp_required", {})),
        holdout={
            sid: t["holdout"]
            for sid, t in manifest.predicate.get("sources", {}).items()
            if t.get("holdout") is not None
        },
        models=dict(decision["predicate"].get("models", {})),
    )


def manifest_payload(path: Path) -> bytes:
    """The raw signed payload of a manifest envelope file (no verification)."""
    return base64.b64decode(read_envelope(path, what="manifest")["payload"])
