"""The policy's calibration section, the derived seeds and the baseline names they require."""

from __future__ import annotations

from pathlib import Path

import pytest

from exante.params import Params
from tests.conftest import REPO
from verify import baselines
from verify.baselines import BaselineNameError, info_file, required
from verify.config import VerifyParams
from verify.policy import POLICY_FILE, VerificationPolicyError, load_policy
from verify.seeds import calibration_seeds, heldout_seed, keyed_choice

SHIPPED = (REPO / POLICY_FILE).read_text()
CALIBRATION = """calibration:
  references: 3        # K retrain references with different seeds
  alpha: 0.05
  correction: bonferroni
  bootstrap: 1000
"""


def _write(root: Path, text: str) -> None:
    (root / POLICY_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / POLICY_FILE).write_text(text)


def test_the_shipped_policy_pre_registers_a_small_calibration():
    c = load_policy(REPO).policy.calibration
    assert 2 <= c.references <= 3  # each extra reference is one forget-shard retrain
    assert 0 < c.alpha <= 0.05 and c.correction == "bonferroni"
    assert c.bootstrap >= 100
    assert CALIBRATION.splitlines()[0] in SHIPPED


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("references: 3", "references: 1", "calibration.references"),
        ("alpha: 0.05", "alpha: 0", "calibration.alpha"),
        ("alpha: 0.05", "alpha: 1.0", "calibration.alpha"),
        ("correction: bonferroni", "correction: fdr", "calibration.correction"),
        ("bootstrap: 1000", "bootstrap: 99", "calibration.bootstrap"),
        ("bootstrap: 1000", "bootstrap: 1000\n  seeds: [1, 2]", "calibration.seeds"),
        (CALIBRATION, "", "calibration: Field required"),
    ],
)
def test_a_bad_calibration_section_is_refused_naming_the_field(tmp_path, old, new, needle):
    text = SHIPPED.split("calibration:")[0] + CALIBRATION + "checks:" + SHIPPED.split("checks:")[1]
    _write(tmp_path, text)
    load_policy(tmp_path)  # the rewritten policy itself is valid
    _write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(VerificationPolicyError, match=needle) as exc:
        load_policy(tmp_path)
    assert exc.value.exit_code == 3


def test_only_the_correction_the_judging_implements_is_accepted(tmp_path):
    _write(tmp_path, SHIPPED.replace("correction: bonferroni", "correction: holm"))
    with pytest.raises(VerificationPolicyError, match="correction") as exc:
        load_policy(tmp_path)
    assert exc.value.exit_code == 3


@pytest.mark.parametrize("train_seed", [0, 1, 1234, 2**31 - 1])
def test_seeds_are_distinct_from_each_other_and_from_the_training_seed(train_seed):
    seeds = calibration_seeds(train_seed, 6)
    held = heldout_seed(train_seed)
    assert len(seeds) == 5 and len(set(seeds)) == 5
    assert train_seed not in seeds and held not in seeds and held != train_seed
    assert all(0 <= s < 2**31 for s in [*seeds, held])


def test_seeds_are_deterministic_and_raising_k_keeps_those_drawn():
    assert calibration_seeds(1234, 3) == calibration_seeds(1234, 3)
    assert heldout_seed(1234) == heldout_seed(1234)
    assert calibration_seeds(1234, 4)[:2] == calibration_seeds(1234, 3)
    assert calibration_seeds(1234, 2) != calibration_seeds(1235, 2)
    assert calibration_seeds(1234, 1) == []


def test_the_keyed_choice_depends_on_the_key_not_on_the_order():
    ids = [f"crm/p{i:03d}-city" for i in range(20)]
    assert keyed_choice(7, ids) == keyed_choice(7, list(reversed(ids)))
    assert len({keyed_choice(k, ids) for k in range(10)}) > 1


def test_required_names_every_baseline_of_the_params_and_policy():
    policy = load_policy(REPO)
    params = Params(verify=VerifyParams(methods=("ga", "npo")))
    k = policy.policy.calibration.references
    calib = [f"calib:{s}" for s in calibration_seeds(params.train.seed, k)]
    assert required(params, policy) == ["retrain", "exact", "approx:ga", "approx:npo", *calib,
                                        "heldout", "planted"]  # fmt: skip
    assert required(params, policy.policy) == required(params, policy)


def test_each_name_has_its_own_directory(tmp_path):
    names = ["retrain", "exact", "approx:ga", "calib:17", "calib:18", "heldout", "planted"]
    dirs = {info_file(tmp_path, n).parent for n in names}
    assert len(dirs) == len(names)
    assert info_file(tmp_path, "calib:17") == tmp_path / "models/verify/calib/17/baseline.json"
    assert baselines.model_dir(tmp_path, "approx:ga") == tmp_path / "models/verify/approx/ga/model"


@pytest.mark.parametrize("name", ["calib", "calib:x", "heldout:1", "approx:", "original", ""])
def test_an_unknown_baseline_name_is_bad_input(tmp_path, name):
    with pytest.raises(BaselineNameError) as exc:
        info_file(tmp_path, name)
    assert exc.value.exit_code == 3


def test_dvc_reruns_a_baseline_whenever_its_freshness_check_would_refuse_it():
    """Every baseline stage lists the registration, the stamped code and all train/verify params."""
    import yaml

    from verify.provenance import CODE, REGISTRATION

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    stage = stages["verify_baselines"]
    assert {*CODE, REGISTRATION.as_posix()} <= set(stage["deps"])
    assert {"train", "verify"} <= set(stage["params"])
    outs = {next(iter(o)): o[next(iter(o))] for o in stage["outs"]}
    assert set(outs) == {f"models/verify/{n}" for n in
                         ("retrain", "exact", "approx/ga", "approx/gd", "approx/npo", "calib",
                          "heldout", "planted")}  # fmt: skip
    assert all(o == {"persist": True} for o in outs.values())  # fresh ones are kept as built
    assert list(stages).index("verify_register") < list(stages).index("verify_baselines")
    outs = stages["verify_register"]["outs"][0]
    assert REGISTRATION.as_posix() in outs
