"""A tiny partitioned project with the real verification policy, and params to verify it under.

No base model and one epoch per slice of a 1-layer model: a baseline trains in
about a second, so the baselines here are real trainings, not stand-ins.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from exante.params import Params
from tests.conftest import REPO, make_project
from training.config import ModelConfig, Schedule, TrainConfig
from training.stages import run_partition
from verify.config import VerifyParams
from verify.forget import ForgetSet
from verify.policy import POLICY_FILE, LoadedPolicy, load_policy
from verify.run import forget_set

TINY = TrainConfig(
    shards=2,
    slices=2,
    threads=1,
    model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64),
    base=Schedule(max_epochs=1, target_loss=0.0),
    shard=Schedule(batch_size=8, max_epochs=1, target_loss=0.0),
)
VERIFY = VerifyParams(forget_shard=0, forget_people=2, holdout_people=3, retain_records=4,
                      probes="data/raw/probes.jsonl", public_play="othello",
                      public_chunks=1)  # fmt: skip


@dataclass
class Tiny:
    root: Path
    signer: object
    params: Params
    policy: LoadedPolicy
    fs: ForgetSet


def make_tiny(root: Path) -> Tiny:
    project = make_project(root)
    project.build()
    run_partition(root, TINY, project.signer)
    shutil.copy(REPO / POLICY_FILE, root / POLICY_FILE)
    params = Params(train=TINY, verify=VERIFY)
    return Tiny(root, project.signer, params, load_policy(root), forget_set(root, VERIFY))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("baselines") / "proj")
