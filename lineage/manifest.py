"""The signed manifest: which records exist, where they came from, and their Merkle root.

A manifest is an in-toto Statement v1 in a DSSE envelope. Its subjects are the
records files and the sorted leaf list (``record_id<TAB>sha256`` per line);
its predicate names every source with its terms, the record count, the Merkle
root, a version that only ever increases and the digest of the previous
version's payload, so manifests form a chain an auditor can walk.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lineage._canonical import atomic_write, file_sha256, sha256_hex
from lineage.errors import ArtifactDigestError, EnvelopeFormatError, RecordHashMismatchError
from lineage.layout import LAYOUT
from lineage.merkle import record_leaf_hash, root_of, sort_key
from lineage.records import Record, check_unique, read_all, records_files
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
from lineage.sources import Registry, source_terms

PREDICATE_TYPE = "https://exante.dev/attestations/manifest/v1"
SCHEMA_VERSION = 1
LEAVES_NAME = "manifest.leaves"
LEAF = "utf8(record_id) || 0x00 || sha256(canonical text)"
LEAF_WITH_TERMS = (
    "utf8(record_id) || 0x00 || sha256(canonical text), or, for a record with its own "
    'terms, sha256(canonical JSON {"terms": {...}, "text": canonical text})'
)
_HISTORY = re.compile(r"v(\d{6})\.dsse\.json")  # fullmatch


@dataclass(frozen=True)
class ManifestPaths:
    """Where one project keeps its records and manifests (relative to the project root)."""

    records: Path = LAYOUT.records
    current: Path = LAYOUT.manifest
    leaves: Path = LAYOUT.manifest_leaves
    history: Path = LAYOUT.manifest_history


# -- leaves -------------------------------------------------------------------


def sorted_leaves(records: Iterable[Record]) -> list[tuple[str, str]]:
    """``(record_id, sha256)`` sorted by id bytes, after re-hashing every record's text."""
    bad = [r.record_id for r in records if not r.digest_matches()]
    if bad:
        raise RecordHashMismatchError(
            "records whose text no longer matches their digest:", problems=bad[:20]
        )
    return sorted(((r.record_id, r.sha256) for r in records), key=lambda x: sort_key(x[0]))


def leaves_bytes(leaves: Sequence[tuple[str, str]]) -> bytes:
    return "".join(f"{rid}\t{sha}\n" for rid, sha in leaves).encode("utf-8")


def parse_leaves(data: bytes, *, what: str) -> list[tuple[str, str]]:
    leaves = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise ArtifactDigestError(f"{what}: line {n} is not 'record_id<TAB>sha256'")
        leaves.append((parts[0], parts[1]))
    return leaves


def merkle_root(leaves: Iterable[tuple[str, str]]) -> tuple[str, int]:
    root, size = root_of(record_leaf_hash(rid, sha) for rid, sha in leaves)
    return root.hex(), size


# -- history ------------------------------------------------------------------


def history_versions(history: Path) -> dict[int, Path]:
    out = {}
    for p in Path(history).glob("v*.dsse.json"):
        if m := _HISTORY.fullmatch(p.name):
            out[int(m.group(1))] = p
    return out


def history_payloads(history: Path) -> list[bytes]:
    """Payloads of every manifest version kept (to recognize a swapped-in signature)."""
    payloads = []
    for path in history_versions(history).values():
        try:
            payloads.append(base64.b64decode(read_envelope(path, what="manifest")["payload"]))
        except (EnvelopeFormatError, KeyError, TypeError, ValueError):
            continue
    return payloads


def _swap_sources(envelope: dict, history: Path) -> list[bytes]:
    """Kept payloads that a swapped-in signature could have come from.

    Only when the envelope's payload is itself a kept version is a signature
    over a *different* kept version a swap. Otherwise the payload was edited,
    and its signature (made over the unedited original, which is kept too)
    must be reported as a mismatch, not as a signature from another file.
    """
    kept = history_payloads(history)
    try:
        payload = base64.b64decode(envelope.get("payload"), validate=True)
    except (TypeError, ValueError):  # binascii.Error is a ValueError
        return []
    return [p for p in kept if p != payload] if payload in kept else []


def _previous(history: Path, trusted) -> tuple[int, str | None]:
    versions = history_versions(history)
    if not versions:
        return 0, None
    latest = max(versions)
    env = read_envelope(versions[latest], what=f"manifest v{latest}")
    payload = verify_envelope(env, trusted, what=f"manifest v{latest}")
    return latest, sha256_hex(payload)


# -- build --------------------------------------------------------------------


def build_predicate(
    registry: Registry, records: Sequence[Record], leaves, *, version: int, previous: str | None
) -> dict:
    root, size = merkle_root(leaves)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.source_id] = counts.get(r.source_id, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "previous_manifest_sha256": previous,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "record_count": size,
        "merkle": {
            "algorithm": "RFC6962-SHA256",
            "leaf": LEAF_WITH_TERMS if any(r.terms for r in records) else LEAF,
            "order": "record_id utf-8 bytes ascending",
            "root": root,
            "size": size,
        },
        "sources": {
            sid: {**source_terms(s), "record_count": counts.get(sid, 0)}
            for sid, s in sorted(registry.sources.items())
        },
    }


def build_manifest(
    registry: Registry, root: Path, signer: Signer, trusted, paths: ManifestPaths = ManifestPaths()
) -> dict:
    """Hash every record, sign manifest version N+1 into the history; return its predicate."""
    root = Path(root)
    records = read_all(root / paths.records)
    check_unique(records)
    leaves = sorted_leaves(records)
    version, previous = _previous(root / paths.history, trusted)
    leaves_data = leaves_bytes(leaves)
    subjects = {
        p.relative_to(root).as_posix(): file_sha256(p) for p in records_files(root / paths.records)
    }
    subjects[paths.leaves.as_posix()] = sha256_hex(leaves_data)
    predicate = build_predicate(registry, records, leaves, version=version + 1, previous=previous)
    envelope = sign_envelope(make_statement(subjects, PREDICATE_TYPE, predicate), signer)
    atomic_write(root / paths.leaves, leaves_data)
    # Each version keeps its leaves (ids and digests, no text): an auditor can then
    # prove a deleted record absent from every later version, not just the current one.
    atomic_write(root / paths.history / f"v{version + 1:06d}.leaves", leaves_data)
    write_envelope(root / paths.history / f"v{version + 1:06d}.dsse.json", envelope)
    write_envelope(root / paths.current, envelope)
    return predicate


@dataclass(frozen=True)
class SignedManifest:
    """A manifest whose signature verified, with the digest of its payload."""

    statement: dict
    payload_sha256: str

    @property
    def predicate(self) -> dict:
        return self.statement["predicate"]

    @property
    def version(self) -> int:
        return int(self.predicate["version"])

    @property
    def root(self) -> str:
        return self.predicate["merkle"]["root"]

    @property
    def subjects(self) -> dict[str, str]:
        return subjects_of(self.statement)


def load_manifest(root: Path, trusted, paths: ManifestPaths = ManifestPaths()) -> SignedManifest:
    """Verify the current manifest's signature and shape (not yet the records)."""
    root = Path(root)
    env = read_envelope(root / paths.current, what="manifest")
    payload = verify_envelope(
        env, trusted, known_payloads=_swap_sources(env, root / paths.history), what="manifest"
    )
    statement = parse_statement(payload, PREDICATE_TYPE, what="manifest")
    pred = statement["predicate"]
    if not isinstance(pred.get("version"), int) or not isinstance(pred.get("merkle"), dict):
        raise EnvelopeFormatError("manifest predicate lacks a version or Merkle root")
    return SignedManifest(statement, sha256_hex(payload))


def load_leaves(root: Path, manifest: SignedManifest, paths: ManifestPaths = ManifestPaths()):
    """The manifest's leaf list, checked against its signed digest and Merkle root."""
    data = (Path(root) / paths.leaves).read_bytes()
    if manifest.subjects.get(paths.leaves.as_posix()) != sha256_hex(data):
        raise ArtifactDigestError(f"{paths.leaves} differs from the digest the manifest signed")
    leaves = parse_leaves(data, what=str(paths.leaves))
    if merkle_root(leaves)[0] != manifest.root:
        raise ArtifactDigestError(f"{paths.leaves} does not hash to the signed Merkle root")
    return leaves
