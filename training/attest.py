"""What training produced, signed: checkpoints bound to the data, code and privacy that made them.

Two formats, both standard, one key type (ECDSA P-256, as in :mod:`lineage.signing`):

* a **training attestation**, an in-toto Statement v1 in DSSE whose subjects
  are the checkpoint files and whose predicate binds them to the manifest,
  gate decision and partition payload digests, the parameters, the code
  revision, the library versions and each shard's DP guarantee;
* an **OpenSSF model signature** over a model directory (``model_signing``),
  so ``model_signing verify key <dir> --signature <sig> --public_key <pem>``
  checks a released model without exante.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lineage._canonical import atomic_write, canonical_json, file_sha256
from lineage.errors import (
    ArtifactDigestError,
    BadInputError,
    KeyFileError,
    VerificationError,
)
from lineage.signing import (
    SIGNED_AT,
    Signer,
    load_signer,
    make_statement,
    read_statement,
    sign_envelope,
    signing_time,
    subject_problems_on_disk,
    subjects_of,
    write_envelope,
)

if TYPE_CHECKING:  # imported where used: about 0.25 s, and most importers never sign a model
    import model_signing

PREDICATE_TYPE = "https://exante.dev/attestations/training/v1"
SCHEMA_VERSION = 1
LIBRARIES = ("torch", "transformers", "opacus", "cryptography", "model-signing", "exante")
DP_KEYS = frozenset({"epsilon", "delta", "accountant"})
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: "$" would pass a trailing newline
WHAT = "training attestation"
_MISMATCH = "Signature mismatch:"
_HASH_DIFF = re.compile(r"\AHash mismatch for '(.*)': Expected .*\Z", re.DOTALL)


class AttestInputError(BadInputError):
    """A file to attest or sign is missing or outside the project, or an input is malformed."""


class ModelSignatureError(VerificationError):
    """A model directory does not match its OpenSSF model signature: do not use the model."""


# -- provenance of the code ------------------------------------------------------


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except OSError:  # git is not installed
        return None
    return out.stdout if out.returncode == 0 else None


def code_revision(repo: Path) -> dict:
    """The commit the code came from and whether tracked files differ from it (None: no git)."""
    head = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def library_versions() -> dict[str, str]:
    """Versions of the installed libraries that shape the weights (missing ones are skipped)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# -- training attestation ----------------------------------------------------------


def _subject_names(files: Mapping[str, Path], root: Path) -> tuple[dict[str, str], list[str]]:
    """Label → POSIX path relative to ``root`` (symlinks kept: DVC may link checkpoints)."""
    base = Path(os.path.abspath(root))
    names, problems = {}, []
    for label, path in sorted(files.items()):
        full = Path(os.path.abspath(path))
        if not full.is_relative_to(base):
            problems.append(f"{label}: {path} is outside the project root {root}")
        elif not full.is_file():
            problems.append(f"{label}: {path} is not a file")
        else:
            names[label] = full.relative_to(base).as_posix()
    return names, problems


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _dp_entry(shard: str, entry) -> tuple[dict | None, list[str]]:
    if entry is None:
        return None, []
    if not isinstance(entry, Mapping) or set(entry) != DP_KEYS:
        return None, [f"dp[{shard!r}] must be None or have exactly the keys {sorted(DP_KEYS)}"]
    eps, delta, accountant = entry["epsilon"], entry["delta"], entry["accountant"]
    problems = []
    if not _finite(eps) or eps < 0:
        problems.append(f"dp[{shard!r}].epsilon must be a finite number ≥ 0, not {eps!r}")
    if not _finite(delta) or not 0 <= delta < 1:
        problems.append(f"dp[{shard!r}].delta must be a number in [0, 1), not {delta!r}")
    if not isinstance(accountant, str) or not accountant:
        problems.append(f"dp[{shard!r}].accountant must name the accountant, not {accountant!r}")
    return {"epsilon": eps, "delta": delta, "accountant": accountant}, problems


def _noise_problems(shard: str, entry) -> list[str]:
    """A shard's noise entry: a generator, whether it replays, and only a commitment."""
    if entry is None:
        return []
    if not isinstance(entry, Mapping):
        return [f"dp_noise[{shard!r}] must be None or a mapping"]
    keys = {"generator", "replayable"} | (
        {"secret_commitment"} if entry.get("replayable") else set()
    )
    if set(entry) != keys:
        return [f"dp_noise[{shard!r}] must have exactly the keys {sorted(keys)}"]
    commitment = entry.get("secret_commitment")
    if entry["replayable"] and not (isinstance(commitment, str) and _SHA256.fullmatch(commitment)):
        return [f"dp_noise[{shard!r}].secret_commitment must be 64 lowercase hex characters"]
    return []


def _digest_problems(digests: Mapping[str, str]) -> list[str]:
    return [
        f"{name} must be 64 lowercase hex characters, not {value!r}"
        for name, value in digests.items()
        if not isinstance(value, str) or not _SHA256.fullmatch(value)
    ]


def _build_predicate(
    digests: Mapping[str, str], params: dict, dp: Mapping[str, dict | None], repo: Path
) -> tuple[dict, list[str]]:
    problems = _digest_problems(digests)
    dp_entries = {}
    for shard, entry in sorted(dp.items()):
        dp_entries[str(shard)], found = _dp_entry(str(shard), entry)
        problems += found
    predicate = {
        "schema_version": SCHEMA_VERSION,
        "manifest_payload_sha256": digests["manifest_sha256"],
        "decision_payload_sha256": digests["decision_sha256"],
        "partition_payload_sha256": digests["partition_sha256"],
        "params": params,
        "code_revision": code_revision(repo),
        "library_versions": library_versions(),
        "dp": dp_entries,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    return predicate, problems


def attest_training(
    checkpoint_files: Mapping[str, Path],
    *,
    root: Path,
    signer: Signer,
    out: Path,
    manifest_sha256: str,
    decision_sha256: str,
    partition_sha256: str,
    params: dict,
    dp: Mapping[str, dict | None],
    dp_noise: Mapping[str, dict | None] | None = None,
    pretrained: Mapping[str, str] | None = None,
) -> dict:
    """Sign a statement over every checkpoint file (keyed by a label); return its predicate.

    Subjects are named by their POSIX path relative to ``root``; the predicate
    also maps each label to its subject. Every input problem is reported at once.
    With DP on, ``dp_noise`` says per shard where the noise came from: a
    commitment to the DP secret (``secret_commitment``), never the secret.
    """
    names, problems = _subject_names(checkpoint_files, Path(root))
    if not checkpoint_files:
        problems.append("no checkpoint files to attest")
    digests = {
        "manifest_sha256": manifest_sha256,
        "decision_sha256": decision_sha256,
        "partition_sha256": partition_sha256,
    }
    predicate, found = _build_predicate(digests, params, dp, Path(root))
    problems += found
    if dp_noise is not None:
        predicate["dp_noise"] = {str(k): v for k, v in sorted(dp_noise.items())}
        problems += [p for k, v in sorted(dp_noise.items()) for p in _noise_problems(str(k), v)]
    if problems:
        raise AttestInputError("cannot attest training; fix these inputs:", problems=problems)
    if pretrained is not None:  # the model training started from: its file(s), by digest
        predicate["pretrained"] = dict(pretrained)
    predicate["checkpoints"] = names
    predicate[SIGNED_AT] = signing_time()  # returned as the verifier will read it back
    try:  # what is returned is what a verifier will read back: JSON types only
        predicate = json.loads(canonical_json(predicate))
    except (TypeError, ValueError) as exc:
        raise AttestInputError(f"params are not JSON-serializable: {exc}") from None
    subjects = {name: file_sha256(Path(root) / name) for name in names.values()}
    write_envelope(
        Path(out),
        sign_envelope(
            make_statement(subjects, PREDICATE_TYPE, predicate, signed_at=predicate[SIGNED_AT]),
            signer,
        ),
    )
    return predicate


def verify_training_attestation(path: Path, *, root: Path, trusted: Mapping) -> dict:
    """Check the signature, then re-hash every checkpoint under ``root``; return the predicate."""
    statement = read_statement(path, trusted, PREDICATE_TYPE, what=WHAT,
                               schema_version=SCHEMA_VERSION)  # fmt: skip
    problems = subject_problems_on_disk(subjects_of(statement), Path(root), what=WHAT)
    if problems:
        raise ArtifactDigestError(
            f"{WHAT} {path}: checkpoints differ from what was signed; do not use them. "
            "Restore them from the attested run, or retrain and attest again:",
            problems=problems,
        )
    return statement["predicate"]


# -- OpenSSF model signing -----------------------------------------------------------


def _hashing_config(model_dir: Path, signature: Path) -> model_signing.hashing.Config:
    """Ignore the signature file when it lies inside the model, as ``model_signing`` does."""
    import model_signing

    model_root, sig = Path(model_dir).resolve(), Path(signature).resolve()
    ignored = [sig.relative_to(model_root)] if sig.is_relative_to(model_root) else []
    return model_signing.hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)


def _require_dir(model_dir: Path) -> None:
    if not Path(model_dir).is_dir():
        raise AttestInputError(f"{model_dir} is not a model directory")


def sign_model_dir(model_dir: Path, *, private_key, signature: Path) -> None:
    """Write an OpenSSF model signature (Sigstore bundle, key mode) for every file in the dir.

    ``private_key`` is a key file, a ``pkcs11:`` URI, or a signer already
    loaded (so an encrypted key's passphrase is asked once). Signs into a
    temporary file first, so a crash never leaves half a signature.
    """
    _require_dir(model_dir)
    signer = private_key if hasattr(private_key, "keyid") else load_signer(private_key)
    with tempfile.TemporaryDirectory() as tmp:
        config = _model_signing_config(signer, Path(tmp))
        config.set_hashing_config(_hashing_config(model_dir, signature))
        bundle = Path(tmp) / "model.sig"
        config.sign(Path(model_dir), bundle)
        atomic_write(Path(signature), bundle.read_bytes())


def _model_signing_config(signer, tmp: Path) -> model_signing.signing.Config:
    """model_signing reads keys from files: a token key by its URI; a loaded key from a copy
    encrypted under a one-time password in a private temp dir, never in the clear."""
    import model_signing

    config = model_signing.signing.Config()
    if not isinstance(signer, Signer):  # lineage._pkcs11.Pkcs11Signer
        return config.use_pkcs11_signer(pkcs11_uri=signer.uri)
    password = os.urandom(32).hex().encode()
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    atomic_write(tmp / "key.pem", pem, mode=0o600)
    return config.use_elliptic_key_signer(private_key=tmp / "key.pem", password=password)


def _check_public_key(path: Path) -> None:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise KeyFileError(f"no public key at {path}") from None
    except ValueError as exc:
        raise KeyFileError(f"public key {path} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"public key {path} is not ECDSA P-256")


def _mismatches(text: str) -> list[str]:
    """model_signing's per-file differences, without its digest reprs (raw text if unparsable)."""
    try:
        diffs = ast.literal_eval(text.removeprefix(_MISMATCH).strip())
    except (ValueError, SyntaxError):
        return [text]
    if not isinstance(diffs, list) or not all(isinstance(d, str) for d in diffs):
        return [text]
    return [_HASH_DIFF.sub(r"\1: modified", d) for d in diffs]


def _model_error(exc: Exception, model_dir: Path, signature: Path, public_key: Path):
    text = str(exc) or type(exc).__name__
    if text.startswith(_MISMATCH):
        return ModelSignatureError(
            f"{model_dir} differs from what {signature} signed; the model was changed after "
            "signing: do not use it. Restore the signed files, or re-sign if the change was "
            "intended:",
            problems=_mismatches(text),
        )
    return ModelSignatureError(
        f"{signature} does not verify with {public_key} ({text}); it was made by another key "
        "or edited. Verify with the signer's public key, or re-sign the model."
    )


def verify_model_dir(model_dir: Path, *, public_key: Path, signature: Path) -> None:
    """Verify like ``model_signing verify key``; raise :class:`ModelSignatureError` on mismatch."""
    _check_public_key(public_key)
    if not Path(model_dir).is_dir():
        raise ModelSignatureError(f"{model_dir} is not a directory; nothing to verify")
    if not Path(signature).is_file():
        raise ModelSignatureError(f"no model signature at {signature}; sign the model first")
    import model_signing

    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    config.set_hashing_config(_hashing_config(model_dir, signature))
    try:
        config.verify(Path(model_dir), Path(signature))
    except (ValueError, KeyError, TypeError, InvalidSignature) as exc:
        raise _model_error(exc, model_dir, signature, public_key) from None
