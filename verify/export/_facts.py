"""The facts every export states, computed from signed artifacts only.

One function, :func:`compute`, turns the signed manifest (its embedded source
terms and its leaves), the signed gate decision, the training attestation and
the verification report into one JSON-able dict. The exporters render it; the
audit check computes it again from a bundle and renders again, so an export
says nothing that these artifacts do not.

Each envelope is verified with the trusted keys before it is read. Byte sizes
need the record texts, which a bundle never holds: they are measured at export
time from ``data/records`` (each file checked against the digest the manifest
signed) and, in a bundle, taken from the signed EU summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from lineage._canonical import sha256_hex
from lineage.errors import ArtifactDigestError, BadInputError, EnvelopeFormatError
from lineage.gate import PREDICATE_TYPE as DECISION_TYPE
from lineage.layout import LAYOUT
from lineage.manifest import PREDICATE_TYPE as MANIFEST_TYPE
from lineage.manifest import merkle_root, parse_leaves
from lineage.records import Record
from lineage.signing import parse_statement, subjects_of, verify_envelope

MANIFEST = LAYOUT.name(LAYOUT.manifest)
LEAVES = LAYOUT.name(LAYOUT.manifest_leaves)
DECISION = LAYOUT.name(LAYOUT.gate_decision)
ATTESTATION = LAYOUT.name(LAYOUT.attestation)
REPORT = LAYOUT.name(LAYOUT.verification_files.report)
SUMMARY = LAYOUT.name(LAYOUT.verification_files.summary)
PARTITION = LAYOUT.name(LAYOUT.partition)
PARTITION_TYPE = "https://exante.dev/attestations/partition/v1"
INPUTS = (MANIFEST, LEAVES, DECISION, PARTITION, ATTESTATION, REPORT, SUMMARY)
ATTESTATION_TYPE = "https://exante.dev/attestations/training/v1"
# 2: records allowed, held out and trained apart; EU summary record_sizes in bytes_allowed
SCHEMA_VERSION = 2
REPORT_TYPE = "https://exante.dev/attestations/verification/v1"
RELEASED = "original"  # the verification report's name for the released model
RELEASED_DIR = (
    LAYOUT.name(LAYOUT.ensemble) + "/"
)  # the released model's files among the attested ones

# The AI Office template's section 2 categories, in its order.
KINDS = {
    "public": "Publicly available datasets",
    "private": "Private non-publicly available datasets (licensed or obtained from third parties)",
    "crawled": "Data crawled and scraped from online sources",
    "user": "User data",
    "synthetic": "Synthetic data",
    "other": "Other sources of data",
}
# Gate reason phrases (lineage/gate.py) → refusal category.
REASONS = (
    ("reserved text-and-data mining", "tdm_opt_out"),
    ("terms of service forbid", "terms_of_service"),
    ("is not allowed for", "license"),
    ("personal data on basis", "personal_data_basis"),
    ("retention period", "retention_expired"),
    ("deny list (deleted)", "erasure_request"),
    ("not in the registry", "unregistered_source"),
)


class ExportInputError(BadInputError):
    """A signed artifact an export describes is missing or malformed."""


def read_inputs(root: Path) -> dict[str, bytes]:
    """The project files the exports are computed from, by project-relative name."""
    root, files, missing = Path(root), {}, []
    for name in INPUTS:
        path = root / name
        if path.is_file():
            files[name] = path.read_bytes()
        else:
            missing.append(name)
    if missing:
        raise ExportInputError(
            f"{root}: cannot export; run `dvc repro` (or `make run`) first. Missing:",
            problems=missing,
        )
    return files


def record_sizes(root: Path, files: Mapping[str, bytes], trusted) -> dict[str, dict]:
    """Per source: UTF-8 bytes of all its records and of those the gate allowed.

    Each records file must be the one the manifest signed; refused records are
    those the signed gate decision names.
    """
    manifest = _statement(files, MANIFEST, MANIFEST_TYPE, trusted)
    refused = _refused(_statement(files, DECISION, DECISION_TYPE, trusted)["predicate"])
    sizes: dict[str, dict] = {}
    for name, digest in sorted(subjects_of(manifest).items()):
        if not name.startswith(LAYOUT.name(LAYOUT.records) + "/"):
            continue
        data = (Path(root) / name).read_bytes()
        if sha256_hex(data) != digest:
            raise ArtifactDigestError(f"{name} differs from the digest the manifest signed")
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                _add_size(sizes, Record.from_json(line, where=f"{name}:{n}"), refused)
    return sizes


def _add_size(sizes: dict, record: Record, refused: set[str]) -> None:
    entry = sizes.setdefault(record.source_id, {"bytes": 0, "bytes_allowed": 0})
    n = len(record.text.encode("utf-8"))
    entry["bytes"] += n
    entry["bytes_allowed"] += 0 if record.record_id in refused else n


def compute(files: Mapping[str, bytes], trusted, *, sizes: Mapping[str, dict]) -> dict:
    """Every fact the exports state, from the signed artifacts in ``files``."""
    manifest = _statement(files, MANIFEST, MANIFEST_TYPE, trusted)
    decision = _statement(files, DECISION, DECISION_TYPE, trusted)
    attestation = _statement(files, ATTESTATION, ATTESTATION_TYPE, trusted)
    report = _statement(files, REPORT, REPORT_TYPE, trusted)
    leaves = _leaves(files, manifest)
    refused = _refused(decision["predicate"])
    held = _statement(files, PARTITION, PARTITION_TYPE, trusted)["predicate"].get("held_out", {})
    sources = _sources(manifest, decision["predicate"], leaves, refused, sizes, held)
    _consistent(sources, decision["predicate"], manifest["predicate"])
    return {
        "schema_version": SCHEMA_VERSION,
        "describes": _describes(files, manifest, decision, attestation),
        "model": _model(attestation),
        "sources": sources,
        "totals": _totals(sources),
        "refusals": _refusals(sources, decision["predicate"]),
        "verification": _verification(files, report),
    }


# -- reading signed artifacts -------------------------------------------------------


def _statement(files: Mapping[str, bytes], name: str, predicate_type: str, trusted) -> dict:
    if name not in files:
        raise ExportInputError(f"{name} is missing; an export cannot describe it")
    try:
        envelope = json.loads(files[name])
    except (ValueError, RecursionError) as exc:
        raise EnvelopeFormatError(f"{name} is not JSON: {exc}") from None
    payload = verify_envelope(envelope, trusted, what=name)
    return parse_statement(payload, predicate_type, what=name)


def _payload_sha256(files: Mapping[str, bytes], name: str) -> str:
    import base64

    return sha256_hex(base64.b64decode(json.loads(files[name])["payload"]))


def _leaves(files: Mapping[str, bytes], manifest: dict) -> list[tuple[str, str]]:
    data = files.get(LEAVES)
    if data is None or subjects_of(manifest).get(LEAVES) != sha256_hex(data):
        raise ArtifactDigestError(f"{LEAVES} is missing or not the leaf list the manifest signed")
    leaves = parse_leaves(data, what=LEAVES)
    if merkle_root(leaves)[0] != manifest["predicate"]["merkle"]["root"]:
        raise ArtifactDigestError(f"{LEAVES} does not hash to the manifest's Merkle root")
    return leaves


def _refused(decision: dict) -> set[str]:
    return {r["record_id"] for r in decision.get("refused_records", [])}


# -- the facts ------------------------------------------------------------------------


def _describes(files, manifest: dict, decision: dict, attestation: dict) -> dict:
    m, d = manifest["predicate"], decision["predicate"]
    return {
        "manifest": {
            "version": m["version"],
            "merkle_root": m["merkle"]["root"],
            "payload_sha256": _payload_sha256(files, MANIFEST),
            "created_at": m["created_at"],
        },
        "gate_decision": {
            "payload_sha256": _payload_sha256(files, DECISION),
            "purpose": d["purpose"],
            "as_of": d["as_of"],
            "allowed_merkle_root": d["allowed"]["merkle_root"],
        },
        "training_attestation": {
            "sha256": sha256_hex(files[ATTESTATION]),
            "created_at": attestation["predicate"]["created_at"],
        },
        "verification_report": {"sha256": sha256_hex(files[REPORT])},
    }


def _model(attestation: dict) -> dict:
    pred = attestation["predicate"]
    params = pred.get("params", {})
    model = params.get("model", {}) if isinstance(params, dict) else {}
    from_config = isinstance(model, dict) and model.get("local_path") is None
    attested = subjects_of(attestation)
    released = {n: d for n, d in attested.items() if n.startswith(RELEASED_DIR)}
    return {
        "files": dict(sorted((released or attested).items())),
        "attested_files": len(attested),
        "params": params,
        "dp": pred.get("dp", {}),
        "code_revision": pred.get("code_revision", {}),
        "library_versions": pred.get("library_versions", {}),
        "architecture": (
            "GPT-2 (decoder-only transformer) built from config"
            if from_config
            else "a local pretrained model (params train.model.local_path)"
        )
        + ", SISA shard ensemble",
        "tokenizer": "byte-level (UTF-8 bytes)" if from_config else "the base model's own",
        "tokens_are_bytes": from_config,
    }


def source_kind(terms: Mapping) -> str:
    """The template's category of a source, derived from its registry entry.

    The registry has no explicit category: a web crawl is crawled data;
    personal data held under consent or contract is user data; an SPDX
    license or public domain is a public dataset; other custom terms are
    private/licensed data. The operator confirms it (see the fields to fill in).
    """
    method = str(terms.get("acquired", {}).get("method", "")).lower()
    license_id = str(terms.get("license", ""))
    if "crawl" in method or "scrap" in method:
        return "crawled"
    if "synthetic" in str(terms.get("description", "")).lower():
        return "synthetic"
    if terms.get("contains_personal_data") and terms.get("consent_basis") in (
        "consent",
        "contract",
    ):
        return "user"
    if not license_id.startswith("LicenseRef-") or license_id == "LicenseRef-PublicDomain":
        return "public"
    return "private"


def _sources(manifest: dict, decision: dict, leaves, refused, sizes, held) -> dict[str, dict]:
    """Per source: terms, records (allowed, held out of training, trained), bytes, refusals.

    Held-out records (registry ``holdout``: the verification's non-members) are
    allowed by the gate but never trained: the signed partition counts them.
    """
    signed_files = subjects_of(manifest)
    per: dict[str, dict] = {}
    for rid, _ in leaves:
        entry = per.setdefault(rid.split("/", 1)[0], {"records": 0, "records_trained": 0})
        entry["records"] += 1
        entry["records_trained"] += rid not in refused
    out = {}
    for sid, terms in sorted(manifest["predicate"]["sources"].items()):
        counts = per.get(sid, {"records": 0, "records_trained": 0})
        gate = decision["sources"].get(sid, {})
        size = sizes.get(sid, {"bytes": 0, "bytes_allowed": 0})
        kept = held.get(sid, {"records": 0, "bytes": 0})
        out[sid] = {
            "kind": source_kind(terms),
            **_terms(terms),
            "records": counts["records"],
            "records_allowed": counts["records_trained"],
            "records_trained": counts["records_trained"] - int(kept["records"]),
            "records_held_out": int(kept["records"]),
            "records_refused": counts["records"] - counts["records_trained"],
            "bytes": int(size["bytes"]),
            "bytes_allowed": int(size["bytes_allowed"]),
            "bytes_trained": int(size["bytes_allowed"]) - int(kept["bytes"]),
            "allowed": not gate.get("reasons", ["not in the gate decision"]),
            "gate_records_allowed": gate.get("allowed"),
            "refusal_reasons": sorted(gate.get("reasons", [])),
            "records_sha256": signed_files.get(LAYOUT.name(LAYOUT.records_file(sid))),
        }
    return out


def _consistent(sources: Mapping[str, dict], decision: dict, manifest: dict) -> None:
    """Counts from the leaves must equal what the manifest and the gate decision signed."""
    problems = []
    for sid, s in sources.items():
        if s["records"] != s["manifest_record_count"]:
            problems.append(f"{sid}: {s['records']} leaves, the manifest signed "
                            f"{s['manifest_record_count']} records")  # fmt: skip
        if s["records_allowed"] != s["gate_records_allowed"]:
            problems.append(f"{sid}: {s['records_allowed']} allowed leaves, the gate decision "
                            f"signed {s['gate_records_allowed']}")  # fmt: skip
        if not 0 <= s["records_trained"] <= s["records_allowed"]:
            problems.append(f"{sid}: the partition holds out {s['records_held_out']} records "
                            f"of {s['records_allowed']} allowed")  # fmt: skip
    total = sum(s["records_allowed"] for s in sources.values())
    if total != decision.get("allowed", {}).get("count"):
        problems.append(f"{total} allowed records, the gate decision signed "
                        f"{decision.get('allowed', {}).get('count')}")  # fmt: skip
    if sum(s["records"] for s in sources.values()) != manifest.get("record_count"):
        problems.append("the leaves per source do not add up to the manifest's record count")
    if problems:
        raise ArtifactDigestError(
            "the signed manifest, its leaves and the gate decision disagree:", problems=problems
        )


def _terms(t: Mapping) -> dict:
    return {
        "description": t.get("description"),
        "license": t.get("license"),
        "terms_summary": t.get("terms", {}).get("summary"),
        "terms_url": t.get("terms", {}).get("url"),
        "permits_ml_training": t.get("terms", {}).get("permits_ml_training"),
        "consent_basis": t.get("consent_basis"),
        "contains_personal_data": t.get("contains_personal_data"),
        "tdm_opt_out": t.get("tdm_opt_out"),
        "tdm_opt_out_evidence": t.get("tdm_opt_out_evidence"),
        "acquired_date": t.get("acquired", {}).get("date"),
        "acquired_method": t.get("acquired", {}).get("method"),
        "jurisdiction": t.get("jurisdiction"),
        "retention": t.get("retention"),
        "manifest_record_count": t.get("record_count"),
    }


def _totals(sources: Mapping[str, dict]) -> dict:
    keys = ("records", "records_trained", "records_held_out", "records_refused", "bytes",
            "bytes_trained")  # fmt: skip
    totals = {k: sum(s[k] for s in sources.values()) for k in keys}
    used = sorted(sid for sid, s in sources.items() if s["records_trained"])
    dates = sorted(sources[sid]["acquired_date"] for sid in used if sources[sid]["acquired_date"])
    return {
        **totals,
        "sources": len(sources),
        "sources_trained_on": len(used),
        "acquired_from": dates[0] if dates else None,
        "acquired_to": dates[-1] if dates else None,
    }


def _refusals(sources: Mapping[str, dict], decision: dict) -> dict:
    """Refused sources and records per category of reason (a record may count in several)."""
    by: dict[str, dict] = {}
    for s in sources.values():
        for cat in sorted({category(r) for r in s["refusal_reasons"]}):
            by.setdefault(cat, {"sources": 0, "records": 0})["sources"] += 1
    source_cats = {sid: {category(r) for r in s["refusal_reasons"]} for sid, s in sources.items()}
    for r in decision.get("refused_records", []):
        cats = set()
        for reason in r["reasons"]:
            if reason.startswith("source ") and reason.endswith(" is refused"):
                cats |= source_cats.get(reason[len("source ") : -len(" is refused")], {"other"})
            else:
                cats.add(category(reason))
        for cat in cats:
            by.setdefault(cat, {"sources": 0, "records": 0})["records"] += 1
    return {"by_reason": dict(sorted(by.items())), "records": len(decision["refused_records"])}


def category(reason: str) -> str:
    return next((cat for phrase, cat in REASONS if phrase in reason), "other")


def _verification(files: Mapping[str, bytes], report: dict) -> dict:
    pred, subjects = report["predicate"], subjects_of(report)
    summary = files.get(SUMMARY, b"")
    if subjects.get(SUMMARY) != sha256_hex(summary):
        raise ArtifactDigestError(f"{SUMMARY} is not the summary the verification report signed")
    verdicts = {
        name: {
            "verdict": s.get("verdict"),
            "checks": s.get("checks"),
            "failed": len(s.get("failed", [])),
        }
        for name, s in sorted(pred.get("summary", {}).items())
    }
    return {
        "reference": pred.get("reference"),
        "forget_set_sha256": pred.get("forget_set_sha256"),
        "policy_sha256": pred.get("policy", {}).get("sha256"),
        "verdicts": verdicts,
        "metrics": json.loads(summary),
    }
