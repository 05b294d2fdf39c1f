"""Signing on a PKCS#11 token (an HSM, a smart card, SoftHSM2): the key never leaves it.

The key is named by an RFC 7512 URI, parsed with the helper of
``model_signing`` (which signs the OpenSSF model signature with the same
URI), e.g. ``pkcs11:token=exante;object=signing?module-path=/usr/lib/softhsm/
libsofthsm2.so&pin-source=file:/run/secrets/pin``. The token computes raw
ECDSA (``CKM_ECDSA``) over our SHA-256 digest and returns ``r || s``; DSSE
signatures here are DER, as the file signer writes them, so it is converted.
Token signatures use fresh random nonces: unlike the file signer's RFC 6979
signatures they differ each time, so artifacts signed on a token are not
byte-reproducible.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from lineage.errors import KeyFileError
from lineage.signing import key_id


@dataclass(frozen=True)
class Pkcs11Signer:
    """A P-256 private key on a token, with the interface of :class:`lineage.signing.Signer`.

    Each signature opens its own logged-in session and closes it: a token
    allows one login per process, and ``model_signing`` logs in on its own to
    sign the model with the same URI.
    """

    keyid: str
    uri: str = field(repr=False)  # may hold a pin-value
    public_key: ec.EllipticCurvePublicKey = field(repr=False)

    def sign(self, data: bytes) -> bytes:
        import PyKCS11

        digest = hashlib.sha256(data).digest()
        mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
        try:
            with _session(self.uri) as (session, private, _):
                raw = bytes(session.sign(private, digest, mechanism))
        except (ValueError, OSError, PyKCS11.PyKCS11Error) as exc:  # OSError: pin-source
            raise KeyFileError(f"the PKCS#11 token refused to sign ({exc})") from None
        return to_der(raw)


def to_der(raw: bytes) -> bytes:
    """A P-256 signature as DER: tokens return ``r || s`` (64 bytes), some DER already."""
    if len(raw) == 64:
        return encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    try:
        decode_dss_signature(raw)
    except ValueError:
        raise KeyFileError(f"the PKCS#11 token returned a {len(raw)}-byte signature") from None
    return raw


def load_pkcs11_signer(uri: str) -> Pkcs11Signer:
    """Log in to the token the URI names and find its P-256 key pair; exit 3 on any failure."""
    try:
        import PyKCS11
    except ImportError:
        raise KeyFileError("PKCS#11 signing needs PyKCS11; install exante's dependencies") from None
    try:
        with _session(uri) as (_, _, public_handle):
            public = _public_key(public_handle)
    except (ValueError, OSError, PyKCS11.PyKCS11Error) as exc:  # OSError: pin-source
        why = str(exc) or "the module did not load"
        raise KeyFileError(
            f"cannot use the PKCS#11 key {_redacted(uri)}: {why}. Check the token label, the "
            "object label or id, module-path and the PIN (pin-source or pin-value)"
        ) from None
    if public.curve.name != "secp256r1":
        raise KeyFileError(f"{_redacted(uri)} is not an ECDSA P-256 key; exante signs with P-256")
    return Pkcs11Signer(key_id(public), uri, public)


@contextmanager
def _session(uri: str):
    """(session, private key, public key) of the URI's key pair, logged in; closed on exit."""
    import PyKCS11
    from model_signing._signing.pkcs11uri import Pkcs11URI

    parsed = Pkcs11URI()
    parsed.parse(uri)
    parsed.set_allow_any_module(True)
    pin, module, slot = parsed.get_login_parameters()
    lib = PyKCS11.PyKCS11Lib().load(pkcs11dll_filename=module)
    session = lib.openSession(_slot(lib, slot, parsed.get_path_attribute("token")))
    logged_in = False
    try:
        if pin is not None:
            logged_in = _login(session, pin)
        keyid, label = parsed.get_keyid_and_label()
        private = _find(session, PyKCS11.CKO_PRIVATE_KEY, label, keyid)
        yield session, private, _find(session, PyKCS11.CKO_PUBLIC_KEY, label, keyid)
    finally:
        if logged_in:
            session.logout()
        session.closeSession()


def _slot(lib, slot: int, token: str | None) -> int:
    if slot >= 0:
        return slot
    if token is None:
        raise ValueError("the URI names neither a token nor a slot-id")
    for candidate in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(candidate).label.strip() == token:
            return candidate
    raise ValueError(f"no token labelled {token!r} in any slot")


def _login(session, pin: str) -> bool:
    """Log in; False if this process is logged in already (by another session)."""
    import PyKCS11

    try:
        session.login(pin)
    except PyKCS11.PyKCS11Error as exc:
        if exc.value == PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
            return False
        raise
    return True


def _find(session, cls: int, label: str | None, keyid: bytes | None):
    import PyKCS11

    template = [(PyKCS11.CKA_CLASS, cls)]
    if label is not None:
        template.append((PyKCS11.CKA_LABEL, label))
    if keyid is not None:
        template.append((PyKCS11.CKA_ID, tuple(keyid)))
    found = session.findObjects(template)
    if len(found) != 1:
        kind = "private" if cls == PyKCS11.CKO_PRIVATE_KEY else "public"
        raise ValueError(f"{len(found)} {kind} keys match the URI, not one")
    return found[0]


def _public_key(handle) -> ec.EllipticCurvePublicKey:
    from model_signing._signing.sign_pkcs11 import encode_ec_public_key  # reads EC_POINT

    key = serialization.load_der_public_key(encode_ec_public_key(handle))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the key is not an elliptic-curve key")
    return key


def _redacted(uri: str) -> str:
    """The URI without a pin-value: error messages end up in logs."""
    head, sep, query = uri.partition("?")
    kept = [q for q in query.split("&") if not q.startswith("pin-value=")]
    return head + (sep + "&".join(kept) if kept else "")
