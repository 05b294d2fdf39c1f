"""Render, sign and write the exports; the same code renders them again for the audit check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from lineage._canonical import atomic_write, sha256_hex
from lineage.signing import (
    TRUSTED_KEYS_DIR,
    Signer,
    load_trusted_keys,
    make_statement,
    sign_envelope,
)
from verify.export import _facts, cyclonedx, eu_summary, spdx

PREDICATE_TYPE = "https://exante.dev/attestations/compliance-export/v1"
SCHEMA_VERSION = _facts.SCHEMA_VERSION
DIR = "exports"  # inside a bundle; data/audit/exports in the project
FORMATS: dict[str, Callable[[dict], dict[str, bytes]]] = {
    "eu-summary": eu_summary.render,
    "cyclonedx": cyclonedx.render,
    "spdx": spdx.render,
}


def envelope_name(fmt: str) -> str:
    return f"{fmt}.dsse.json"


def project_facts(root: Path) -> dict:
    """The facts of the project at ``root``, read from its signed artifacts and records."""
    root = Path(root)
    trusted = load_trusted_keys(root / TRUSTED_KEYS_DIR)
    files = _facts.read_inputs(root)
    return _facts.compute(files, trusted, sizes=_facts.record_sizes(root, files, trusted))


def render(
    fmt: str, facts: dict, *, signer: Signer, signed_at: str | None = None
) -> dict[str, bytes]:
    """One format's files and its DSSE envelope, by bare file name."""
    files = FORMATS[fmt](facts)
    predicate = {"schema_version": SCHEMA_VERSION, "format": fmt, "describes": facts["describes"]}
    subjects = {name: sha256_hex(data) for name, data in files.items()}
    statement = make_statement(subjects, PREDICATE_TYPE, predicate, signed_at=signed_at)
    envelope = sign_envelope(statement, signer)
    return {**files, envelope_name(fmt): _envelope_bytes(envelope)}


def _envelope_bytes(envelope: dict) -> bytes:
    import json

    return json.dumps(envelope, indent=2, sort_keys=True).encode() + b"\n"


def build_exports(
    root: Path, *, signer: Signer, formats=tuple(FORMATS), signed_at: str | None = None
) -> dict[str, bytes]:
    """Every requested format of the project at ``root``, signed, by bare file name.

    Signed at ``signed_at`` (the audit bundle passes its index's time), else
    at the latest time the signed inputs claim: a time derived from the
    evidence, not the clock, so a rebuild gives the same bytes.
    """
    if signed_at is None:
        from verify.audit.bundle import bundle_signed_at

        signed_at = bundle_signed_at(root, _facts.read_inputs(root), signer)
    facts = project_facts(root)
    out: dict[str, bytes] = {}
    for fmt in formats:
        out.update(render(fmt, facts, signer=signer, signed_at=signed_at))
    return dict(sorted(out.items()))


def write_exports(directory: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write each file atomically under ``directory``; return the paths written."""
    paths = []
    for name, data in sorted(files.items()):
        atomic_write(Path(directory) / name, data)
        paths.append(Path(directory) / name)
    return paths
