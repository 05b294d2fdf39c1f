"""Deletion receipts: issued over real Merkle trees, checked offline, every tamper caught.

The removed records sit at both edges and in the middle of the tree, so the
proofs cover a missing left neighbour, a missing right one, and two adjacent
leaves. Tampered receipts are re-signed with the trusted key: the signature
holds, and only the proofs or the schema can catch them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lineage._canonical import canonical_json, sha256_hex, text_sha256
from lineage.errors import (
    ArtifactDigestError,
    EnvelopeFormatError,
    ProofError,
    ReceiptFormatError,
    ReceiptProofError,
    SignatureMismatchError,
    UntrustedKeyError,
)
from lineage.ledger import LEDGER, append_request, ledger_lock, verify_ledger
from lineage.manifest import PREDICATE_TYPE as MANIFEST_TYPE
from lineage.manifest import SignedManifest, leaves_bytes, merkle_root
from lineage.merkle import sort_key
from lineage.receipt import Receipt, issue_receipt, verify_receipt
from lineage.signing import (
    Signer,
    make_statement,
    parse_statement,
    sign_envelope,
    write_envelope,
)

ALL = sorted(
    ((f"crm/p{i:04d}-email", text_sha256(f"email of person {i}")) for i in range(24)),
    key=lambda leaf: sort_key(leaf[0]),
)
GONE = {"crm/p0000-email", "crm/p0011-email", "crm/p0023-email"}  # first, middle, last
REMOVED = {rid: sha for rid, sha in ALL if rid in GONE}
KEPT = [leaf for leaf in ALL if leaf[0] not in REMOVED]
BEFORE = {"shard-0": "a" * 64, "shard-1": "b" * 64, "ensemble": "c" * 64}
AFTER = {"shard-0": "a" * 64, "shard-1": "d" * 64, "ensemble": "e" * 64}


def manifest_of(leaves: list[tuple[str, str]], version: int) -> SignedManifest:
    """What ``load_manifest`` returns for a manifest over ``leaves``."""
    root, size = merkle_root(leaves)
    subjects = {"data/manifest.leaves": sha256_hex(leaves_bytes(leaves))}
    predicate = {"version": version, "merkle": {"root": root, "size": size}}
    payload = make_statement(subjects, MANIFEST_TYPE, predicate)
    return SignedManifest(parse_statement(payload, MANIFEST_TYPE), sha256_hex(payload))


def issue(
    out: Path, signer: Signer, *, leaves=KEPT, removed=REMOVED, manifest=None, entry="f" * 64
) -> Receipt:
    return issue_receipt(
        out,
        signer,
        request_id="req-1",
        ledger_entry_sha256=entry,
        manifest=manifest or manifest_of(leaves, 6),
        leaves=leaves,
        removed=removed,
        models_before=BEFORE,
        models_after=AFTER,
        retrained_shards=[1],
    )


@pytest.fixture
def issued(tmp_path: Path, keys) -> tuple[Path, Receipt]:
    path = tmp_path / "receipt.dsse.json"
    return path, issue(path, keys.signer)


def resign(path: Path, signer: Signer, change: Callable[[dict], None]) -> None:
    """Edit the statement and sign it again, as exante would have."""
    statement = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
    change(statement)
    write_envelope(path, sign_envelope(canonical_json(statement), signer))


# -- an honest receipt -------------------------------------------------------------------


def test_a_receipt_verifies_offline_and_says_what_it_signed(issued, keys) -> None:
    path, receipt = issued
    assert verify_receipt(path, keys.trusted) == receipt
    assert receipt.merkle_root == merkle_root(KEPT)[0] and receipt.tree_size == len(KEPT)
    assert {r.record_id: r.sha256 for r in receipt.removed} == REMOVED
    assert receipt.retrained_shards == (1,)
    assert receipt.subjects == {
        "manifest:v6": manifest_of(KEPT, 6).payload_sha256,
        **{f"model:{name}": digest for name, digest in AFTER.items()},
    }


def test_the_proofs_cover_both_edges_and_the_middle(issued) -> None:
    proofs = {r.record_id: r.proof for r in issued[1].removed}
    assert proofs["crm/p0000-email"].left is None
    assert proofs["crm/p0023-email"].right is None
    middle = proofs["crm/p0011-email"]
    assert (middle.left.record_id, middle.right.record_id) == ("crm/p0010-email", "crm/p0012-email")


def test_the_predicate_round_trips(issued) -> None:
    receipt = issued[1]
    assert Receipt.from_predicate(json.loads(canonical_json(receipt.to_predicate()))) == receipt


def test_deleting_every_record_proves_against_the_empty_tree(tmp_path: Path, keys) -> None:
    receipt = issue(tmp_path / "r.json", keys.signer, leaves=[], removed=dict(ALL))
    assert verify_receipt(tmp_path / "r.json", keys.trusted).tree_size == 0 == receipt.tree_size


def test_the_receipt_cites_the_request_line_of_the_ledger(tmp_path: Path, keys) -> None:
    signer, trusted, _ = keys
    with ledger_lock(tmp_path) as lock:
        append_request(
            lock, signer, trusted, request_id="req-1", reason="ticket 1", record_hashes=REMOVED
        )
    request = verify_ledger(tmp_path, trusted).request("req-1")
    receipt = issue(
        tmp_path / "r.json", signer, removed=request.record_hashes, entry=request.sha256
    )
    line = (tmp_path / LEDGER).read_bytes().splitlines()[0]
    assert verify_receipt(tmp_path / "r.json", trusted).ledger_entry_sha256 == sha256_hex(line)
    assert {r.record_id: r.sha256 for r in receipt.removed} == REMOVED


def test_no_receipt_for_a_record_still_in_the_manifest(tmp_path: Path, keys) -> None:
    with pytest.raises(ProofError, match="still a leaf of manifest v6"):
        issue(tmp_path / "r.json", keys.signer, leaves=ALL)
    assert not (tmp_path / "r.json").exists()


def test_no_receipt_over_leaves_that_are_not_the_manifests(tmp_path: Path, keys) -> None:
    with pytest.raises(ArtifactDigestError, match="manifest v6"):
        issue(tmp_path / "r.json", keys.signer, manifest=manifest_of(ALL, 6))


# -- tampering ---------------------------------------------------------------------------


def swap_proofs(s: dict) -> None:
    removed = s["predicate"]["removed"]
    removed[0]["non_inclusion"], removed[1]["non_inclusion"] = (
        removed[1]["non_inclusion"],
        removed[0]["non_inclusion"],
    )


def claim_a_kept_record(s: dict) -> None:
    """Say a record that is still trained on was deleted, reusing a real proof's neighbours."""
    item = s["predicate"]["removed"][1]
    item["record_id"] = item["non_inclusion"]["record_id"] = "crm/p0005-email"


def flip_a_proof_hash(s: dict) -> None:
    left = s["predicate"]["removed"][1]["non_inclusion"]["left"]
    left["hashes"][0] = base64.b64encode(bytes(32)).decode()


def set_root_to_the_old_tree(s: dict) -> None:
    s["predicate"]["manifest"]["merkle_root"] = merkle_root(ALL)[0]


def drop_field(s: dict) -> None:
    del s["predicate"]["models"]


def bad_model_digest(s: dict) -> None:
    s["predicate"]["models"]["after"]["shard-1"] = "not a digest"


def drop_a_subject(s: dict) -> None:
    s["subject"] = s["subject"][:1]


def other_predicate_type(s: dict) -> None:
    s["predicateType"] = "https://exante.dev/attestations/training/v1"


TAMPERS = {
    "proofs swapped between records": (swap_proofs, ReceiptProofError),
    "a kept record claimed deleted": (claim_a_kept_record, ReceiptProofError),
    "a proof hash changed": (flip_a_proof_hash, ReceiptProofError),
    "the root of the old tree": (set_root_to_the_old_tree, ReceiptProofError),
    "a field removed": (drop_field, ReceiptFormatError),
    "a model digest malformed": (bad_model_digest, ReceiptFormatError),
    "a subject removed": (drop_a_subject, ReceiptFormatError),
    "another predicate type": (other_predicate_type, EnvelopeFormatError),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_each_tamper_raises_its_own_error(issued, keys, name: str) -> None:
    change, error = TAMPERS[name]
    path, _ = issued
    resign(path, keys.signer, change)
    with pytest.raises(error) as caught:
        verify_receipt(path, keys.trusted)
    assert type(caught.value) is error


def test_a_receipt_signed_by_an_untrusted_key_is_refused(issued, keys) -> None:
    path, _ = issued
    resign(path, keys.stranger, lambda s: None)
    with pytest.raises(UntrustedKeyError):
        verify_receipt(path, keys.trusted)


def test_an_edited_receipt_is_refused(issued, keys) -> None:
    path, _ = issued
    envelope = json.loads(path.read_text())
    payload = base64.b64decode(envelope["payload"])
    payload = payload.replace(b'"retrained_shards":[1]', b'"retrained_shards":[]')
    envelope["payload"] = base64.b64encode(payload).decode()
    path.write_text(json.dumps(envelope))
    with pytest.raises(SignatureMismatchError):
        verify_receipt(path, keys.trusted)
