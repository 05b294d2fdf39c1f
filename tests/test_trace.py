"""``exante trace``: a record's source, terms, gate decision and a verified Merkle proof."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lineage.errors import ProofError
from lineage.manifest import load_manifest
from lineage.merkle import InclusionProof, NonInclusionProof
from lineage.signing import load_trusted_keys
from tests._cli import exante
from tests.conftest import Project

CRM_EMAIL = "crm/p0001-email"
FORUM_POST = "forum/post-00002"
ABSENT = "crm/p0001-fax"


def signed_root(project: Project) -> str:
    trusted = load_trusted_keys(project.root / "policies/trusted_keys")
    return load_manifest(project.root, trusted).root


def test_trace_an_allowed_record(project: Project) -> None:
    result = exante(project.root, "trace", CRM_EMAIL)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"record   {CRM_EMAIL}"
    assert lines[1].startswith("source   crm: Customer-relationship export")
    assert "license  LicenseRef-Lindenmoor-CustomerData; consent basis consent" in lines
    assert "subjects p0001" in lines
    assert "gate     allowed" in lines
    assert lines[-1].startswith(
        f"proof    included in manifest v1 (root {signed_root(project)[:16]}"
    )
    assert lines[-1].endswith("— verified")


def test_trace_a_refused_record(project: Project) -> None:
    result = exante(project.root, "trace", FORUM_POST)
    assert result.code == 0, result.err
    assert "gate     refused" in result.out
    assert "         - source forum is refused" in result.out
    assert "terms of service forbid ML training" in result.out
    assert "(permits ML training: False)" in result.out
    assert "included in manifest v1" in result.out  # refused, but still signed as received


def test_trace_an_absent_record(project: Project) -> None:
    result = exante(project.root, "trace", ABSENT)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"record   {ABSENT}",
        f"proof    NOT in manifest v1 (root {signed_root(project)[:16]}…); "
        "non-inclusion proof by adjacent leaves — verified",
    ]


def test_json_inclusion_proof_verifies(project: Project) -> None:
    result = exante(project.root, "trace", CRM_EMAIL, "--json")
    assert result.code == 0, result.err
    d = json.loads(result.out)
    root = d["manifest"]["merkle_root"]
    assert root == signed_root(project)
    assert d["gate"] == {"allowed": True, "purpose": "research", "reasons": []}
    assert d["record"]["record_id"] == CRM_EMAIL
    assert d["non_inclusion_proof"] is None
    proof = InclusionProof.from_dict(d["inclusion_proof"])
    assert (proof.record_id, proof.sha256) == (CRM_EMAIL, d["record"]["sha256"])
    proof.verify(bytes.fromhex(root))
    forged = dataclasses.replace(proof, sha256="0" * 64)  # the proof binds the record's digest
    with pytest.raises(ProofError):
        forged.verify(bytes.fromhex(root))


def test_json_non_inclusion_proof_verifies(project: Project) -> None:
    d = json.loads(exante(project.root, "trace", ABSENT, "--json").out)
    assert d["record"] is None and d["gate"] is None and d["inclusion_proof"] is None
    proof = NonInclusionProof.from_dict(d["non_inclusion_proof"])
    assert proof.left.record_id < ABSENT < proof.right.record_id
    proof.verify(bytes.fromhex(d["manifest"]["merkle_root"]))
    with pytest.raises(ProofError):  # the same neighbours do not prove a present id absent
        dataclasses.replace(proof, record_id=proof.left.record_id).verify(
            bytes.fromhex(d["manifest"]["merkle_root"])
        )


def test_trace_refuses_tampered_leaves(project: Project) -> None:
    leaves = project.root / "data/manifest.leaves"
    leaves.write_bytes(leaves.read_bytes().replace(b"crm/p0001-email", b"crm/p0001-emaik"))
    result = exante(project.root, "trace", CRM_EMAIL)
    assert result.code == 1
    assert "verification failed: ArtifactDigestError" in result.err
