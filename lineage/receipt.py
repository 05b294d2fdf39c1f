"""The deletion receipt: a requester's signed proof, checkable offline, that their records are gone.

An in-toto Statement v1 in DSSE. Its subjects are the manifest version the
deletion produced (by payload digest, named ``manifest:vN`` as the gate names
it) and the retrained models. Its predicate names the request and the hash of
its ledger line, the new manifest's Merkle root, and for each removed record
the digest of its text and a non-inclusion proof against that root (two
adjacent leaves that bracket the id, see :mod:`lineage.merkle`); then the
model digests before and after, and the shards retrained. The receipt and
exante's public key are all a requester needs to check it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lineage._keymeta import SIGNED_AT
from lineage._shape import is_count, is_sha256, is_sorted_set, is_utc, key_problems, shown
from lineage.errors import ArtifactDigestError, ProofError, ReceiptFormatError, ReceiptProofError
from lineage.manifest import SignedManifest
from lineage.merkle import LeafIndex, NonInclusionProof, sort_key
from lineage.signing import (
    Signer,
    make_statement,
    parse_statement,
    read_envelope,
    sign_envelope,
    subjects_of,
    verify_envelope,
    write_envelope,
)

PREDICATE_TYPE = "https://exante.dev/attestations/deletion-receipt/v1"
SCHEMA_VERSION = 1
WHAT = "deletion receipt"
_KEYS = (
    "schema_version",
    "request_id",
    "issued_at",
    "ledger_entry_sha256",
    "manifest",
    "removed",
    "retrained_shards",
    "models",
)
_MANIFEST_KEYS = ("version", "payload_sha256", "merkle_root", "size")
_REMOVED_KEYS = ("record_id", "sha256", "non_inclusion")


@dataclass(frozen=True)
class Removed:
    """A deleted record: its id, the digest of its text, and the proof that it is no leaf."""

    record_id: str
    sha256: str
    proof: NonInclusionProof


@dataclass(frozen=True)
class Receipt:
    """What a receipt states; :func:`verify_receipt` returns it once every proof holds."""

    request_id: str
    ledger_entry_sha256: str
    manifest_version: int
    manifest_payload_sha256: str
    merkle_root: str
    tree_size: int
    removed: tuple[Removed, ...]
    retrained_shards: tuple[int, ...]
    models_before: Mapping[str, str]  # model name -> sha256
    models_after: Mapping[str, str]
    issued_at: str

    @property
    def subjects(self) -> dict[str, str]:
        models = {f"model:{name}": digest for name, digest in self.models_after.items()}
        return {f"manifest:v{self.manifest_version}": self.manifest_payload_sha256, **models}

    def to_predicate(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "issued_at": self.issued_at,
            "ledger_entry_sha256": self.ledger_entry_sha256,
            "manifest": {
                "version": self.manifest_version,
                "payload_sha256": self.manifest_payload_sha256,
                "merkle_root": self.merkle_root,
                "size": self.tree_size,
            },
            "removed": [
                {"record_id": r.record_id, "sha256": r.sha256, "non_inclusion": r.proof.to_dict()}
                for r in self.removed
            ],
            "retrained_shards": list(self.retrained_shards),
            "models": {"before": dict(self.models_before), "after": dict(self.models_after)},
        }

    @classmethod
    def from_predicate(cls, p: dict) -> Receipt:
        """Shape-check a predicate; every problem is reported at once."""
        # signed_at is added to every predicate by make_statement (optional: older receipts).
        keys = (*_KEYS, SIGNED_AT) if SIGNED_AT in p else _KEYS
        if problems := key_problems(p, keys, what="predicate"):
            raise ReceiptFormatError(f"{WHAT}: the predicate is malformed:", problems=problems)
        removed, problems = _removed(p["removed"])
        problems += _top_problems(p) + _manifest_problems(p["manifest"])
        problems += _models_problems(p["models"])
        if problems:
            raise ReceiptFormatError(f"{WHAT}: the predicate is malformed:", problems=problems)
        m, models = p["manifest"], p["models"]
        return cls(
            request_id=p["request_id"],
            ledger_entry_sha256=p["ledger_entry_sha256"],
            manifest_version=m["version"],
            manifest_payload_sha256=m["payload_sha256"],
            merkle_root=m["merkle_root"],
            tree_size=m["size"],
            removed=removed,
            retrained_shards=tuple(p["retrained_shards"]),
            models_before=models["before"],
            models_after=models["after"],
            issued_at=p["issued_at"],
        )

    def verify_proofs(self) -> None:
        """Each removed record is provably not a leaf of the tree under the stated root."""
        root, problems = bytes.fromhex(self.merkle_root), []
        for r in self.removed:
            if r.proof.record_id != r.record_id or r.proof.tree_size != self.tree_size:
                problems.append(
                    f"{shown(r.record_id)}: the proof is for {shown(r.proof.record_id)} in a "
                    f"tree of {r.proof.tree_size}, not this record in a tree of {self.tree_size}"
                )
                continue
            try:
                r.proof.verify(root)
            except ProofError as exc:
                problems.append(f"{shown(r.record_id)}: {exc}")
        if problems:
            raise ReceiptProofError(
                f"{WHAT}: records not proven absent from manifest v{self.manifest_version} "
                f"(root {self.merkle_root[:16]}…):",
                problems=problems,
            )


def _top_problems(p: dict) -> list[str]:
    problems = []
    if p["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {shown(p['schema_version'])}, not {SCHEMA_VERSION}")
    if not isinstance(p["request_id"], str) or not p["request_id"]:
        problems.append("request_id must be a non-empty string")
    if not is_utc(p["issued_at"]):
        problems.append("issued_at must be an ISO 8601 time in UTC")
    if not is_sha256(p["ledger_entry_sha256"]):
        problems.append("ledger_entry_sha256 must be a sha256 hex digest")
    shards = p["retrained_shards"]
    if not isinstance(shards, list) or not all(map(is_count, shards)) or not is_sorted_set(shards):
        problems.append("retrained_shards must be a sorted list of distinct shard numbers")
    return problems


def _manifest_problems(m) -> list[str]:
    if not isinstance(m, dict):
        return ["manifest must be an object"]
    if problems := key_problems(m, _MANIFEST_KEYS, what="manifest"):
        return problems
    if not is_count(m["version"]) or m["version"] < 1:
        problems.append("manifest.version must be a version number (1 or more)")
    for k in ("payload_sha256", "merkle_root"):
        if not is_sha256(m[k]):
            problems.append(f"manifest.{k} must be a sha256 hex digest")
    if not is_count(m["size"]):
        problems.append("manifest.size must be a leaf count")
    return problems


def _models_problems(models) -> list[str]:
    if not isinstance(models, dict) or set(models) != {"before", "after"}:
        return ["models must have exactly 'before' and 'after'"]
    return [
        f"models.{side} must map model names to sha256 hex digests"
        for side in ("before", "after")
        if not isinstance(models[side], dict) or not all(map(is_sha256, models[side].values()))
    ]


def _removed(items) -> tuple[tuple[Removed, ...], list[str]]:
    """The removed records with their parsed proofs, and what is wrong with the rest."""
    if not isinstance(items, list):
        return (), ["removed must be a list"]
    removed, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or key_problems(item, _REMOVED_KEYS, what=""):
            problems.append(f"removed[{i}] must have exactly the fields {', '.join(_REMOVED_KEYS)}")
        elif not isinstance(item["record_id"], str) or not is_sha256(item["sha256"]):
            problems.append(f"removed[{i}] needs a string record_id and a sha256 hex digest")
        else:
            try:
                proof = NonInclusionProof.from_dict(item["non_inclusion"])
            except ProofError as exc:
                problems.append(f"removed[{i}]: {exc}")
                continue
            removed.append(Removed(item["record_id"], item["sha256"], proof))
    ids = [r.record_id for r in removed]
    if len(set(ids)) != len(ids):
        problems.append("removed names a record more than once")
    return tuple(removed), problems


# -- issue and verify ----------------------------------------------------------


def issue_receipt(
    out: Path,
    signer: Signer,
    *,
    request_id: str,
    ledger_entry_sha256: str,
    manifest: SignedManifest,
    leaves: Sequence[tuple[str, str]],
    removed: Mapping[str, str],
    models_before: Mapping[str, str],
    models_after: Mapping[str, str],
    retrained_shards: Iterable[int],
) -> Receipt:
    """Prove each removed record (id → sha256) absent from ``manifest``; sign a receipt to ``out``.

    ``leaves`` are the manifest's (:func:`lineage.manifest.load_leaves`). The
    receipt is checked as :func:`verify_receipt` will check it before it is
    signed: exante never issues a receipt that does not verify.
    """
    index = LeafIndex(leaves)
    if index.root.hex() != manifest.root:
        raise ArtifactDigestError(f"the leaves do not hash to manifest v{manifest.version}'s root")
    receipt = Receipt(
        request_id=request_id,
        ledger_entry_sha256=ledger_entry_sha256,
        manifest_version=manifest.version,
        manifest_payload_sha256=manifest.payload_sha256,
        merkle_root=manifest.root,
        tree_size=index.tree.size,
        removed=tuple(
            Removed(rid, removed[rid], _absent(index, rid, manifest.version))
            for rid in sorted(removed, key=sort_key)
        ),
        retrained_shards=tuple(sorted(set(retrained_shards))),
        models_before=dict(models_before),
        models_after=dict(models_after),
        issued_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
    )
    statement = make_statement(receipt.subjects, PREDICATE_TYPE, receipt.to_predicate())
    _check(parse_statement(statement, PREDICATE_TYPE, what=WHAT))
    write_envelope(Path(out), sign_envelope(statement, signer))
    return receipt


def _absent(index: LeafIndex, record_id: str, version: int) -> NonInclusionProof:
    try:
        return index.non_inclusion(record_id)
    except KeyError:
        raise ProofError(
            f"{record_id!r} is still a leaf of manifest v{version}; it was not removed"
        ) from None


def verify_receipt(path: Path, trusted: Mapping) -> Receipt:
    """Check a receipt offline: a trusted signature, its schema, and every non-inclusion proof."""
    payload = verify_envelope(read_envelope(path, what=WHAT), trusted, what=WHAT)
    return _check(parse_statement(payload, PREDICATE_TYPE, what=WHAT))


def _check(statement: dict) -> Receipt:
    receipt = Receipt.from_predicate(statement["predicate"])
    if subjects_of(statement) != receipt.subjects:
        raise ReceiptFormatError(
            f"{WHAT}: its subjects are not the manifest and models its predicate names"
        )
    receipt.verify_proofs()
    return receipt
