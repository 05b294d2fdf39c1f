"""The lineage stages of the pipeline, one function each, called by the CLI and ``dvc repro``.

Each takes the project root and explicit settings, reads its inputs, checks
them completely, and only then writes (atomically). A failure leaves the
previous outputs in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from lineage._canonical import file_sha256
from lineage.admission import Admitted, verify_training_input
from lineage.errors import ArtifactDigestError, MalformedRecordError
from lineage.gate import Decision, Denials, evaluate, write_decision
from lineage.ingest import ingest
from lineage.layout import LAYOUT
from lineage.manifest import build_manifest, load_leaves, load_manifest
from lineage.merkle import InclusionProof, LeafIndex, NonInclusionProof
from lineage.policy import load_policies
from lineage.records import Record, read_all, records_files
from lineage.signing import Signer, load_trusted_keys, read_envelope
from lineage.sources import Registry, load_registry, model_digest, source_terms

REGISTRY = LAYOUT.registry
POLICIES = LAYOUT.policies
TRUSTED = LAYOUT.trusted
RECORDS = LAYOUT.records
VALIDATION_REPORT = LAYOUT.validation_report


def registry(root: Path) -> Registry:
    return load_registry(Path(root) / REGISTRY)


def run_ingest(root: Path, *, source: str | None = None) -> dict[str, int]:
    from lineage.erasure import denials

    d = denials(root)
    return ingest(registry(root), Path(root), Path(root) / RECORDS, only=source, denials=d)


def run_validate(root: Path):
    from lineage.validation import run_validation

    return run_validation(Path(root) / RECORDS, registry(root), Path(root) / VALIDATION_REPORT)


def run_manifest(root: Path, signer: Signer) -> dict:
    trusted = load_trusted_keys(Path(root) / TRUSTED)
    return build_manifest(registry(root), Path(root), signer, trusted)


def _ledger_ids(line: bytes) -> tuple[list[str], list[str]] | None:
    """``(record_ids, subject_ids)`` of one ledger line, or None if it is not an entry.

    A bare string where a list belongs would deny its characters, not the id,
    so anything but lists of strings is refused.
    """
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # bad UTF-8/JSON, a huge int, deep nesting
        return None
    if not isinstance(entry, dict):
        return None
    ids = entry.get("record_ids", []), entry.get("subject_ids", [])
    if all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in ids):
        return ids
    return None


def ledger_denials(path: Path) -> Denials:
    """Records and subjects named by the deletion ledger (an absent ledger denies nothing)."""
    records, subjects = set(), set()
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return Denials()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        ids = _ledger_ids(line)
        if ids is None:
            raise MalformedRecordError(
                f"{path}:{n}: not a ledger entry (an object with lists of record_ids, subject_ids)"
            )
        records.update(ids[0])
        subjects.update(ids[1])
    return Denials(frozenset(records), frozenset(subjects))


def _verify_ledger_if_signed(root: Path, path: Path, trusted) -> None:
    """exante's own ledger must verify (chain and signed head) before the gate trusts it.

    An edited or truncated ledger would otherwise let a deleted record back in.
    """
    from lineage.ledger import LEDGER, verify_ledger

    if path.resolve() == (root / LEDGER).resolve():
        verify_ledger(root, trusted)


def run_gate(root: Path, signer: Signer, *, purpose: str, as_of: date) -> tuple[Decision, dict]:
    """Evaluate every policy over the signed records and sign the decision."""
    root = Path(root)
    trusted = load_trusted_keys(root / TRUSTED)
    manifest = load_manifest(root, trusted)
    records = read_all(root / RECORDS)
    verify_leaves_match(root, manifest, records)
    signed = signed_registry(root, manifest)
    policies = load_policies(root / POLICIES, registry=signed)
    denials = Denials()
    for policy, _ in policies.values():
        if policy.deny.ledger:
            _verify_ledger_if_signed(root, root / policy.deny.ledger, trusted)
            more = ledger_denials(root / policy.deny.ledger)
            denials = Denials(denials.records | more.records, denials.subjects | more.subjects)
    found = {mid: model_digest(m.path(root)) if m.path(root).exists() else None
             for mid, m in signed.models.items()}  # fmt: skip
    decision = evaluate(
        signed,
        records,
        [p for p, _ in policies.values()],
        purpose=purpose,
        as_of=as_of,
        denials=denials,
        model_digests=found,
    )
    predicate = write_decision(
        decision,
        root=root,
        signer=signer,
        manifest_payload_sha256=manifest.payload_sha256,
        manifest_version=manifest.version,
        policies={name: digest for name, (_, digest) in policies.items()},
        records=records,
    )
    return decision, predicate


def verify_leaves_match(root: Path, manifest, records: list[Record]) -> None:
    """The gate judges only records that are exactly those the manifest signed.

    Texts are checked record by record (naming the records), then the files
    whole: the gate also reads each record's source and subjects, which the
    leaves do not cover, so an edited ``source_id`` must not move a refused
    record into an allowed source.
    """
    from lineage.admission import _check_records

    signed = dict(load_leaves(root, manifest))
    _check_records(records, signed, None)
    prefix = RECORDS.as_posix() + "/"
    signed_files = {n: d for n, d in manifest.subjects.items() if n.startswith(prefix)}
    present = {
        p.relative_to(root).as_posix(): file_sha256(p) for p in records_files(root / RECORDS)
    }
    if changed := _differing(signed_files, present):
        raise ArtifactDigestError(
            f"records files differ from those manifest v{manifest.version} signed; "
            "re-run `exante ingest` and `exante manifest`:",
            problems=changed,
        )


def _differing(signed: dict, present: dict) -> list[str]:
    """Keys whose values differ, or that only one side has."""
    return sorted(k for k in signed.keys() | present.keys() if signed.get(k) != present.get(k))


def signed_registry(root: Path, manifest) -> Registry:
    """``sources.yaml``, provided it still says what the manifest signed about each source."""
    current = registry(root)
    terms = {sid: source_terms(s) for sid, s in current.sources.items()}
    signed = {
        sid: {k: v for k, v in s.items() if k != "record_count"}
        for sid, s in manifest.predicate["sources"].items()
    }
    if changed := _differing(signed, terms):
        raise ArtifactDigestError(
            f"{REGISTRY} differs from the sources manifest v{manifest.version} signed; "
            "re-run `exante manifest` before the gate:",
            problems=changed,
        )
    return current


def run_check(root: Path) -> Admitted:
    """Admission over every record: what training will run, as a standalone check."""
    records = read_all(Path(root) / RECORDS)
    return verify_training_input(records, root=Path(root), complete=True, skip_refused=True)


@dataclass(frozen=True)
class Trace:
    record: Record | None
    source: dict | None
    manifest_version: int
    manifest_root: str
    inclusion: InclusionProof | None
    non_inclusion: NonInclusionProof | None
    decision: dict | None


def trace(root: Path, record_id: str) -> Trace:
    """A record's source, the gate's decision on it, and a verified proof against the manifest."""
    root = Path(root)
    trusted = load_trusted_keys(root / TRUSTED)
    manifest = load_manifest(root, trusted)
    index = LeafIndex(load_leaves(root, manifest))
    root_bytes = bytes.fromhex(manifest.root)
    record = next((r for r in read_all(root / RECORDS) if r.record_id == record_id), None)
    try:
        inclusion, non_inclusion = index.inclusion(record_id), None
        inclusion.verify(root_bytes)
    except KeyError:
        inclusion, non_inclusion = None, index.non_inclusion(record_id)
        non_inclusion.verify(root_bytes)
    source = manifest.predicate["sources"].get(record.source_id) if record else None
    return Trace(
        record, source, manifest.version, manifest.root, inclusion, non_inclusion,
        _decision_for(root, record_id, trusted) if inclusion else None,
    )  # fmt: skip


def _decision_for(root: Path, record_id: str, trusted) -> dict | None:
    from lineage.gate import PREDICATE_TYPE
    from lineage.signing import parse_statement, verify_envelope

    path = root / LAYOUT.gate_decision
    if not path.exists():
        return None
    payload = verify_envelope(read_envelope(path, what="gate decision"), trusted)
    predicate = parse_statement(payload, PREDICATE_TYPE)["predicate"]
    source_reasons = {sid: s["reasons"] for sid, s in predicate["sources"].items()}
    for refusal in predicate["refused_records"]:
        if refusal["record_id"] == record_id:
            source = record_id.split("/", 1)[0]
            reasons = refusal["reasons"] + source_reasons.get(source, [])
            return {"allowed": False, "reasons": reasons, "purpose": predicate["purpose"]}
    return {"allowed": True, "reasons": [], "purpose": predicate["purpose"]}
