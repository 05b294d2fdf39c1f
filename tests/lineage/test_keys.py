"""Keys at rest, rotation, revocation and PKCS#11: real keys, real files, a real SoftHSM2 token."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lineage._keymeta import KeyValidity, write_meta
from lineage.errors import KeyFileError, KeyValidityError
from lineage.keyring import assert_may_sign, rotate
from lineage.signing import (
    PASSPHRASE_ENV,
    generate_key,
    load_signer,
    load_trusted_keys,
    make_statement,
    sign_envelope,
    verify_envelope,
)
from tests._cli import exante

PREDICATE = "https://exante.dev/attestations/test/v1"
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


def _envelope(signer, *, signed_at: str | None) -> dict:
    payload = make_statement({"a": "00" * 32}, PREDICATE, {"n": 1}, signed_at=signed_at)
    return sign_envelope(payload, signer)


def _unsigned_time_envelope(signer) -> dict:
    """A statement as exante wrote them before signed_at existed."""
    payload = (
        b'{"_type":"https://in-toto.io/Statement/v1","predicate":{"n":1},'
        b'"predicateType":"' + PREDICATE.encode() + b'","subject":[]}'
    )
    return sign_envelope(payload, signer)


@pytest.fixture
def key(tmp_path: Path):
    """A signer and its trusted directory (no metadata yet)."""
    generate_key(tmp_path / "k.pem", tmp_path / "trusted", name="k")
    return load_signer(tmp_path / "k.pem"), tmp_path / "trusted"


def _limit(trusted: Path, keyid: str, **fields) -> None:
    write_meta(trusted / "k.meta.yaml", KeyValidity(keyid, **fields))


# -- encrypted keys at rest ---------------------------------------------------------


def test_an_encrypted_key_round_trips_and_is_not_stored_in_the_clear(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    keyid = generate_key(tmp_path / "k.pem", tmp_path / "t", name="k", passphrase=b"correct horse")
    pem = (tmp_path / "k.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_signer(tmp_path / "k.pem", passphrase=b"correct horse").keyid == keyid
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    signer = load_signer(tmp_path / "k.pem")
    assert verify_envelope(_envelope(signer, signed_at=None), load_trusted_keys(tmp_path / "t"))


def test_a_wrong_or_missing_passphrase_is_a_key_file_error(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    generate_key(tmp_path / "k.pem", tmp_path / "t", name="k", passphrase=b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signer(tmp_path / "k.pem", passphrase=b"wrong")
    with pytest.raises(KeyFileError, match=f"set \\${PASSPHRASE_ENV}"):
        load_signer(tmp_path / "k.pem")  # stdin is no terminal under pytest: nobody to ask


def test_cli_wrong_passphrase_exits_3_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "right")
    assert exante(tmp_path, "keys", "init", "--name", "ops").code == 0
    assert (
        (tmp_path / ".exante/keys/signing.key.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    )
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    r = exante(tmp_path, "manifest")
    assert r.code == 3 and "wrong passphrase" in r.err and "Traceback" not in r.err
    monkeypatch.delenv(PASSPHRASE_ENV)
    r = exante(tmp_path, "manifest")
    assert r.code == 3 and "is encrypted and no passphrase was given" in r.err


def test_an_encrypted_key_signs_the_openssf_model_signature(tmp_path, monkeypatch):
    """model_signing reads keys from files: it gets a copy under a one-time password."""
    from training.attest import sign_model_dir, verify_model_dir

    generate_key(tmp_path / "k.pem", tmp_path / "t", name="k", passphrase=b"pw")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv(PASSPHRASE_ENV, "pw")
    sign_model_dir(model, private_key=tmp_path / "k.pem", signature=tmp_path / "m.sig")
    verify_model_dir(model, public_key=tmp_path / "t/k.pub.pem", signature=tmp_path / "m.sig")
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        sign_model_dir(model, private_key=tmp_path / "k.pem", signature=tmp_path / "m.sig")


def test_cli_init_without_a_passphrase_refuses_unless_dev(tmp_path, monkeypatch):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    r = exante(tmp_path, "keys", "init")
    assert r.code == 3 and "--unencrypted" in r.err
    assert not (tmp_path / ".exante/keys/signing.key.pem").exists()
    r = exante(tmp_path, "keys", "init", "--dev", "--if-missing")
    assert r.code == 0 and "DEVELOPMENT SIGNING KEY" in r.out and "NOT encrypted" in r.out
    again = exante(tmp_path, "keys", "init", "--dev", "--if-missing")
    assert again.code == 0 and "UNENCRYPTED" in again.out


# -- validity periods and revocation --------------------------------------------------


def test_a_key_without_metadata_verifies_any_time_and_untimed_statements(key):
    signer, trusted = key
    for envelope in (_envelope(signer, signed_at=_at(0)), _unsigned_time_envelope(signer)):
        assert verify_envelope(envelope, load_trusted_keys(trusted))


def test_a_signature_inside_the_window_verifies_and_outside_fails(key):
    signer, trusted = key
    _limit(trusted, signer.keyid, not_before=T0, not_after=T0 + timedelta(days=10))
    keys = load_trusted_keys(trusted)
    assert verify_envelope(_envelope(signer, signed_at=_at(5)), keys)
    assert verify_envelope(_envelope(signer, signed_at=_at(10)), keys)  # ends inclusive
    with pytest.raises(KeyValidityError, match="before the key became valid"):
        verify_envelope(_envelope(signer, signed_at=_at(-1)), keys)
    with pytest.raises(KeyValidityError, match="after the key's validity ended"):
        verify_envelope(_envelope(signer, signed_at=_at(11)), keys)


def test_a_timeless_statement_fails_against_a_key_with_limits(key):
    signer, trusted = key
    _limit(trusted, signer.keyid, not_before=T0)
    with pytest.raises(KeyValidityError, match="carries no signed_at"):
        verify_envelope(_unsigned_time_envelope(signer), load_trusted_keys(trusted))


def test_revocation_fails_later_signatures_and_keeps_earlier_ones(key):
    signer, trusted = key
    _limit(trusted, signer.keyid, revoked_at=T0, reason="left the team")
    keys = load_trusted_keys(trusted)
    assert verify_envelope(_envelope(signer, signed_at=_at(-1)), keys)
    for late in (_at(0), _at(1)):
        with pytest.raises(KeyValidityError, match=r"revoked .* \(left the team\)"):
            verify_envelope(_envelope(signer, signed_at=late), keys)


def test_a_compromised_key_fails_every_signature_whatever_time_it_claims(key):
    signer, trusted = key
    _limit(trusted, signer.keyid, revoked_at=T0, compromised=True, reason="leaked")
    keys = load_trusted_keys(trusted)
    for envelope in (_envelope(signer, signed_at=_at(-100)), _unsigned_time_envelope(signer)):
        with pytest.raises(KeyValidityError, match="compromised"):
            verify_envelope(envelope, keys)


def test_a_second_signature_by_a_valid_key_still_counts(key, tmp_path):
    signer, trusted = key
    generate_key(tmp_path / "b.pem", trusted, name="b")
    other = load_signer(tmp_path / "b.pem")
    _limit(trusted, signer.keyid, revoked_at=T0, compromised=True)
    envelope = _envelope(signer, signed_at=_at(1))
    with pytest.raises(KeyValidityError):
        verify_envelope(envelope, load_trusted_keys(trusted))
    payload = base64.b64decode(envelope["payload"])
    envelope["signatures"].append(sign_envelope(payload, other)["signatures"][0])
    assert verify_envelope(envelope, load_trusted_keys(trusted)) == payload


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"keyid: abc\n", "malformed"),
        (b"keyid: " + b"a" * 64 + b"\nnot_befor: 2026-01-01T00:00:00Z\n", "malformed"),
        (b"keyid: " + b"a" * 64 + b"\nnot_before: '2026-01-01T00:00:00'\n", "malformed"),
        (b"[: not yaml", "unreadable"),
        (b"keyid: \xff\n", "unreadable"),
    ],
    ids=["short-id", "typo", "naive-time", "yaml", "utf8"],
)
def test_malformed_metadata_is_a_key_file_error(key, content, match):
    _, trusted = key
    (trusted / "k.meta.yaml").write_bytes(content)
    with pytest.raises(KeyFileError, match=match):
        load_trusted_keys(trusted)


def test_two_metadata_files_for_one_key_are_refused(key):
    signer, trusted = key
    write_meta(trusted / "a.meta.yaml", KeyValidity(signer.keyid, not_before=T0))
    write_meta(trusted / "b.meta.yaml", KeyValidity(signer.keyid))
    with pytest.raises(KeyFileError, match="both describe"):
        load_trusted_keys(trusted)


# -- rotation -----------------------------------------------------------------------------


def test_a_signature_made_before_rotation_verifies_with_the_old_key_after_it(
    key, tmp_path, monkeypatch
):
    old, trusted = key
    before = _envelope(old, signed_at=None)  # now, before the rotation
    r = rotate(tmp_path / "k.pem", trusted, name="k2", new_passphrase=lambda: b"pw")
    assert r.old_keyid == old.keyid and r.retired_private.is_file()
    keys = load_trusted_keys(trusted)
    assert verify_envelope(before, keys)
    new = load_signer(tmp_path / "k.pem", passphrase=b"pw")
    assert new.keyid == r.new_keyid
    assert verify_envelope(_envelope(new, signed_at=None), keys)
    late = (r.at + timedelta(seconds=1)).isoformat()  # the retired key, after its period
    with pytest.raises(KeyValidityError, match="rotated out"):
        verify_envelope(_envelope(old, signed_at=late), keys)
    early = (r.at - timedelta(seconds=1)).isoformat()  # the new key, before its period
    with pytest.raises(KeyValidityError, match="before the key became valid"):
        verify_envelope(_envelope(new, signed_at=early), keys)
    assert_may_sign(new, trusted)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(r.at.timestamp()) + 1))  # a second later
    with pytest.raises(KeyFileError, match="may not sign now"):
        assert_may_sign(old, trusted)


def test_rotate_refuses_an_existing_name_and_changes_nothing(key, tmp_path):
    _, trusted = key
    before = sorted(p.name for p in trusted.iterdir())
    with pytest.raises(KeyFileError, match="pick another --name"):
        rotate(tmp_path / "k.pem", trusted, name="k", new_passphrase=lambda: None)
    assert sorted(p.name for p in trusted.iterdir()) == before


def test_cli_rotate_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "pw")
    assert exante(tmp_path, "keys", "init", "--name", "one").code == 0
    old = load_signer(tmp_path / ".exante/keys/signing.key.pem").keyid
    r = exante(tmp_path, "keys", "rotate", "--name", "two")
    assert r.code == 0 and "signs no more" in r.out
    listing = exante(tmp_path, "keys", "list").out
    assert old in listing and "not_after=" in listing and "SHA256:" in listing
    r = exante(tmp_path, "keys", "revoke", old[:12], "--reason", "laptop stolen", "--compromised")
    assert r.code == 0 and "every signature by it now fails" in r.out
    assert "COMPROMISED" in exante(tmp_path, "keys", "list").out
    assert exante(tmp_path, "keys", "revoke", "abc", "--reason", "x").code == 3


def test_source_date_epoch_fixes_signed_at(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780272000")
    assert b'"signed_at":"2026-06-01T00:00:00+00:00"' in make_statement({}, PREDICATE, {})
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(KeyFileError, match="SOURCE_DATE_EPOCH"):
        make_statement({}, PREDICATE, {})


# -- PKCS#11 (SoftHSM2) ------------------------------------------------------------------

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
needs_softhsm = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not SOFTHSM_MODULE.is_file(),
    reason="SoftHSM2 is not installed (Debian package softhsm2; `make test` installs it)",
)


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> dict:
    """A fresh SoftHSM2 token holding one P-256 key pair, in its own config dir."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf), "PATH": "/usr/bin:/bin"}
    key = ec.generate_private_key(ec.SECP256R1())
    pem = root / "import.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for args in (
        ["--init-token", "--free", "--label", "exante", "--pin", "1234", "--so-pin", "5678"],
        ["--import", str(pem), "--token", "exante", "--label", "signing", "--id", "01",
         "--pin", "1234"],
    ):  # fmt: skip
        subprocess.run(["softhsm2-util", *args], env=env, check=True, capture_output=True)
    pem.unlink()  # the key now lives on the token only
    uri = f"pkcs11:token=exante;object=signing?module-path={SOFTHSM_MODULE}&pin-value=1234"
    return {"conf": str(conf), "uri": uri, "public": key.public_key()}


@needs_softhsm
def test_pkcs11_signs_dsse_envelopes_that_verify_with_the_public_key(token, tmp_path, monkeypatch):
    from lineage.signing import TrustedKeys, key_id

    monkeypatch.setenv("SOFTHSM2_CONF", token["conf"])
    signer = load_signer(token["uri"])
    assert signer.keyid == key_id(token["public"])
    assert "1234" not in repr(signer)
    payload = make_statement({"a": "00" * 32}, PREDICATE, {"n": 1})
    envelope = sign_envelope(payload, signer)
    assert verify_envelope(envelope, TrustedKeys({signer.keyid: token["public"]})) == payload


@needs_softhsm
def test_pkcs11_wrong_pin_or_object_is_a_key_file_error(token, monkeypatch):
    monkeypatch.setenv("SOFTHSM2_CONF", token["conf"])
    with pytest.raises(KeyFileError, match="PIN_INCORRECT") as err:
        load_signer(token["uri"].replace("pin-value=1234", "pin-value=9999"))
    assert "9999" not in str(err.value)  # the PIN is not echoed
    with pytest.raises(KeyFileError, match="0 private keys"):
        load_signer(token["uri"].replace("object=signing", "object=nothing"))
    with pytest.raises(KeyFileError, match="No such file"):
        load_signer(token["uri"].replace("pin-value=1234", "pin-source=file:/nonexistent/pin"))


@needs_softhsm
def test_cli_trusts_a_token_key_and_signs_with_it(token, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTHSM2_CONF", token["conf"])
    r = exante(tmp_path, "--key", token["uri"], "keys", "init", "--name", "hsm")
    assert r.code == 0, r.err
    trusted = load_trusted_keys(tmp_path / "policies/trusted_keys")
    signer = load_signer(token["uri"])
    assert list(trusted) == [signer.keyid]
    assert verify_envelope(_envelope(signer, signed_at=None), trusted)


@needs_softhsm
def test_pkcs11_signs_the_openssf_model_signature(token, tmp_path, monkeypatch):
    """The model signature on the token too (here, beside the other token tests: one token
    per process, as SoftHSM2 reads its config once)."""
    from cryptography.hazmat.primitives import serialization

    from training.attest import sign_model_dir, verify_model_dir

    monkeypatch.setenv("SOFTHSM2_CONF", token["conf"])
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights" * 100)
    (model / "config.json").write_text("{}")
    public = tmp_path / "hsm.pub.pem"
    public.write_bytes(
        token["public"].public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    sig = tmp_path / "model.sig"
    sign_model_dir(model, private_key=load_signer(token["uri"]), signature=sig)
    verify_model_dir(model, public_key=public, signature=sig)
    sign_model_dir(model, private_key=token["uri"], signature=sig)  # the URI works as well
    verify_model_dir(model, public_key=public, signature=sig)


def test_a_trusted_key_of_an_unknown_algorithm_is_bad_input_naming_the_file(tmp_path):
    from tests.verify.audit.test_hostile import _unknown_key_type

    (tmp_path / "odd.pub.pem").write_bytes(_unknown_key_type())
    with pytest.raises(KeyFileError, match=r"odd\.pub\.pem is unreadable") as info:
        load_trusted_keys(tmp_path)
    assert info.value.exit_code == 3
