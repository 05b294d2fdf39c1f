"""The signed verification report: an in-toto Statement about the tested release.

Its subjects are the released model files (the ensemble that was tested)
plus the verification results and plots; its predicate carries the digests
a reviewer needs to tie the verdicts to a model and to rules set in advance
(policy, forget set, training attestation, params) and the verdicts
themselves. :func:`verify_report` checks the signature, then re-hashes every
subject on disk, so a modified result, plot or model is caught.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lineage._canonical import file_sha256
from lineage.errors import ArtifactDigestError
from lineage.signing import (
    Signer,
    make_statement,
    read_statement,
    sign_envelope,
    subject_problems_on_disk,
    subjects_of,
    write_envelope,
)

PREDICATE_TYPE = "https://exante.dev/attestations/verification/v1"
SCHEMA_VERSION = 1
WHAT = "verification report"


def sign_report(
    *, root: Path, files: list[Path], predicate: dict, signer: Signer, out: Path
) -> dict:
    """Sign a Statement over ``files`` (paths under ``root``) with ``predicate``; return it."""
    root = Path(root)
    subjects = {p.relative_to(root).as_posix(): file_sha256(p) for p in files}
    body = {"schema_version": SCHEMA_VERSION, **predicate}
    write_envelope(Path(out), sign_envelope(make_statement(subjects, PREDICATE_TYPE, body), signer))
    return body


def verify_report(path: Path, *, root: Path, trusted: Mapping) -> dict:
    """Check signature and every subject's digest on disk; return the predicate."""
    statement = read_statement(path, trusted, PREDICATE_TYPE, what=WHAT,
                               schema_version=SCHEMA_VERSION)  # fmt: skip
    problems = subject_problems_on_disk(subjects_of(statement), Path(root), what=WHAT)
    if problems:
        raise ArtifactDigestError(
            f"{WHAT} {path}: files differ from what was verified and signed; the verdicts do "
            "not apply to them. Re-run `exante verify` on the current release:",
            problems=problems,
        )
    return statement["predicate"]
