"""A small audit bundle that passes every check, built in seconds without a pipeline.

Each signed file is a real DSSE envelope over a real in-toto Statement; the
ledger and the receipt come from :mod:`lineage.ledger` and
:mod:`lineage.receipt` themselves. The predicates carry the fields the checks
read (not every field the pipeline writes), so tests of the verifier's
reading can mutate signed files and re-sign them with :func:`resign`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from lineage._canonical import sha256_hex
from lineage.ledger import append_request, append_status, ledger_lock
from lineage.manifest import PREDICATE_TYPE as MANIFEST_TYPE
from lineage.manifest import SignedManifest, leaves_bytes, merkle_root
from lineage.receipt import issue_receipt
from lineage.signing import (
    Signer,
    generate_key,
    load_signer,
    load_trusted_keys,
    make_statement,
    sign_envelope,
)
from verify.audit._files import INDEX, write_tar_gz
from verify.audit.bundle import PREDICATE_TYPE, index_predicate

ENSEMBLE = "models/ensemble/ensemble.json"
RID = "req-1"
REPORT = f"data/receipts/verification/{RID}/report.dsse.json"
LEAVES = {
    1: [("r1", "1" * 64), ("r2", "2" * 64), ("r3", "3" * 64)],
    2: [("r1", "1" * 64), ("r3", "3" * 64)],
}


@dataclass(frozen=True)
class Small:
    """The bundle's files, the key that signed them, and its public key."""

    files: dict[str, bytes]
    signer: Signer
    pub: Path


def envelope(signer: Signer, subjects: dict, kind: str, predicate: dict) -> bytes:
    statement = make_statement(subjects, kind, predicate)
    return json.dumps(sign_envelope(statement, signer), indent=2).encode() + b"\n"


def statement(files: dict[str, bytes], name: str) -> dict:
    return json.loads(base64.b64decode(json.loads(files[name])["payload"]))


def payload_sha(files: dict[str, bytes], name: str) -> str:
    return sha256_hex(base64.b64decode(json.loads(files[name])["payload"]))


def resign(files: dict[str, bytes], signer: Signer, path: Path) -> Path:
    """Write ``files`` as a bundle whose index is signed anew over them."""
    path.write_bytes(resigned(files, signer))
    return path


def resigned(files: dict[str, bytes], signer: Signer) -> bytes:
    """The bundle bytes of ``files`` with an index signed anew (a default one if unreadable)."""
    files = {n: d for n, d in files.items() if n != INDEX}
    subjects = {n: sha256_hex(d) for n, d in files.items()}
    try:
        predicate = index_predicate(files)
    except Exception:  # a mutated manifest: the index still signs every file
        predicate = {"schema_version": 1, "files": len(files)}
    env = sign_envelope(make_statement(subjects, PREDICATE_TYPE, predicate), signer)
    files[INDEX] = json.dumps(env).encode()
    return write_tar_gz(Path("unused"), files)


def build(tmp: Path) -> Small:
    """Two manifest versions, one completed deletion with its receipt, model and reports."""
    tmp.mkdir(parents=True, exist_ok=True)
    generate_key(tmp / "k.pem", tmp / "policies/trusted_keys", name="k")
    signer, pub = load_signer(tmp / "k.pem"), tmp / "policies/trusted_keys/k.pub.pem"
    files = {"policies/trusted_keys/k.pub.pem": pub.read_bytes()}
    files |= _manifests(signer)
    files |= _training(signer, files)
    files |= _deletion(tmp, signer, files)
    return Small(files, signer, pub)


def _manifests(signer: Signer) -> dict[str, bytes]:
    files, previous = {}, None
    for v, leaves in LEAVES.items():
        data = leaves_bytes(leaves)
        root, size = merkle_root(leaves)
        pred = {
            "version": v,
            "previous_manifest_sha256": previous,
            "merkle": {"root": root, "size": size},
        }
        name = f"data/manifests/v{v:06d}"
        files[f"{name}.dsse.json"] = envelope(
            signer, {"data/manifest.leaves": sha256_hex(data)}, MANIFEST_TYPE, pred
        )
        files[f"{name}.leaves"] = data
        previous = payload_sha(files, f"{name}.dsse.json")
    files["data/manifest.dsse.json"] = files["data/manifests/v000002.dsse.json"]
    files["data/manifest.leaves"] = files["data/manifests/v000002.leaves"]
    return files


def _training(signer: Signer, files: dict[str, bytes]) -> dict[str, bytes]:
    out = {
        ENSEMBLE: b'{"shards": 1}\n',
        "policies/verification.yaml": b"checks: []\n",
        "data/verification/results.json": b"{}\n",
    }
    kind = "https://exante.dev/test/v1"
    out["data/gate/decision.dsse.json"] = envelope(signer, {}, kind, {"manifest_version": 2})
    manifest = payload_sha(files, "data/manifest.dsse.json")
    decision = payload_sha(out, "data/gate/decision.dsse.json")
    out["data/shards/partition.dsse.json"] = envelope(
        signer, {}, kind, {"manifest_payload_sha256": manifest, "decision_payload_sha256": decision}
    )
    resources = [{"name": "ensemble.json", "digest": sha256_hex(out[ENSEMBLE])}]
    model = make_statement({}, "https://model_signing/signature/v1.0", {"resources": resources})
    out["models/ensemble.sig"] = json.dumps({"dsseEnvelope": sign_envelope(model, signer)}).encode()
    subjects = {
        ENSEMBLE: sha256_hex(out[ENSEMBLE]),
        "models/ensemble.sig": sha256_hex(out["models/ensemble.sig"]),
    }
    out["models/attestation.dsse.json"] = envelope(
        signer,
        subjects,
        kind,
        {
            "manifest_payload_sha256": manifest,
            "decision_payload_sha256": decision,
            "partition_payload_sha256": payload_sha(out, "data/shards/partition.dsse.json"),
        },
    )
    report = {
        "lineage": {"attestation_sha256": sha256_hex(out["models/attestation.dsse.json"])},
        "policy": {
            "path": "policies/verification.yaml",
            "sha256": sha256_hex(out["policies/verification.yaml"]),
        },
    }
    subjects = {
        ENSEMBLE: sha256_hex(out[ENSEMBLE]),
        "data/verification/results.json": sha256_hex(out["data/verification/results.json"]),
    }
    out["data/verification/report.dsse.json"] = envelope(signer, subjects, kind, report)
    return out


def _deletion(tmp: Path, signer: Signer, files: dict[str, bytes]) -> dict[str, bytes]:
    root, trusted = tmp / "project", load_trusted_keys(tmp / "policies/trusted_keys")
    summary = b'{"exact": {"failed_checks": 0}}\n'
    out = {f"data/receipts/verification/{RID}/summary.json": summary}
    out[REPORT] = envelope(
        signer,
        {f"data/receipts/verification/{RID}/summary.json": sha256_hex(summary)},
        "https://exante.dev/test/v1",
        {"request_id": RID, "subjects": {"exact": {"forget_shard_sha256": "a" * 64}}},
    )
    meta = {"verification": {RID: {"report": REPORT, "exact_forget_shard_sha256": "a" * 64}}}
    with ledger_lock(root) as lock:
        request = append_request(
            lock,
            signer,
            trusted,
            request_id=RID,
            reason="ticket 1",
            record_hashes={"r2": "2" * 64},
            subject_ids=["p1"],
        )
        for status in ("retraining", "purged", "verified", "complete"):
            append_status(
                lock,
                signer,
                trusted,
                request_id=RID,
                status=status,
                meta=meta if status == "complete" else None,
            )
    manifest = SignedManifest(
        statement(files, "data/manifest.dsse.json"), payload_sha(files, "data/manifest.dsse.json")
    )
    issue_receipt(
        root / f"data/receipts/{RID}.dsse.json",
        signer,
        request_id=RID,
        ledger_entry_sha256=request.sha256,
        manifest=manifest,
        leaves=LEAVES[2],
        removed={"r2": "2" * 64},
        models_before={"m": "4" * 64},
        models_after={"m": "5" * 64},
        retrained_shards=[0],
    )
    for name in (
        "data/ledger.jsonl",
        "data/ledger.head.dsse.json",
        f"data/receipts/{RID}.dsse.json",
    ):
        out[name] = (root / name).read_bytes()
    return out
