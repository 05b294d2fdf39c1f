"""Registration before baselines, stamped baselines, stale ones refused: on real tiny trainings."""

from __future__ import annotations

import json

import pytest

from lineage.errors import VerificationError
from lineage.signing import generate_key, load_signer
from tests.verify.baselines.conftest import Tiny, make_tiny
from training.checkpoints import Checkpoint
from verify import baselines
from verify.policy import POLICY_FILE, load_policy
from verify.provenance import (
    REGISTRATION,
    RegistrationError,
    StaleBaselineError,
    check_registration,
    register,
)
from verify.seeds import calibration_seeds


@pytest.fixture(scope="module")
def built(tiny: Tiny) -> Tiny:
    """Registered, then retrain, planted and one calibration reference built (~5 s)."""
    register(tiny.root, tiny.params, tiny.policy, tiny.signer)
    seed = calibration_seeds(tiny.params.train.seed, 2)[0]
    for name in ("retrain", "planted", f"calib:{seed}"):
        baselines.build(tiny.root, name, tiny.params, tiny.policy, tiny.fs)
    return tiny


def _seen(root, name) -> set[str]:
    return set(Checkpoint(baselines.model_dir(root, name)).meta["records"])


def test_the_registration_is_signed_and_names_the_policy_and_seeds(built):
    got = check_registration(built.root, built.policy, params=built.params)
    assert got["policy"] == {"path": POLICY_FILE.as_posix(), "sha256": built.policy.sha256}
    k = built.policy.policy.calibration.references
    assert got["calibration_seeds"] == calibration_seeds(built.params.train.seed, k)
    before = (built.root / REGISTRATION).read_bytes()
    assert register(built.root, built.params, built.policy, built.signer)[1] is False
    assert (built.root / REGISTRATION).read_bytes() == before  # unchanged plan: same file


def test_a_baseline_records_params_code_inputs_and_registration(built):
    info = json.loads(baselines.info_file(built.root, "retrain").read_text())
    p = info["provenance"]
    assert p["params"]["train"]["seed"] == built.params.train.seed
    assert p["params"]["verify"]["forget_people"] == 2
    assert len(p["code"]["sha256"]) == 64
    assert {"shard_records", "base_model", "forget_set"} <= set(p["inputs"])
    assert p["registration_sha256"] == __import__("hashlib").sha256(
        (built.root / REGISTRATION).read_bytes()).hexdigest()  # fmt: skip
    assert not any("wall" in k or "time" in k for k in info)  # no wall clock in a DVC output
    for name in ("retrain", "planted"):
        baselines.check_fresh(built.root, name, built.params, built.policy, built.fs)


def test_the_planted_baseline_saw_the_retrain_set_plus_exactly_one_forget_record(built):
    planted = json.loads(baselines.info_file(built.root, "planted").read_text())
    extra = _seen(built.root, "planted") - _seen(built.root, "retrain")
    assert extra == {planted["planted_record"]}
    assert _seen(built.root, "retrain") <= _seen(built.root, "planted")
    assert planted["planted_record"] in {p.record_id for p in built.fs.forget_probes}
    assert planted["planted_record"] == baselines.planted_record(built.fs, built.params.verify.seed)


def test_a_calibration_reference_differs_from_the_reference_only_by_its_seed(built):
    seed = calibration_seeds(built.params.train.seed, 2)[0]
    info = json.loads(baselines.info_file(built.root, f"calib:{seed}").read_text())
    assert info["train_seed"] == seed != built.params.train.seed
    assert _seen(built.root, f"calib:{seed}") == _seen(built.root, "retrain")
    a = (baselines.model_dir(built.root, "retrain") / "model.safetensors").read_bytes()
    b = (baselines.model_dir(built.root, f"calib:{seed}") / "model.safetensors").read_bytes()
    assert a != b


def test_a_baseline_built_under_other_training_params_is_refused_naming_it(built):
    shard = built.params.train.shard.model_copy(update={"lr": 1e-2})
    params = built.params.model_copy(
        update={"train": built.params.train.model_copy(update={"shard": shard})}
    )
    with pytest.raises(StaleBaselineError, match=r"params train\.shard") as exc:
        baselines.check_fresh(built.root, "retrain", params, built.policy, built.fs)
    assert exc.value.exit_code == 3 and "baseline retrain" in str(exc.value)


def test_other_verify_params_are_another_plan_and_stale_the_baselines(built):
    verify = built.params.verify.model_copy(update={"seed": 8})
    params = built.params.model_copy(update={"verify": verify})
    assert baselines.stale(built.root, "retrain", params, built.fs) == ["params verify.seed"]
    with pytest.raises(RegistrationError, match="verify_params_sha256") as exc:
        baselines.check_fresh(built.root, "retrain", params, built.policy, built.fs)
    assert exc.value.exit_code == 3


def test_a_changed_input_makes_a_baseline_stale(tmp_path, one_thread):
    t = make_tiny(tmp_path / "proj")
    register(t.root, t.params, t.policy, t.signer)
    baselines.build(t.root, "retrain", t.params, t.policy, t.fs)
    shard = t.root / "data/shards/s00.jsonl"
    shard.write_bytes(shard.read_bytes() + b"\n")
    with pytest.raises(StaleBaselineError, match=r"retrain: input shard_records") as exc:
        baselines.check_fresh(t.root, "retrain", t.params, t.policy, t.fs)
    assert exc.value.exit_code == 3
    assert baselines.stale(t.root, "planted", t.params, t.fs) == [
        f"{baselines.info_file(t.root, 'planted').parent} is missing"
    ]


def test_an_edited_policy_is_refused_and_a_new_registration_stales_the_baselines(tmp_path):
    t = make_tiny(tmp_path / "proj")
    register(t.root, t.params, t.policy, t.signer)
    baselines.build(t.root, "retrain", t.params, t.policy, t.fs)
    path = t.root / POLICY_FILE
    path.write_text(path.read_text().replace("max_above: 0.05", "max_above: 0.5", 1))
    edited = load_policy(t.root)
    with pytest.raises(RegistrationError, match="changed after it was registered") as exc:
        check_registration(t.root, edited)
    assert exc.value.exit_code == 3 and "exante verify register" in str(exc.value)
    with pytest.raises(RegistrationError):
        baselines.check_fresh(t.root, "retrain", t.params, edited, t.fs)
    with pytest.raises(RegistrationError, match="verify_params_sha256"):
        params = t.params.model_copy(update={"verify": t.params.verify.model_copy(
            update={"seed": 99})})  # fmt: skip
        check_registration(t.root, t.policy, params=params)
    assert register(t.root, t.params, edited, t.signer)[1]  # registered anew: a new plan
    assert baselines.stale(t.root, "retrain", t.params, t.fs) == [f"registration ({REGISTRATION})"]


def test_no_baseline_is_built_before_the_registration(tmp_path):
    t = make_tiny(tmp_path / "proj")
    with pytest.raises(RegistrationError, match="exante verify register"):
        baselines.build(t.root, "retrain", t.params, t.policy, t.fs)
    assert not (t.root / "models/verify").exists()


def test_a_registration_by_an_untrusted_key_is_refused(tmp_path):
    t = make_tiny(tmp_path / "proj")
    generate_key(tmp_path / "stranger.key.pem", tmp_path / "elsewhere", name="stranger")
    register(t.root, t.params, t.policy, load_signer(tmp_path / "stranger.key.pem"))
    with pytest.raises(VerificationError) as exc:
        check_registration(t.root, t.policy)
    assert exc.value.exit_code == 1
    _, written = register(t.root, t.params, t.policy, t.signer)  # a trusted one replaces it
    assert written and check_registration(t.root, t.policy)["policy"]["sha256"]


def test_a_baseline_without_a_readable_record_of_its_provenance_is_stale(tmp_path):
    t = make_tiny(tmp_path / "proj")
    register(t.root, t.params, t.policy, t.signer)
    info = baselines.info_file(t.root, "heldout")
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"kind": "heldout", "shard": 0, "wall_seconds": 3.0}))
    assert baselines.stale(t.root, "heldout", t.params, t.fs) == [
        "no provenance recorded (built by an older exante)"
    ]
    info.write_text("[1, 2")
    assert "not a baseline record" in baselines.stale(t.root, "heldout", t.params, t.fs)[0]
    with pytest.raises(StaleBaselineError, match="baseline heldout"):
        baselines.check_fresh(t.root, "heldout", t.params, t.policy, t.fs)
