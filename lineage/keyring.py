"""Key rotation, revocation and listing: the operations behind ``exante keys``.

Trusted public keys live under ``policies/trusted_keys/`` as ``<name>.pub.pem``;
the metadata that limits when one may sign is ``<name>.meta.yaml`` beside it
(see ``lineage/_keymeta.py``). Rotation retires the signing key (its validity
ends now, its private file is moved aside) and creates a new one valid from
now; signatures made before keep verifying with the old public key.
Revocation is not retroactive unless the key is marked compromised.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lineage._keymeta import META_SUFFIX, KeyValidity, parse_utc, read_all_meta, signing_time
from lineage._keymeta import write_meta as _write_meta
from lineage.errors import KeyFileError
from lineage.signing import generate_key, load_signer, load_trusted_keys


def now() -> datetime:
    """The wall clock (not $SOURCE_DATE_EPOCH): rotation and revocation happen in real time."""
    return datetime.now(UTC).replace(microsecond=0)


def validity_of(trusted_dir: Path, keyid: str) -> KeyValidity | None:
    found = read_all_meta(Path(trusted_dir)).get(keyid)
    return None if found is None else found[1]


def assert_may_sign(signer, trusted_dir: Path) -> None:
    """Refuse to sign with a revoked or out-of-period key: its signatures would fail."""
    validity = validity_of(trusted_dir, signer.keyid)
    at = parse_utc(signing_time())  # the time its signatures will claim
    problem = validity.problem(at) if validity is not None else None
    if problem:
        raise KeyFileError(
            f"the signing key {signer.keyid[:16]} may not sign now: {problem}. "
            "Point $EXANTE_SIGNING_KEY at the current key, or run `exante keys rotate`"
        )


def _update(trusted_dir: Path, keyid: str, **changes) -> Path:
    """Create or change the metadata file of a trusted key; returns its path."""
    trusted = load_trusted_keys(trusted_dir)
    meta = read_all_meta(Path(trusted_dir))
    if keyid in meta:
        path, validity = meta[keyid]
    else:
        name = trusted.files[keyid].name.removesuffix(".pub.pem")
        path, validity = Path(trusted_dir) / f"{name}{META_SUFFIX}", KeyValidity(keyid)
    _write_meta(path, dataclasses.replace(validity, **changes))
    return path


@dataclass(frozen=True)
class Rotation:
    old_keyid: str
    new_keyid: str
    at: datetime
    retired_private: Path
    new_public: Path


def rotate(
    private_path: Path,
    trusted_dir: Path,
    *,
    name: str,
    new_passphrase: Callable[[], bytes | None],
) -> Rotation:
    """Retire the key at ``private_path`` now and create a new one there, valid from now.

    ``new_passphrase`` is asked only once the old key has been opened (which
    proves the operator holds it); None makes an unencrypted key.
    """
    if str(private_path).startswith("pkcs11:"):
        raise KeyFileError(
            "a token key is rotated on the token: create the new key there, trust it with "
            "`exante --key pkcs11:... keys init`, then `exante keys revoke OLDKEYID --reason "
            "rotated` (signatures made before that keep verifying)"
        )
    private_path, trusted_dir = Path(private_path), Path(trusted_dir)
    old = load_signer(private_path)
    if old.keyid not in load_trusted_keys(trusted_dir):
        raise KeyFileError(f"{private_path} is not a trusted key under {trusted_dir}")
    if (trusted_dir / f"{name}.pub.pem").exists():
        raise KeyFileError(f"{trusted_dir}/{name}.pub.pem exists; pick another --name")
    at = now()
    retired = private_path.with_name(f"{private_path.stem}.{old.keyid[:16]}.retired.pem")
    if retired.exists():
        raise KeyFileError(f"{retired} exists; move it away first")
    passphrase = new_passphrase()  # before anything changes: a mistyped prompt leaves all as it was
    _update(trusted_dir, old.keyid, not_after=at)
    private_path.rename(retired)
    new_keyid = generate_key(private_path, trusted_dir, name=name, passphrase=passphrase)
    _update(trusted_dir, new_keyid, not_before=at)
    return Rotation(old.keyid, new_keyid, at, retired, trusted_dir / f"{name}.pub.pem")


def revoke(
    trusted_dir: Path, keyid: str, *, reason: str, compromised: bool, at: datetime | None = None
) -> tuple[str, Path]:
    """Revoke a trusted key (by id or a unique prefix of 8+ characters); returns its id and file."""
    if not reason.strip():
        raise KeyFileError("a revocation needs a --reason")
    full = _resolve(trusted_dir, keyid)
    when = at or now()
    path = _update(trusted_dir, full, revoked_at=when, compromised=compromised, reason=reason)
    return full, path


def _resolve(trusted_dir: Path, prefix: str) -> str:
    matches = [k for k in load_trusted_keys(trusted_dir) if k.startswith(prefix.lower())]
    if len(prefix) < 8 or len(matches) != 1:
        raise KeyFileError(
            f"{prefix[:64]!r} names {len(matches)} trusted keys; give 8 or more characters "
            "of one key id (see `exante keys list`)"
        )
    return matches[0]


@dataclass(frozen=True)
class KeyRow:
    name: str
    keyid: str
    fingerprint: str  # SHA256:<base64>, the ssh-style spelling of the same digest
    validity: KeyValidity | None
    status: str


def describe(trusted_dir: Path) -> list[KeyRow]:
    trusted, t = load_trusted_keys(trusted_dir), now()
    rows = []
    for keyid, path in trusted.files.items():
        v = trusted.validity.get(keyid)
        fingerprint = "SHA256:" + base64.b64encode(bytes.fromhex(keyid)).decode().rstrip("=")
        rows.append(KeyRow(path.name, keyid, fingerprint, v, _status(v, t)))
    return rows


def _status(v: KeyValidity | None, t: datetime) -> str:
    if v is None or not v.limited:
        return "valid (no limits)"
    if v.compromised:
        return "COMPROMISED: every signature fails"
    if v.revoked_at is not None and v.revoked_at <= t:
        return "revoked: signatures from before the revocation still verify"
    if v.not_before is not None and t < v.not_before:
        return "not yet valid"
    if v.not_after is not None and t > v.not_after:
        return "retired: verifies signatures made within its period"
    return "valid"
