"""The gate: a pure evaluation of policies over sources and records, and a signed decision.

``evaluate`` explains every refusal, per source and per record, and collects
all of them (it never stops at the first). ``decide`` signs the result: an
in-toto Statement bound to the manifest it judged, with the Merkle root of the
allowed set. Training calls ``verify_training_input`` before reading a single
record (see :mod:`lineage.admission`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from lineage._canonical import atomic_write, sha256_hex
from lineage.layout import LAYOUT
from lineage.manifest import leaves_bytes, merkle_root
from lineage.policy import GatePolicy
from lineage.records import Record
from lineage.signing import Signer, make_statement, sign_envelope, write_envelope
from lineage.sources import PretrainedModel, Registry, Source

PREDICATE_TYPE = "https://exante.dev/attestations/gate-decision/v1"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GatePaths:
    decision: Path = LAYOUT.gate_decision
    allowed: Path = LAYOUT.gate_allowed
    summary: Path = LAYOUT.gate_summary


@dataclass(frozen=True)
class Denials:
    """Records and subjects that may never be trained on (deny lists and the deletion ledger)."""

    records: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """What the gate allowed and why it refused the rest."""

    purpose: str
    as_of: str
    source_reasons: Mapping[str, tuple[str, ...]]
    record_reasons: Mapping[str, tuple[str, ...]]
    allowed: tuple[tuple[str, str], ...] = field(repr=False)
    base_sources: tuple[str, ...] = ()
    models: Mapping[str, dict] = field(default_factory=dict)  # registered pretrained models
    dp_required: Mapping[str, float] = field(default_factory=dict)  # source -> max epsilon

    def allows(self, record_id: str) -> bool:
        return record_id not in self.record_reasons


def source_violations(
    source: Source,
    policy: GatePolicy,
    *,
    purpose: str,
    as_of: date,
    retention_start: date | None = None,
) -> list[str]:
    """Every reason ``policy`` refuses ``source`` for ``purpose`` (empty: allowed)."""
    name = policy.name
    reasons = _terms_violations(source, policy, purpose, forbids="terms of service forbid ML "
                                "training")  # fmt: skip
    if (
        source.contains_personal_data
        and source.consent_basis not in policy.personal_data.allowed_bases
    ):
        bases = ", ".join(policy.personal_data.allowed_bases)
        reasons.append(
            f"[{name}] personal data on basis '{source.consent_basis}'; policy requires {bases}"
        )
    expires = source.retention_expires(retention_start)
    if policy.enforce_retention and expires is not None and expires < as_of:
        reasons.append(f"[{name}] retention period {source.retention} expired on {expires}")
    return reasons


def _terms_violations(
    item: Source | PretrainedModel, policy: GatePolicy, purpose: str, *, forbids: str
) -> list[str]:
    """The license, training terms and TDM reservation of a source or a model."""
    name, reasons = policy.name, []
    if item.license not in policy.licenses.get(purpose, ()):
        reasons.append(f"[{name}] license {item.license} is not allowed for {purpose} use")
    if policy.honour_training_prohibitions and not item.terms.permits_ml_training:
        reasons.append(f"[{name}] {forbids}: {item.terms.summary}")
    if policy.honour_tdm_opt_out and item.tdm_opt_out:
        evidence = f" ({item.tdm_opt_out_evidence})" if item.tdm_opt_out_evidence else ""
        reasons.append(f"[{name}] rights holder reserved text-and-data mining{evidence}")
    return reasons


def model_violations(
    model: PretrainedModel, policy: GatePolicy, *, purpose: str, found: str | None
) -> list[str]:
    """Every reason ``policy`` refuses a pretrained model; ``found``: its bytes' digest now."""
    reasons = _terms_violations(model, policy, purpose, forbids="its terms forbid training on it")
    if found is None:
        reasons.append(f"{model.location} does not exist")
    elif found != model.sha256:
        reasons.append(f"{model.location} is not the registered bytes: sha256 {found}, "
                       f"registered {model.sha256}")  # fmt: skip
    return reasons


def judge_models(
    registry: Registry, policies: Sequence[GatePolicy], *, purpose: str,
    found: Mapping[str, str | None],
) -> dict[str, dict]:  # fmt: skip
    """Each registered model's verdict, as the decision signs it (``found``: digests now)."""
    out = {}
    for mid, m in sorted(registry.models.items()):
        reasons = list(dict.fromkeys(
            r for p in policies
            for r in model_violations(m, p, purpose=purpose, found=found.get(mid))
        ))  # fmt: skip
        out[mid] = {"allowed": not reasons, "reasons": reasons, "location": m.location,
                    "sha256": m.sha256, "license": m.license}  # fmt: skip
    return out


def _under_own_terms(source: Source, terms: Mapping[str, object]) -> Source:
    """``source`` as it applies to one record: the record's own terms replace the source's.

    A record that sets its own TDM opt-out is not covered by the source's evidence.
    """
    update = {k: terms[k] for k in ("license", "consent_basis", "tdm_opt_out") if k in terms}
    if "tdm_opt_out" in terms:
        update["tdm_opt_out_evidence"] = None
    return source.model_copy(update=update)


@dataclass
class _Judge:
    """Source verdicts, computed once; a record with its own terms is judged on those."""

    registry: Registry
    policies: Sequence[GatePolicy]
    purpose: str
    as_of: date
    cache: dict = field(default_factory=dict)

    def source(self, source: Source, terms: Mapping[str, object] | None = None) -> tuple[str, ...]:
        start = (terms or {}).get("retention_start")
        start = date.fromisoformat(start) if start else None
        when = {"purpose": self.purpose, "as_of": self.as_of, "retention_start": start}
        return tuple(r for p in self.policies for r in source_violations(source, p, **when))

    def own_terms(self, record: Record) -> tuple[str, ...]:
        """The refusals of one record under its own terms, each naming the record.

        Unless the registry lets record terms ``override`` the source's, the
        source's own refusals stand too: a raw column can narrow, never widen.
        """
        key = (record.source_id, record.terms)
        if key not in self.cache:
            terms = dict(record.terms)
            source = self.registry.sources[record.source_id]
            own = self.source(_under_own_terms(source, terms), terms)
            override = source.fields is not None and source.fields.record_terms == "override"
            self.cache[key] = own if override else (*self.source(source), *own)
        return tuple(f"record {record.record_id} (own terms): {r}" for r in self.cache[key])


def evaluate(
    registry: Registry,
    records: Iterable[Record],
    policies: Sequence[GatePolicy],
    *,
    purpose: str,
    as_of: date,
    denials: Denials = Denials(),
    model_digests: Mapping[str, str | None] | None = None,
) -> Decision:
    """Judge every source, then every record (on its own terms where it has them); pure, no I/O.

    ``model_digests``: the digest of each registered pretrained model's bytes as
    found now (None: missing), read by the caller; a model is judged like a source.
    """
    judge = _Judge(registry, policies, purpose, as_of)
    src_reasons = {sid: judge.source(s) for sid, s in sorted(registry.sources.items())}
    deny_records = denials.records | {r for p in policies for r in p.deny.records}
    deny_subjects = denials.subjects | {s for p in policies for s in p.deny.subjects}
    rec_reasons, allowed, with_terms, allowing = {}, [], set(), set()
    for r in records:
        own = judge.own_terms(r) if r.terms and r.source_id in src_reasons else None
        reasons = _record_violations(r, src_reasons, own, deny_records, deny_subjects)
        with_terms.update([r.source_id] if r.terms else [])
        if reasons:
            rec_reasons[r.record_id] = tuple(reasons)
        else:
            allowed.append((r.record_id, r.sha256))
            allowing.add(r.source_id)
    allowed.sort(key=lambda x: x[0].encode("utf-8"))
    base = base_sources(registry, src_reasons, policies, exclude=with_terms)
    dp = dp_requirements(registry, src_reasons, policies, also=allowing)
    models = judge_models(registry, policies, purpose=purpose, found=model_digests or {})
    return Decision(purpose, as_of.isoformat(), src_reasons, rec_reasons, tuple(allowed), base,
                    dp_required=dp, models=models)  # fmt: skip


def dp_requirements(
    registry: Registry, src_reasons, policies: Sequence[GatePolicy], *, also=frozenset()
) -> dict[str, float]:
    """Sources with personal data that are allowed (or ``also`` have allowed records, on their
    own terms) → the strictest ε any policy requires for them."""
    limits = [p.personal_data.require_dp_epsilon for p in policies]
    limits = [x for x in limits if x is not None]
    if not limits:
        return {}
    return {
        sid: min(limits)
        for sid, s in sorted(registry.sources.items())
        if (not src_reasons[sid] or sid in also) and s.contains_personal_data
    }


def base_sources(
    registry: Registry, src_reasons, policies: Sequence[GatePolicy], *, exclude=frozenset()
) -> tuple[str, ...]:
    """Allowed sources with no personal data whose license every policy admits to the base.

    A source in ``exclude`` (one whose records carry their own terms, so their
    licenses may differ from the source's) is never base: its records go to
    shards, where they can be deleted.
    """
    return tuple(
        sid
        for sid, s in sorted(registry.sources.items())
        if not src_reasons[sid]
        and sid not in exclude
        and not s.contains_personal_data
        and policies
        and all(s.license in p.base_corpus.licenses for p in policies)
    )


def _record_violations(r: Record, src_reasons, own, deny_records, deny_subjects) -> list[str]:
    reasons = []
    if r.source_id not in src_reasons:
        reasons.append(f"source {r.source_id} is not in the registry")
    elif own is not None:
        reasons.extend(own)
    elif src_reasons[r.source_id]:
        reasons.append(f"source {r.source_id} is refused")
    if r.record_id in deny_records:
        reasons.append("record is on the deny list (deleted)")
    denied = sorted(set(r.subject_ids) & deny_subjects)
    if denied:
        reasons.append(f"data subject(s) {', '.join(denied)} on the deny list (deleted)")
    return reasons


def decision_predicate(
    decision: Decision, *, manifest_version: int, policies: Mapping[str, str], records
) -> dict:
    root, size = merkle_root(decision.allowed)
    per_source: dict[str, dict] = {}
    for r in records:
        entry = per_source.setdefault(r.source_id, {"records": 0, "allowed": 0})
        entry["records"] += 1
        entry["allowed"] += decision.allows(r.record_id)
    return {
        "schema_version": SCHEMA_VERSION,
        "purpose": decision.purpose,
        "as_of": decision.as_of,
        "manifest_version": manifest_version,
        "policies": dict(sorted(policies.items())),
        "allowed": {"merkle_root": root, "count": size},
        "base_sources": list(decision.base_sources),
        "dp_required": dict(sorted(decision.dp_required.items())),
        "sources": {
            sid: {
                "allowed": not reasons,
                "reasons": list(reasons),
                **per_source.get(sid, {"records": 0, "allowed": 0}),
            }
            for sid, reasons in decision.source_reasons.items()
        },
        "refused_records": [
            {"record_id": rid, "reasons": list(reasons)}
            for rid, reasons in sorted(decision.record_reasons.items())
        ],
        # only where the registry has models, so a decision without any is as it was
        **({"models": dict(decision.models)} if decision.models else {}),
    }


def write_decision(
    decision: Decision,
    *,
    root: Path,
    signer: Signer,
    manifest_payload_sha256: str,
    manifest_version: int,
    policies: Mapping[str, str],
    records: Sequence[Record],
    paths: GatePaths = GatePaths(),
) -> dict:
    """Sign the decision, bound to the manifest payload it judged; return its predicate."""
    allowed_data = leaves_bytes(decision.allowed)
    predicate = decision_predicate(
        decision, manifest_version=manifest_version, policies=policies, records=records
    )
    subjects = {
        f"manifest:v{manifest_version}": manifest_payload_sha256,
        paths.allowed.as_posix(): sha256_hex(allowed_data),
    }
    envelope = sign_envelope(make_statement(subjects, PREDICATE_TYPE, predicate), signer)
    root = Path(root)
    atomic_write(root / paths.allowed, allowed_data)
    summary = {k: predicate[k] for k in ("purpose", "as_of", "allowed", "sources")}
    atomic_write(root / paths.summary, json.dumps(summary, indent=2, sort_keys=True).encode())
    write_envelope(root / paths.decision, envelope)
    return predicate
