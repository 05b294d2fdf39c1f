"""`exante verify check`: a report judged by one policy does not vouch for another on disk."""

from __future__ import annotations

import pytest

from lineage._canonical import file_sha256
from lineage.signing import generate_key, load_signer
from tests._cli import exante
from tests.conftest import REPO
from verify.policy import POLICY_FILE
from verify.report import PolicyDriftError, check_policy_on_disk, sign_report


@pytest.fixture
def signed(tmp_path):
    generate_key(tmp_path / "k.pem", tmp_path / "policies/trusted_keys", name="t")
    policy = tmp_path / POLICY_FILE
    policy.write_text((REPO / POLICY_FILE).read_text())
    (tmp_path / "results.json").write_text("{}")
    predicate = {"policy": {"path": POLICY_FILE.as_posix(), "sha256": file_sha256(policy)},
                 "summary": {"exact": {"verdict": "pass"}, "retrain": {"verdict": "pass"}},
                 "power": {"planted": {"must": "fail", "verdict": "fail", "ok": True},
                           "heldout": {"must": "pass", "verdict": "pass", "ok": True}}}  # fmt: skip
    signer = load_signer(tmp_path / "k.pem")
    sign_report(root=tmp_path, files=[tmp_path / "results.json"], predicate=predicate,
                signer=signer, out=tmp_path / "report.dsse.json")  # fmt: skip
    return tmp_path


def test_the_check_passes_while_the_policy_is_the_one_the_report_names(signed):
    r = exante(signed, "verify", "check", "report.dsse.json")
    assert r.code == 0, r.err
    assert "the policy on disk is the one it names" in r.out


def test_the_check_fails_when_the_policy_was_edited_after_the_report(signed):
    path = signed / POLICY_FILE
    path.write_text(path.read_text().replace("max_above: 0.05", "max_above: 0.5", 1))
    r = exante(signed, "verify", "check", "report.dsse.json")
    assert r.code == 1
    assert "PolicyDriftError" in r.err and "differs from the policy its verdicts" in r.err


def test_a_missing_policy_or_a_report_naming_none_fails(signed):
    (signed / POLICY_FILE).unlink()
    r = exante(signed, "verify", "check", "report.dsse.json")
    assert r.code == 1 and "is missing" in r.err
    with pytest.raises(PolicyDriftError, match="names no policy"):
        check_policy_on_disk({"policy": {"path": "../x", "sha256": "00"}}, root=signed)
