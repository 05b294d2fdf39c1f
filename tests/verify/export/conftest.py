"""A small project through the gate, plus signed stand-ins for training and verification.

The real attestation and verification report cost minutes of training; the
exports only read their signed predicates and subjects, so these stand-ins are
made with the real signing code (``attest_training``, ``sign_report``) over
small files. One test (tests/test_audit.py) covers the real pipeline.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lineage._canonical import sha256_hex
from tests.conftest import Project, make_project
from training.attest import attest_training
from training.config import TrainConfig
from training.stages import run_partition
from verify.report import sign_report

SUMMARY = {
    "exact": {"exposure_bits": 2.5, "failed_checks": 0, "knowmem_em": 0.0, "privleak": 0.0},
    "original": {"exposure_bits": 6.5, "failed_checks": 3, "knowmem_em": 0.9, "privleak": 130.0},
}
DP = {"0": {"epsilon": 3.25, "delta": 1e-05, "accountant": "rdp"}, "1": None}


def _payload_sha256(path: Path) -> str:
    return sha256_hex(base64.b64decode(json.loads(path.read_bytes())["payload"]))


def add_training_standins(p: Project) -> None:
    root = p.root
    files = {}
    for name, data in [("models/ensemble/ensemble.json", b'{"shards": 2}\n'),
                       ("models/ensemble/s00/model.safetensors", b"weights 0"),
                       ("models/ensemble/s01/model.safetensors", b"weights 1")]:  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files[name] = root / name
    manifest = _payload_sha256(root / "data/manifest.dsse.json")
    decision = _payload_sha256(root / "data/gate/decision.dsse.json")
    run_partition(root, TrainConfig(shards=2, slices=2), p.signer)  # real: it counts held-out
    partition = _payload_sha256(root / "data/shards/partition.dsse.json")
    attest_training(files, root=root, signer=p.signer, out=root / "models/attestation.dsse.json",
                    manifest_sha256=manifest, decision_sha256=decision,
                    partition_sha256=partition, params={"seed": 1, "shards": 2,
                    "model": {"n_layer": 2, "local_path": None}}, dp=DP)  # fmt: skip
    summary = root / "data/verification/summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps(SUMMARY, indent=2, sort_keys=True))
    verdicts = {
        "exact": {"checks": 8, "failed": [], "unmeasured": [], "verdict": "pass"},
        "original": {"checks": 8, "failed": ["none/knowmem_em"] * 3, "unmeasured": [],
                     "verdict": "fail"},
    }  # fmt: skip
    sign_report(root=root, files=[summary, *files.values()], signer=p.signer,
                out=root / "data/verification/report.dsse.json",
                predicate={"summary": verdicts, "reference": "retrain",
                           "forget_set_sha256": "2" * 64,
                           "policy": {"path": "policies/default.yaml", "sha256": "1" * 64},
                           "lineage": {"manifest_payload_sha256": manifest}})  # fmt: skip


@pytest.fixture
def released(project: Project) -> Project:
    """The small project with a signed training attestation and verification report."""
    add_training_standins(project)
    return project


@pytest.fixture(scope="module")
def released_module(tmp_path_factory) -> Project:
    p = make_project(tmp_path_factory.mktemp("exports") / "proj")
    p.build()
    add_training_standins(p)
    return p
