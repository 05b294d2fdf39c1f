"""The bundle and rotated keys: a signing time derived from the inputs, key metadata honoured."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lineage._canonical import sha256_hex
from lineage._keymeta import KeyValidity, write_meta
from lineage.signing import generate_key, load_signer, make_statement, sign_envelope
from verify.audit._files import INDEX, write_tar_gz
from verify.audit.bundle import PREDICATE_TYPE, bundle_signed_at
from verify.audit.checks import verify_bundle

KEYS = "policies/trusted_keys"


@pytest.fixture
def project(tmp_path):
    generate_key(tmp_path / "k.pem", tmp_path / KEYS, name="k")
    return tmp_path, load_signer(tmp_path / "k.pem")


def _signed(signer, **predicate) -> bytes:
    payload = make_statement(
        {}, "https://exante.dev/x/v1", predicate, signed_at="2026-01-01T00:00:00+00:00"
    )
    return json.dumps(sign_envelope(payload, signer)).encode()


def test_the_index_time_is_the_latest_time_its_inputs_claim(project, monkeypatch):
    root, signer = project
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    files = {
        "data/manifest.dsse.json": _signed(signer, created_at="2026-03-01T12:00:00+00:00"),
        "data/receipts/r.dsse.json": _signed(signer, issued_at="2026-04-01T00:00:00+00:00"),
        "data/other.json": b"{}",
    }
    assert bundle_signed_at(root, files, signer) == "2026-04-01T00:00:00+00:00"
    assert bundle_signed_at(root, dict(reversed(files.items())), signer) == (
        "2026-04-01T00:00:00+00:00"
    )
    # a key rotated in later: not before its validity starts
    later = datetime(2026, 5, 1, tzinfo=UTC)
    write_meta(root / KEYS / "k.meta.yaml", KeyValidity(signer.keyid, not_before=later))
    assert bundle_signed_at(root, files, signer) == later.isoformat()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1780272000")
    assert bundle_signed_at(root, files, signer) == "2026-06-01T00:00:00+00:00"


def _bundle(root, signer, *, meta: KeyValidity | None):
    files = {f"{KEYS}/k.pub.pem": (root / KEYS / "k.pub.pem").read_bytes()}
    if meta is not None:
        write_meta(root / "m.yaml", meta)
        files[f"{KEYS}/k.meta.yaml"] = (root / "m.yaml").read_bytes()
    subjects = {n: sha256_hex(d) for n, d in files.items()}
    payload = make_statement(subjects, PREDICATE_TYPE, {"schema_version": 1},
                             signed_at="2026-06-01T00:00:00+00:00")  # fmt: skip
    files[INDEX] = json.dumps(sign_envelope(payload, signer)).encode()
    path = root / "bundle.tar.gz"
    path.write_bytes(write_tar_gz(path, files))
    return path


def _index_check(path, **kwargs):
    return next(c for c in verify_bundle(path, **kwargs).checks if c.name.startswith("index"))


def test_a_bundle_signed_by_a_key_it_marks_compromised_fails_its_index(project):
    root, signer = project
    ok = _index_check(_bundle(root, signer, meta=None))
    assert ok.ok, ok.problems
    revoked = KeyValidity(signer.keyid, revoked_at=datetime(2026, 1, 1, tzinfo=UTC),
                          compromised=True, reason="leaked")  # fmt: skip
    bad = _index_check(_bundle(root, signer, meta=revoked))
    assert not bad.ok and "compromised" in bad.problems[0]


def test_metadata_beside_a_key_given_with_key_is_honoured(project):
    root, signer = project
    path = _bundle(root, signer, meta=None)
    assert _index_check(path, keys=[root / KEYS / "k.pub.pem"]).ok
    expired = KeyValidity(signer.keyid, not_after=datetime(2026, 2, 1, tzinfo=UTC))
    write_meta(root / KEYS / "k.meta.yaml", expired)
    check = _index_check(path, keys=[root / KEYS / "k.pub.pem"])
    assert not check.ok and "rotated out" in check.problems[0]
