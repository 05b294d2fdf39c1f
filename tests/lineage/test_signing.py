"""Keys, DSSE envelopes and in-toto Statements: round trips, known answers, failures, fuzz."""

from __future__ import annotations

import base64
import contextlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage.errors import (
    EnvelopeFormatError,
    ForeignSignatureError,
    KeyFileError,
    LineageError,
    SignatureMismatchError,
    UntrustedKeyError,
)
from lineage.signing import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    Signer,
    generate_key,
    load_signer,
    load_trusted_keys,
    make_statement,
    pae,
    parse_statement,
    read_envelope,
    sign_envelope,
    subjects_of,
    verify_envelope,
    write_envelope,
)

GOLDEN = Path(__file__).parent / "golden"
PREDICATE = "https://exante.dev/attestations/manifest/v1"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, dict, Signer]:
    """A trusted signer, the trusted keys, and a signer nobody trusts."""
    root = tmp_path_factory.mktemp("keys")
    generate_key(root / "ok.key.pem", root / "trusted", name="ok")
    generate_key(root / "stranger.key.pem", root / "elsewhere", name="stranger")
    return (
        load_signer(root / "ok.key.pem"),
        load_trusted_keys(root / "trusted"),
        load_signer(root / "stranger.key.pem"),
    )


# -- keys ----------------------------------------------------------------------


def test_generate_key(tmp_path: Path) -> None:
    private = tmp_path / ".exante" / "keys" / "signing.key.pem"
    keyid = generate_key(private, tmp_path / "trusted", name="dev")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "trusted" / "dev.pub.pem").is_file()
    assert load_signer(private).keyid == keyid
    assert list(load_trusted_keys(tmp_path / "trusted")) == [keyid]
    assert len(keyid) == 64


def test_generate_key_refuses_to_overwrite(tmp_path: Path) -> None:
    private = tmp_path / "signing.key.pem"
    generate_key(private, tmp_path / "trusted", name="dev")
    before = private.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_key(private, tmp_path / "trusted", name="dev2")
    assert private.read_bytes() == before
    assert not (tmp_path / "trusted" / "dev2.pub.pem").exists()


def _other_keys() -> dict:
    return {
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "secp256k1": ec.generate_private_key(ec.SECP256K1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "dsa": dsa.generate_private_key(key_size=1024),
    }


OTHER_KEYS = _other_keys()


@pytest.mark.parametrize("kind", sorted(OTHER_KEYS))
def test_non_p256_private_key_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "signing.key.pem"
    path.write_bytes(
        OTHER_KEYS[kind].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="P-256"):
        load_signer(path)


@pytest.mark.parametrize("kind", sorted(OTHER_KEYS))
def test_non_p256_trusted_key_is_refused(tmp_path: Path, kind: str) -> None:
    public = (
        OTHER_KEYS[kind]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / f"{kind}.pub.pem").write_bytes(public)
    with pytest.raises(KeyFileError, match="P-256"):
        load_trusted_keys(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
    ],
    ids=["empty", "text", "bad-pem", "encrypted"],
)
def test_unreadable_private_key_is_a_key_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "signing.key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError):
        load_signer(path)


def test_missing_keys_are_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="exante keys init"):
        load_signer(tmp_path / "absent.key.pem")
    with pytest.raises(KeyFileError, match="no trusted keys"):
        load_trusted_keys(tmp_path)
    (tmp_path / "broken.pub.pem").write_bytes(b"garbage")
    with pytest.raises(KeyFileError, match="unreadable"):
        load_trusted_keys(tmp_path)


# -- DSSE ----------------------------------------------------------------------


def test_pae_known_answer() -> None:
    """The example of the DSSE v1 protocol specification."""
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t/é", "ü".encode()) == "DSSEv1 4 t/é 2 ü".encode()


def test_envelope_round_trip(keys, tmp_path: Path) -> None:
    signer, trusted, _ = keys
    payload = make_statement({"a.jsonl": "00" * 32}, PREDICATE, {"n": 1})
    envelope = sign_envelope(payload, signer)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == signer.keyid
    assert verify_envelope(envelope, trusted) == payload
    write_envelope(tmp_path / "m.dsse.json", envelope)
    again = read_envelope(tmp_path / "m.dsse.json", what="manifest")
    assert verify_envelope(again, trusted) == payload


def test_any_trusted_signature_is_enough(keys) -> None:
    signer, trusted, stranger = keys
    payload = b"{}"
    envelope = sign_envelope(payload, signer)
    envelope["signatures"].insert(0, sign_envelope(payload, stranger)["signatures"][0])
    assert verify_envelope(envelope, trusted) == payload


def _with_payload(envelope: dict, payload: bytes) -> dict:
    return {**envelope, "payload": base64.b64encode(payload).decode()}


def test_tampered_payload_is_a_signature_mismatch(keys) -> None:
    signer, trusted, _ = keys
    envelope = sign_envelope(b'{"records":3}', signer)
    with pytest.raises(SignatureMismatchError, match="modified after signing"):
        verify_envelope(_with_payload(envelope, b'{"records":4}'), trusted)


def test_signature_from_another_envelope_is_foreign(keys) -> None:
    signer, trusted, _ = keys
    old, new = b'{"version":1}', b'{"version":2}'
    swapped = {**sign_envelope(new, signer), "signatures": sign_envelope(old, signer)["signatures"]}
    with pytest.raises(ForeignSignatureError, match="copied from another file"):
        verify_envelope(swapped, trusted, known_payloads=[old, new])
    # Without the other payload the swap cannot be told from an edit.
    with pytest.raises(SignatureMismatchError):
        verify_envelope(swapped, trusted)


def test_untrusted_key_is_refused(keys) -> None:
    _, trusted, stranger = keys
    envelope = sign_envelope(b"{}", stranger)
    with pytest.raises(UntrustedKeyError, match="policies/trusted_keys"):
        verify_envelope(envelope, trusted)


def test_other_payload_type_is_refused(keys) -> None:
    signer, trusted, _ = keys
    envelope = sign_envelope(b"{}", signer, payload_type="text/plain")
    with pytest.raises(EnvelopeFormatError, match="payloadType"):
        verify_envelope(envelope, trusted)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: {k: v for k, v in e.items() if k != "payload"},
        lambda e: {**e, "payload": "not base64!"},
        lambda e: {**e, "signatures": []},
        lambda e: {**e, "signatures": ["sig"]},
        lambda e: {**e, "signatures": [{**e["signatures"][0], "sig": "%%%"}]},
        lambda e: [e],
    ],
    ids=[
        "no-payload",
        "payload-not-base64",
        "no-signatures",
        "entry-not-object",
        "sig-bad",
        "list",
    ],
)
def test_malformed_envelope_is_a_format_error(keys, mangle) -> None:
    signer, trusted, _ = keys
    with pytest.raises(EnvelopeFormatError):
        verify_envelope(mangle(sign_envelope(b"{}", signer)), trusted)


# -- in-toto Statement -------------------------------------------------------------

GOLDEN_SUBJECTS = {
    "data/records/wiki.jsonl": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "data/manifest.leaves": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "data/records/books.jsonl": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
}
GOLDEN_PREDICATE = {
    "schema_version": 1,
    "version": 3,
    "previous_manifest_sha256": None,
    "record_count": 2,
    "merkle": {"algorithm": "RFC6962-SHA256", "root": "ab" * 32, "size": 2},
    "sources": {"wiki": {"license": "CC-BY-SA-4.0", "title": "Café «Übersicht»"}},
    "flags": [True, False, 0.5],
}


GOLDEN_TIME = "2026-12-02T11:30:00+00:00"


def test_statement_matches_golden_bytes() -> None:
    """Sorted keys and subjects, no whitespace, raw UTF-8: any drift changes every signature."""
    statement = make_statement(GOLDEN_SUBJECTS, PREDICATE, GOLDEN_PREDICATE, signed_at=GOLDEN_TIME)
    assert statement == (GOLDEN / "statement_v1.json").read_bytes()


def test_statement_round_trip() -> None:
    payload = make_statement(GOLDEN_SUBJECTS, PREDICATE, GOLDEN_PREDICATE, signed_at=GOLDEN_TIME)
    statement = parse_statement(payload, PREDICATE)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicate"] == {**GOLDEN_PREDICATE, "signed_at": GOLDEN_TIME}
    assert subjects_of(statement) == GOLDEN_SUBJECTS
    assert [s["name"] for s in statement["subject"]] == sorted(GOLDEN_SUBJECTS)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xff\xfe\x00", "not JSON"),
        (b"[" * 100_000, "not JSON"),  # deeper than the parser's recursion limit
        (b"1" * 5000, "not JSON"),  # longer than Python's int-from-string limit
        (b"[]", "not an in-toto Statement"),
        (json.dumps({"_type": STATEMENT_TYPE, "predicateType": "x"}).encode(), "predicateType"),
        (
            json.dumps(
                {"_type": STATEMENT_TYPE, "predicateType": PREDICATE, "subject": [{"name": 1}]}
            ).encode(),
            "malformed",
        ),
    ],
    ids=["bad-utf8", "deep", "huge-int", "list", "other-type", "bad-subject"],
)
def test_malformed_statement_is_a_format_error(payload: bytes, match: str) -> None:
    with pytest.raises(EnvelopeFormatError, match=match):
        parse_statement(payload, PREDICATE)


@pytest.mark.parametrize("content", [b"[" * 100_000, b"1" * 5000, b"\xff", b"[]", b"{"])
def test_unreadable_envelope_file_is_a_format_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "e.json").write_bytes(content)
    with pytest.raises(EnvelopeFormatError):
        read_envelope(tmp_path / "e.json", what="manifest")


# -- fuzz: hostile input fails with a LineageError, never a crash --------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "AAAA", "\ud800", PAYLOAD_TYPE, "e30="]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
base64_text = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())


def _mostly(strategy, otherwise):
    """``strategy`` three times in four: deep checks are reached only by well-shaped input."""
    return st.one_of(strategy, strategy, strategy, otherwise)


def _envelopes(keyid: str):
    """Envelope-shaped dicts (to reach the signature checks) and anything else JSON can hold."""
    entry = st.fixed_dictionaries(
        {
            "keyid": _mostly(st.just(keyid), json_values),
            "sig": _mostly(base64_text, json_values),
        }
    )
    shaped = st.fixed_dictionaries(
        {
            "payload": _mostly(base64_text, json_values),
            "payloadType": _mostly(st.just(PAYLOAD_TYPE), json_values),
            "signatures": _mostly(st.lists(_mostly(entry, json_values), max_size=3), json_values),
        }
    )
    return st.one_of(shaped, shaped, shaped, shaped, shaped, shaped, shaped, json_values)


def _only_lineage_errors(call) -> None:
    with contextlib.suppress(LineageError):
        call()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_verify_envelope(keys, data: st.DataObject) -> None:
    signer, trusted, _ = keys
    envelope = data.draw(_envelopes(signer.keyid))
    known = data.draw(st.lists(st.binary(max_size=20), max_size=2))
    _only_lineage_errors(lambda: verify_envelope(envelope, trusted, known_payloads=known))


def _flip(text: str, at: int) -> str:
    """``text`` (base64) with one bit of its decoded bytes flipped, re-encoded."""
    try:
        data = bytearray(base64.b64decode(text, validate=True))
    except ValueError:  # an earlier mutation left no base64 here
        return text
    if not data:
        return text
    data[at % len(data)] ^= 1 << (at % 8)
    return base64.b64encode(bytes(data)).decode()


mutations = st.one_of(
    st.tuples(st.sampled_from(["payload", "payloadType", "signatures"]), json_values),
    st.tuples(st.sampled_from(["keyid", "sig"]), json_values),
    st.tuples(st.sampled_from(["flip-payload", "flip-sig"]), st.integers(0, 1000)),
)


def _mutate(envelope: dict, name: str, value) -> None:
    signatures = envelope["signatures"]
    entry = signatures[0] if isinstance(signatures, list) and signatures else {}
    if not isinstance(entry, dict):
        return
    if name == "flip-payload" and isinstance(envelope["payload"], str):
        envelope["payload"] = _flip(envelope["payload"], value)
    elif name == "flip-sig" and isinstance(entry.get("sig"), str):
        entry["sig"] = _flip(entry["sig"], value)
    elif name in ("keyid", "sig"):
        entry[name] = value
    elif not name.startswith("flip"):
        envelope[name] = value


@settings(max_examples=300, deadline=None)
@given(changes=st.lists(mutations, min_size=1, max_size=3))
def test_fuzz_mutated_envelope(keys, changes: list) -> None:
    """A real envelope, changed in a few places: always a LineageError, never accepted."""
    signer, trusted, _ = keys
    old = make_statement({"a": "00" * 32}, PREDICATE, {"version": 1})
    payload = make_statement({"a": "00" * 32}, PREDICATE, {"version": 2})
    envelope = json.loads(json.dumps(sign_envelope(payload, signer)))
    for name, value in changes:
        _mutate(envelope, name, value)
    try:
        accepted = verify_envelope(envelope, trusted, known_payloads=[old, payload])
    except LineageError:
        return
    assert accepted == payload  # only a no-op change (e.g. a repeated keyid) may verify


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_envelope_bytes(keys, raw: bytes, tmp_path_factory) -> None:
    """Bytes as they come from a file: read_envelope decodes, verify_envelope judges."""
    _, trusted, _ = keys
    path = tmp_path_factory.getbasetemp() / "fuzz.dsse.json"
    path.write_bytes(raw)
    _only_lineage_errors(lambda: verify_envelope(read_envelope(path, what="e"), trusted))
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        decoded = raw
    _only_lineage_errors(lambda: verify_envelope(decoded, trusted))


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"_type": st.just(STATEMENT_TYPE), "predicateType": st.just(PREDICATE)},
        optional={"subject": st.lists(json_values, max_size=2), "predicate": json_values},
    ).map(lambda v: json.dumps(v).encode())
)
def test_fuzz_parse_statement(raw: bytes) -> None:
    _only_lineage_errors(lambda: parse_statement(raw, PREDICATE))
