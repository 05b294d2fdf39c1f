"""The signed verification report: verifies as signed, and names every file it covers."""

from __future__ import annotations

import json
import re

import pytest

from lineage.errors import ArtifactDigestError, EnvelopeFormatError, UntrustedKeyError
from verify.report import sign_report, verify_report


@pytest.fixture
def signed(tmp_path, keys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "results.json").write_text('{"verdict": "fail"}')
    files = [tmp_path / "models" / "model.safetensors", tmp_path / "results.json"]
    predicate = {"policy": {"sha256": "ab" * 32}, "summary": {"exact": {"verdict": "pass"}}}
    sign_report(root=tmp_path, files=files, predicate=predicate, signer=keys.signer,
                out=tmp_path / "report.dsse.json")  # fmt: skip
    return tmp_path


def test_a_signed_report_verifies_and_returns_its_predicate(signed, keys):
    p = verify_report(signed / "report.dsse.json", root=signed, trusted=keys.trusted)
    assert p["summary"] == {"exact": {"verdict": "pass"}}
    assert p["schema_version"] == 1


@pytest.mark.parametrize("name", ["results.json", "models/model.safetensors"])
def test_a_modified_file_is_caught(signed, keys, name):
    (signed / name).write_bytes((signed / name).read_bytes() + b" ")
    with pytest.raises(ArtifactDigestError, match=re.escape(f"{name}: modified")):
        verify_report(signed / "report.dsse.json", root=signed, trusted=keys.trusted)


def test_a_missing_file_is_caught(signed, keys):
    (signed / "results.json").unlink()
    with pytest.raises(ArtifactDigestError, match=re.escape("results.json: missing")):
        verify_report(signed / "report.dsse.json", root=signed, trusted=keys.trusted)


def test_an_edited_verdict_breaks_the_signature(signed, keys):
    import base64

    path = signed / "report.dsse.json"
    env = json.loads(path.read_text())
    payload = base64.b64decode(env["payload"]).replace(b'"pass"', b'"fail"')
    env["payload"] = base64.b64encode(payload).decode()
    path.write_text(json.dumps(env))
    with pytest.raises(Exception, match="does not match"):
        verify_report(path, root=signed, trusted=keys.trusted)


def test_a_report_by_an_untrusted_key_is_refused(tmp_path, keys):
    (tmp_path / "a").write_text("x")
    sign_report(root=tmp_path, files=[tmp_path / "a"], predicate={}, signer=keys.stranger,
                out=tmp_path / "r.json")  # fmt: skip
    with pytest.raises(UntrustedKeyError):
        verify_report(tmp_path / "r.json", root=tmp_path, trusted=keys.trusted)


def test_another_statement_type_is_refused(tmp_path, keys):
    from lineage.signing import make_statement, sign_envelope, write_envelope

    payload = make_statement({"a": "00" * 32}, "https://example.org/other/v1", {})
    write_envelope(tmp_path / "r.json", sign_envelope(payload, keys.signer))
    with pytest.raises(EnvelopeFormatError, match="predicateType"):
        verify_report(tmp_path / "r.json", root=tmp_path, trusted=keys.trusted)
