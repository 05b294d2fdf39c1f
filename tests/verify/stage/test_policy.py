"""The pre-registered verification policy: parsed strictly, hashed, and judged by its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from verify.policy import POLICY_FILE, Check, VerificationPolicyError, judge, load_policy

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


@pytest.mark.parametrize(
    "rule, value, reference, passed",
    [
        ({"max_above": 0.05}, 0.10, 0.06, True),
        ({"max_above": 0.05}, 0.12, 0.06, False),
        ({"max_ratio": 1.25}, 12.4, 10.0, True),
        ({"max_ratio": 1.25}, 12.6, 10.0, False),
        ({"min_ratio": 0.8}, 4.0, 5.0, True),
        ({"min_ratio": 0.8}, 1.0, 5.0, False),
    ],
)
def test_each_rule_compares_with_the_reference(rule, value, reference, passed):
    v = judge("knowmem_em", Check(**rule), subject="s", attack="none", value=value,
              reference=reference)  # fmt: skip
    assert v.passed is passed
    assert (v.value, v.reference, v.threshold) == (value, reference, next(iter(rule.values())))


def test_relative_statistics_need_no_reference_value():
    assert judge("privleak", Check(max_abs=10), subject="s", attack="none", value=-9.0,
                 reference=None).passed  # fmt: skip
    assert not judge("privleak", Check(max_abs=10), subject="s", attack="none", value=40.0,
                     reference=None).passed  # fmt: skip
    assert not judge("forget_quality", Check(min=0.05), subject="s", attack="none", value=0.01,
                     reference=None).passed  # fmt: skip


@pytest.mark.parametrize("value, reference", [(None, 0.1), (0.1, None), (float("nan"), 0.1)])
def test_what_could_not_be_measured_is_never_passed(value, reference):
    v = judge("exposure_bits", Check(max_above=1.0), subject="s", attack="none", value=value,
              reference=reference)  # fmt: skip
    assert v.passed is None
