"""The signed verification report: an in-toto Statement about the tested release.

Its subjects are the released model files (the ensemble that was tested)
plus the verification results and plots; its predicate carries the digests
a reviewer needs to tie the verdicts to a model and to rules set in advance
(policy, forget set, training attestation, params) and the verdicts
themselves. :func:`verify_report` checks the signature, then re-hashes every
subject on disk, so a modified result, plot or model is caught;
:func:`check_policy_on_disk` then checks that the policy in force is the one
the verdicts were judged by.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lineage._canonical import file_sha256
from lineage.errors import ArtifactDigestError, VerificationError
from lineage.signing import (
    Signer,
    make_statement,
    read_statement,
    safe_subject_name,
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


class PolicyDriftError(VerificationError):
    """The policy on disk is not the one the signed report was judged by."""


def check_policy_on_disk(predicate: Mapping, *, root: Path) -> None:
    """The policy file the report names exists and hashes to the digest it was judged by."""
    named = predicate.get("policy") or {}
    path, signed = named.get("path"), named.get("sha256")
    if not isinstance(path, str) or not safe_subject_name(path) or not isinstance(signed, str):
        raise PolicyDriftError(f"{WHAT}: it names no policy file and digest; run `exante verify`")
    full = Path(root) / path
    if not full.is_file():
        raise PolicyDriftError(f"{WHAT}: the policy it was judged by, {path}, is missing")
    on_disk = file_sha256(full)
    if on_disk != signed:
        raise PolicyDriftError(
            f"{WHAT}: {path} differs from the policy its verdicts were judged by (sha256 "
            f"{on_disk[:16]}… on disk, {signed[:16]}… in the report): the verdicts do not apply "
            "to the rules now in force. Restore the policy, or register it and re-run "
            "`exante verify`"
        )
