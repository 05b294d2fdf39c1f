"""The pre-registered verification policy: parsed strictly, hashed, and judged by its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from verify.policy import POLICY_FILE, VerificationPolicyError, load_policy

REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_policy_loads_and_its_digest_is_the_file_sha256(tmp_path):
    import hashlib

    loaded = load_policy(REPO)
    assert loaded.sha256 == hashlib.sha256((REPO / POLICY_FILE).read_bytes()).hexdigest()
    assert loaded.policy.reference == "retrain"
    assert {"knowmem_em", "privleak", "exposure_bits", "relearn_em"} <= set(loaded.policy.checks)


def _write(root: Path, text: str) -> None:
    (root / POLICY_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / POLICY_FILE).write_text(text)


def test_a_moved_threshold_changes_the_digest(tmp_path):
    text = (REPO / POLICY_FILE).read_text()
    _write(tmp_path, text)
    before = load_policy(tmp_path).sha256
    _write(tmp_path, text.replace("max_above: 0.05", "max_above: 0.5", 1))
    assert load_policy(tmp_path).sha256 != before


@pytest.mark.parametrize(
    "text, needle",
    [
        ("version: 1\nreference: retrain\nchecks: {x: {max_above: 1, min: 0}}\n", "exactly one"),
        ("version: 1\nreference: retrain\nchecks: {x: {}}\n", "exactly one"),
        ("version: 2\nreference: retrain\nchecks: {}\n", "version"),
        ("version: 1\nreference: original\nchecks: {}\n", "reference"),
        ("version: 1\nreference: retrain\nchecks: {}\nthreshold: 3\n", "threshold"),
        ("version: [1\n", "not valid YAML"),
    ],
)
def test_a_malformed_policy_is_refused_with_what_is_wrong(tmp_path, text, needle):
    _write(tmp_path, text)
    with pytest.raises(VerificationPolicyError, match=needle) as exc:
        load_policy(tmp_path)
    assert exc.value.exit_code == 3


def test_a_missing_policy_is_refused(tmp_path):
    with pytest.raises(VerificationPolicyError, match="registered before a run"):
        load_policy(tmp_path)
