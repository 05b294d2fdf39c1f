"""The training stages behind the gate: refusal, tampering and DP policy stop training."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from lineage._canonical import file_sha256
from lineage.errors import ArtifactDigestError, ParamsError, VerificationError
from lineage.records import Record, read_all
from lineage.signing import make_statement, sign_envelope, write_envelope
from tests.conftest import Project
from training.config import ModelConfig, Schedule, TrainConfig
from training.dp import PrivacyBudgetError
from training.partition import read_shard, shard_file, write_placed
from training.stages import (
    PARTITION_TYPE,
    Paths,
    check_stage_list,
    load_partition,
    locate,
    run_partition,
    run_train_base,
    run_train_shard,
)

TINY = TrainConfig(
    shards=2,
    slices=2,
    model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64),
    base=Schedule(max_epochs=1, target_loss=0.0),
    shard=Schedule(batch_size=8, max_epochs=1, target_loss=0.0),
)


@pytest.fixture
def partitioned(project: Project) -> Project:
    run_partition(project.root, TINY, project.signer)
    return project


def _shard_path(project: Project, shard: int):
    return project.root / shard_file(Paths().shards, shard)


def test_base_holds_no_personal_data_and_every_admitted_record_is_placed(partitioned):
    root = partitioned.root
    base = [r for _, r in read_shard(root / Paths().base_file())]
    assert base and {r.source_id for r in base} == {"plays"}
    placed = {
        r.record_id for s in range(TINY.shards) for _, r in read_shard(_shard_path(partitioned, s))
    }
    allowed = {r.record_id for r in read_all(root / "data" / "records")} - {"plays"}
    assert not any(i.startswith(("forum/", "newswire/", "support_legacy/")) for i in placed)
    assert {i for i in allowed if i.startswith("crm/")} <= placed


def test_a_tampered_shard_file_stops_training(partitioned):
    path = _shard_path(partitioned, 0)
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["record"]["text"] += " (edited)"
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(ArtifactDigestError, match="differs from the signed partition"):
        run_train_shard(partitioned.root, TINY, 0)
    assert not (partitioned.root / Paths().shard_dir(0)).exists()


def test_a_tampered_record_stops_training(partitioned):
    """A record edited after the manifest was signed fails admission: nothing is partitioned."""
    records = partitioned.root / "data" / "records" / "crm.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    first = Record.from_json(lines[0])
    forged = dataclasses.replace(first, text=first.text.replace("born", "b0rn"))
    records.write_bytes(forged.to_json() + b"\n" + b"".join(lines[1:]))
    before = _shard_path(partitioned, 0).read_bytes()
    with pytest.raises(VerificationError):
        run_partition(partitioned.root, TINY, partitioned.signer)
    assert _shard_path(partitioned, 0).read_bytes() == before


def _resign_partition(project: Project) -> None:
    """What a buggy partition step (or an insider with the key) could produce."""
    root, paths = project.root, Paths()
    predicate, subjects, _ = load_partition(root)
    subjects = {name: file_sha256(root / name) for name in subjects}
    statement = make_statement(subjects, PARTITION_TYPE, predicate)
    write_envelope(root / paths.partition, sign_envelope(statement, project.signer))


def test_a_record_the_gate_refused_stops_training(partitioned):
    """A forum post (refused by the gate) in a validly signed shard file is still not admitted."""
    root = partitioned.root
    forum = next(r for r in read_all(root / "data" / "records") if r.source_id == "forum")
    path = _shard_path(partitioned, 1)
    write_placed(path, [*read_shard(path), (0, forum)])
    _resign_partition(partitioned)
    with pytest.raises(VerificationError, match="forum"):
        run_train_shard(root, TINY, 1)
    assert not (root / Paths().shard_dir(1) / "metrics.json").exists()


def test_policy_requiring_dp_refuses_a_non_private_run(project: Project):
    policy = project.root / "policies" / "default.yaml"
    data = yaml.safe_load(policy.read_text())
    data["personal_data"]["require_dp_epsilon"] = 4.0
    policy.write_text(yaml.safe_dump(data))
    project.build()
    run_partition(project.root, TINY, project.signer)
    shard = next(
        s for s in range(TINY.shards)
        if any(r.source_id == "crm" for _, r in read_shard(_shard_path(project, s)))
    )  # fmt: skip
    with pytest.raises(PrivacyBudgetError, match=r"requires DP-SGD with epsilon ≤ 4\.0"):
        run_train_shard(project.root, TINY, shard)
    dp = TINY.dp.model_copy(update={"enabled": True, "target_epsilon": 8.0})
    with pytest.raises(PrivacyBudgetError, match=r"target_epsilon is 8\.0"):
        run_train_shard(project.root, TINY.model_copy(update={"dp": dp}), shard)
    assert not (project.root / Paths().shard_dir(shard) / "metrics.json").exists()


def test_a_private_shard_from_the_base_meets_the_policy_budget(project: Project):
    policy = project.root / "policies" / "default.yaml"
    data = yaml.safe_load(policy.read_text())
    data["personal_data"]["require_dp_epsilon"] = 4.0
    policy.write_text(yaml.safe_dump(data))
    project.build()
    run_partition(project.root, TINY, project.signer)
    run_train_base(project.root, TINY)  # shards start from a loaded checkpoint (eval mode)
    dp = TINY.dp.model_copy(update={"enabled": True, "target_epsilon": 3.0})
    metrics = run_train_shard(project.root, TINY.model_copy(update={"dp": dp}), 0)
    assert 0 < metrics["dp"]["epsilon"] <= 4.0
    assert metrics["dp"]["accountant"] == "rdp"


def test_dvc_stage_list_must_match_the_shard_count(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"foreach": [0, 1]}}}))
    check_stage_list(tmp_path, TINY)
    with pytest.raises(ParamsError, match=r"exante pipeline` to render it for shards \[0, 1, 2\]"):
        check_stage_list(tmp_path, TINY.model_copy(update={"shards": 3}))


def test_the_repository_dvc_yaml_matches_params():
    from exante.params import load_params
    from tests.conftest import REPO

    check_stage_list(REPO, load_params(REPO / "params.yaml").train)


def test_locate_names_shard_and_slice(partitioned):
    root = partitioned.root
    slice_, record = read_shard(_shard_path(partitioned, 0))[0]
    where = locate(root, record.record_id, TINY)
    assert (where["shard"], where["slice"]) == (0, slice_)
    base = read_shard(root / Paths().base_file())[0][1]
    assert locate(root, base.record_id, TINY)["unit"] == "base"
    assert locate(root, "forum/post-00001", TINY) is None


def test_held_out_people_are_in_no_shard_and_the_partition_signs_them(partitioned):
    """The demo holds its holdout people out whole: in holdout.jsonl, in no shard, signed."""
    root = partitioned.root
    held = [r for _, r in read_shard(root / Paths().holdout_file())]
    assert held and {r.source_id for r in held} == {"holdout_people"}
    trained = [r for s in range(TINY.shards) for _, r in read_shard(_shard_path(partitioned, s))]
    trained += [r for _, r in read_shard(root / Paths().base_file())]
    people = {sid for r in held for sid in r.subject_ids}
    assert not [r for r in trained if people & set(r.subject_ids)]
    predicate, subjects, _ = load_partition(root)
    assert predicate["counts"]["holdout"] == len(held)
    assert subjects[Paths().holdout_file().as_posix()] == file_sha256(root / Paths().holdout_file())


def test_a_held_out_fraction_is_keyed_by_the_seed_and_takes_people_whole():
    from training.partition import held_out

    records = [
        Record.make(f"crm/{p}-{f}", "crm", [p], f"{p} {f}")
        for p in (f"p{i:03d}" for i in range(400))
        for f in ("a", "b")
    ] + [Record.make(f"docs/d{i}", "docs", [], f"doc {i}") for i in range(400)]
    held = held_out(records, {"crm": 0.25, "docs": 0.1}, seed=1)
    crm = {i.split("/")[1].split("-")[0] for i in held if i.startswith("crm/")}
    assert 0.18 < len(crm) / 400 < 0.32  # about a quarter of the people ...
    assert all(f"crm/{p}-{f}" in held for p in crm for f in ("a", "b"))  # ... each whole
    docs = [i for i in held if i.startswith("docs/")]
    assert 0.05 < len(docs) / 400 < 0.15
    assert held == held_out(list(reversed(records)), {"crm": 0.25, "docs": 0.1}, seed=1)
    assert held != held_out(records, {"crm": 0.25, "docs": 0.1}, seed=2)
    assert held_out(records, {}, seed=1) == set()


def test_a_shard_whose_slices_were_all_reused_is_not_called_untrained(capsys):
    """Its console line says its slices were reused, not that it was built untrained."""
    from exante.cli import _say_trained

    reused = {"kind": "shard", "trained_slices": [], "reused_slices": [0, 1, 2, 3], "dp": None,
              "epochs": [], "wall_seconds": 0.0}  # fmt: skip
    _say_trained("shard 1", reused)
    assert capsys.readouterr().out == "shard 1: slices trained [], reused [0, 1, 2, 3]\n"
    _say_trained("base", {"kind": "base", "epochs": [], "wall_seconds": 0.0})
    assert "base: not trained (the model as built" in capsys.readouterr().out
