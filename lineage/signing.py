"""Keys, DSSE envelopes and in-toto Statements: how exante signs what it asserts.

One key type for everything: ECDSA P-256 with SHA-256 (the type the OpenSSF
model-signing format accepts, so models and manifests share a key). A key's
id is the SHA-256 of its DER SubjectPublicKeyInfo. Only public keys under
``policies/trusted_keys/`` are trusted; a signature by any other key fails.

Envelopes follow DSSE v1 (signatures over the pre-authentication encoding,
``PAE``); payloads are in-toto Statement v1 in canonical JSON, whose predicate
carries ``signed_at`` so a verifier can hold the key to its validity period
(``lineage/_keymeta.py``).

Private keys are PKCS#8 PEM, encrypted with a passphrase unless created as a
development key; a ``pkcs11:`` URI instead of a path signs on a token (HSM).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lineage._canonical import atomic_write, canonical_json, file_sha256, sha256_hex
from lineage._keymeta import SIGNED_AT, KeyValidity, parse_utc, read_all_meta, signing_time
from lineage._shape import shown
from lineage.errors import (
    EnvelopeFormatError,
    ForeignSignatureError,
    KeyFileError,
    KeyValidityError,
    SignatureMismatchError,
    UntrustedKeyError,
)
from lineage.layout import LAYOUT

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEY_ENV = "EXANTE_SIGNING_KEY"
PASSPHRASE_ENV = "EXANTE_KEY_PASSPHRASE"
PKCS11_SCHEME = "pkcs11:"
DEFAULT_KEY_PATH = LAYOUT.signing_key
TRUSTED_KEYS_DIR = LAYOUT.trusted


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256_hex(der)


@dataclass(frozen=True)
class Signer:
    """A private key and its id; keep it out of version control."""

    private_key: ec.EllipticCurvePrivateKey
    keyid: str

    def sign(self, data: bytes) -> bytes:
        """ECDSA with RFC 6979 nonces: the same bytes always get the same signature.

        No nonce from a random source can leak the key, and signed artifacts
        (audit bundles) are reproducible byte for byte.
        """
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def signing_key_path(explicit: Path | str | None = None) -> Path | str:
    """The key to sign with: ``explicit``, else ``$EXANTE_SIGNING_KEY``, else the default.

    A ``pkcs11:`` URI stays a string (a path would fold its slashes).
    """
    chosen = explicit or os.environ.get(KEY_ENV) or DEFAULT_KEY_PATH
    return str(chosen) if str(chosen).startswith(PKCS11_SCHEME) else Path(chosen)


def generate_key(
    private_path: Path, trusted_dir: Path, *, name: str, passphrase: bytes | None = None
) -> str:
    """Create a P-256 key pair: private key mode 0600, public key trusted. Returns the key id.

    With a ``passphrase`` the private key is encrypted (PKCS#8, the best
    encryption ``cryptography`` offers); without one it is a development key.
    Refuses to overwrite an existing private key: losing it would orphan every
    signature it made.
    """
    private_path = Path(private_path)
    public_path = Path(trusted_dir) / f"{name}.pub.pem"
    if private_path.exists():
        raise KeyFileError(f"{private_path} exists; refusing to overwrite a signing key")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write(public_path, public_pem)
    atomic_write(private_path, pem, mode=0o600)
    return key_id(key.public_key())


def trust_public_key(
    public_key: ec.EllipticCurvePublicKey, trusted_dir: Path, *, name: str
) -> Path:
    """Write a public key (e.g. a token's) as ``<name>.pub.pem``; never over another key."""
    path = Path(trusted_dir) / f"{name}.pub.pem"
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if path.exists() and path.read_bytes() != pem:
        raise KeyFileError(f"{path} holds another key; pick another --name")
    atomic_write(path, pem)
    return path


def is_encrypted(pem: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem


def ask_passphrase(path: Path, *, confirm: bool) -> bytes | None:
    """``$EXANTE_KEY_PASSPHRASE``, else a prompt on a terminal (twice when creating), else None."""
    if env := os.environ.get(PASSPHRASE_ENV):
        return env.encode("utf-8")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(f"passphrase for {path}: ")
    if confirm and getpass.getpass("again: ") != first:
        raise KeyFileError("the two passphrases differ; nothing was written. Run again")
    return first.encode("utf-8") or None


def load_signer(path: Path | str, *, passphrase: bytes | None = None):
    """The signer behind ``path``: a PEM file (decrypted with the passphrase) or a pkcs11: URI."""
    if str(path).startswith(PKCS11_SCHEME):
        from lineage._pkcs11 import load_pkcs11_signer

        return load_pkcs11_signer(str(path))
    path = Path(path)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"no signing key at {path}; create one with `exante keys init` "
            f"or point ${KEY_ENV} at yours"
        ) from None
    key = _decrypt(pem, path, passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{path} is not an ECDSA P-256 key; exante signs with P-256 only")
    return Signer(key, key_id(key.public_key()))


def _decrypt(pem: bytes, path: Path, passphrase: bytes | None):
    if is_encrypted(pem):
        passphrase = passphrase or ask_passphrase(path, confirm=False)
        if not passphrase:
            raise KeyFileError(
                f"{path} is encrypted and no passphrase was given: set ${PASSPHRASE_ENV} "
                "or run on a terminal to be asked"
            )
    else:
        passphrase = None
    try:
        return serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        if passphrase and "decrypt" in str(exc).lower():
            raise KeyFileError(
                f"wrong passphrase for {path}: check ${PASSPHRASE_ENV} (or what you typed)"
            ) from None
        raise KeyFileError(f"{path} is not a PEM private key: {exc}") from None


@dataclass(frozen=True)
class TrustedKeys(Mapping):
    """Trusted public keys by id, with the validity periods of those that have one."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]
    validity: Mapping[str, KeyValidity] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)

    def __getitem__(self, keyid: str) -> ec.EllipticCurvePublicKey:
        return self.keys[keyid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def load_trusted_keys(directory: Path = TRUSTED_KEYS_DIR) -> TrustedKeys:
    """Every ``*.pub.pem`` under ``directory``, by key id, with its ``*.meta.yaml`` if any."""
    keys, files = {}, {}
    for path in sorted(Path(directory).glob("*.pub.pem")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"trusted key {path} is unreadable: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise KeyFileError(f"trusted key {path} is not ECDSA P-256")
        keys[key_id(key)] = key
        files[key_id(key)] = path
    if not keys:
        raise KeyFileError(
            f"no trusted keys under {directory}; run `exante keys init` or add a *.pub.pem"
        )
    validity = {k: v for k, (_, v) in read_all_meta(Path(directory)).items() if k in keys}
    return TrustedKeys(keys, validity, files)


# -- DSSE ---------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(payload: bytes, signer, *, payload_type: str = PAYLOAD_TYPE) -> dict:
    """A DSSE envelope; ``signer`` is a :class:`Signer` or a PKCS#11 signer (same interface)."""
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


def _field(envelope: Mapping, name: str, kind: type):
    value = envelope.get(name) if isinstance(envelope, Mapping) else None
    if not isinstance(value, kind):
        raise EnvelopeFormatError(f"DSSE envelope field {name!r} is missing or not {kind.__name__}")
    return value


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeFormatError(f"DSSE {what} is not valid base64") from None


def _verifies(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_envelope(
    envelope: Mapping,
    trusted: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    payload_type: str = PAYLOAD_TYPE,
    known_payloads: Iterable[bytes] = (),
    what: str = "envelope",
) -> bytes:
    """Return the payload if a trusted key signed it; raise the error that says why not.

    ``known_payloads`` are other payloads this signer has signed (earlier
    manifest versions): a signature that verifies over one of them was swapped
    in, which is reported as such rather than as a modified payload. A key with
    a validity period (``TrustedKeys.validity``) counts only if it was valid at
    the payload's ``signed_at`` and is not revoked.
    """
    payload = _b64decode(_field(envelope, "payload", str), "payload")
    if _field(envelope, "payloadType", str) != payload_type:
        raise EnvelopeFormatError(f"{what}: payloadType is not {payload_type}")
    signatures = _field(envelope, "signatures", list)
    if not signatures:
        raise EnvelopeFormatError(f"{what} carries no signature")
    untrusted, invalid = [], None
    for entry in signatures:
        if not isinstance(entry, Mapping):
            raise EnvelopeFormatError(f"{what}: a signature entry is not an object")
        keyid = str(entry.get("keyid", ""))
        sig = _b64decode(str(entry.get("sig", "")), "signature")
        key = trusted.get(keyid)
        if key is None:
            untrusted.append(keyid or "<no keyid>")
            continue
        if _verifies(key, sig, pae(payload_type, payload)):
            invalid = _validity_problem(trusted, keyid, payload)
            if invalid is None:
                return payload
            continue  # another signature, by a key valid at the time, may still count
        for other in known_payloads:
            if other != payload and _verifies(key, sig, pae(payload_type, other)):
                raise ForeignSignatureError(
                    f"{what}: the signature belongs to a different signed payload; "
                    "it was copied from another file"
                )
        raise SignatureMismatchError(
            f"{what}: the signature by trusted key {keyid[:16]} does not match the payload; "
            "the content was modified after signing"
        )
    if invalid is not None:
        raise KeyValidityError(f"{what}: {invalid}")
    raise UntrustedKeyError(
        f"{what} is signed only by untrusted key(s) {', '.join(k[:16] for k in untrusted)}; "
        "add the signer's public key to policies/trusted_keys/ if you trust it"
    )


def _validity_problem(trusted: Mapping, keyid: str, payload: bytes) -> str | None:
    validity = trusted.validity.get(keyid) if isinstance(trusted, TrustedKeys) else None
    if validity is None or not validity.limited:
        return None
    problem = validity.problem(signed_at_of(payload))
    return (
        None
        if problem is None
        else f"the signature by trusted key {keyid[:16]} does not count: {problem}"
    )


def signed_at_of(payload: bytes):
    """The ``signed_at`` of a Statement payload as an aware UTC time, or None."""
    try:
        predicate = json.loads(payload).get("predicate")
    except (ValueError, RecursionError, AttributeError):
        return None
    return parse_utc(predicate.get(SIGNED_AT)) if isinstance(predicate, dict) else None


# -- in-toto Statement v1 ------------------------------------------------------


def _unique(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object has a duplicate key")
    return dict(pairs)


def parse_json(data: bytes, *, what: str) -> object:
    """Signed JSON, strictly: one reading only, so no duplicate keys; bounded nesting.

    A duplicate key lets two parsers see two different documents under one
    signature; deep nesting or a huge number would crash the reader instead of
    failing the check.
    """
    try:
        return json.loads(data, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, a 5000-digit int, nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise EnvelopeFormatError(f"{what} is not JSON ({reason})") from None


def make_statement(
    subjects: Mapping[str, str],
    predicate_type: str,
    predicate: dict,
    *,
    signed_at: str | None = None,
) -> bytes:
    """Canonical bytes of a Statement over ``subjects`` (name → sha256 hex).

    The predicate gains ``signed_at`` (UTC, seconds): ``signed_at`` if given
    (deterministic artifacts pass a time derived from their inputs), else
    ``$SOURCE_DATE_EPOCH``, else now. Statement v1 allows no other top-level
    field, so this is the one place every signed statement gets its time.
    """
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(subjects.items())],
        "predicateType": predicate_type,
        "predicate": {**predicate, SIGNED_AT: signed_at or signing_time()},
    }
    return canonical_json(statement)


def parse_statement(payload: bytes, predicate_type: str, *, what: str = "statement") -> dict:
    """Parse and shape-check a Statement payload of the expected predicate type."""
    statement = parse_json(payload, what=f"{what}: payload")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EnvelopeFormatError(f"{what}: payload is not an in-toto Statement v1")
    if statement.get("predicateType") != predicate_type:
        raise EnvelopeFormatError(
            f"{what}: predicateType is {shown(statement.get('predicateType'))}, "
            f"not {predicate_type!r}"
        )
    subjects = statement.get("subject")
    ok = isinstance(subjects, list) and all(
        isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get("sha256"), str)
        for s in subjects
    )
    if not ok or not isinstance(statement.get("predicate"), dict):
        raise EnvelopeFormatError(f"{what}: subjects or predicate are malformed")
    return statement


def subjects_of(statement: dict) -> dict[str, str]:
    return {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}


def read_envelope(path: Path, *, what: str) -> dict:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EnvelopeFormatError(f"{what}: {path} does not exist; run the pipeline") from None
    envelope = parse_json(data, what=f"{what}: {path}")
    if not isinstance(envelope, dict):
        raise EnvelopeFormatError(f"{what}: {path} is not a DSSE envelope")
    return envelope


def write_envelope(path: Path, envelope: dict) -> None:
    atomic_write(Path(path), json.dumps(envelope, indent=2, sort_keys=True).encode() + b"\n")


def read_statement(
    path: Path, trusted: Mapping, predicate_type: str, *, what: str, schema_version: int
) -> dict:
    """A signed Statement file, checked: trusted signature, predicate type, schema version."""
    payload = verify_envelope(read_envelope(path, what=what), trusted, what=what)
    statement = parse_statement(payload, predicate_type, what=what)
    if statement["predicate"].get("schema_version") != schema_version:
        raise EnvelopeFormatError(f"{what}: schema_version is not {schema_version}")
    return statement


def safe_subject_name(name: str) -> bool:
    """A relative POSIX path that stays under the root it is resolved against."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def subject_problems_on_disk(subjects: Mapping[str, str], root: Path, *, what: str) -> list[str]:
    """Each subject (path under ``root`` → sha256) that is missing or differs; names are checked."""
    unsafe = [n for n in subjects if not safe_subject_name(n)]
    if unsafe:
        raise EnvelopeFormatError(f"{what}: subject names escape the project root: {unsafe}")
    problems = []
    for name, digest in sorted(subjects.items()):
        path = Path(root) / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif file_sha256(path) != digest:
            problems.append(f"{name}: modified (sha256 differs from the signed digest)")
    return problems
