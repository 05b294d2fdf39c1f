"""`exante verify register` and `exante verify baseline calib|heldout|planted` in a tiny project."""

from __future__ import annotations

import json

import pytest
import yaml

from tests._cli import exante
from tests.verify.baselines.conftest import Tiny
from verify import baselines
from verify.provenance import REGISTRATION


@pytest.fixture(scope="module")
def project(tiny: Tiny) -> Tiny:
    (tiny.root / "params.yaml").write_text(yaml.safe_dump(tiny.params.model_dump(mode="json")))
    return tiny


def _run(t: Tiny, *args: str):
    return exante(t.root, "--key", str(t.root / ".exante/keys/signing.key.pem"), "verify", *args)


def test_no_baseline_is_built_before_the_plan_is_registered(project):
    r = _run(project, "baseline", "heldout")
    assert r.code == 3 and "RegistrationError" in r.err and "exante verify register" in r.err
    assert not baselines.info_file(project.root, "heldout").exists()


def test_the_control_and_calibration_baselines_are_built_stamped(project):
    first = _run(project, "register")
    assert first.code == 0, first.err
    assert "verification registered" in first.out
    again = _run(project, "register")
    assert again.code == 0 and "already registered" in again.out
    for kind in ("calib", "heldout", "planted"):
        r = _run(project, "baseline", kind)
        assert r.code == 0, r.err
    calib = baselines.calibration_names(project.params, project.policy)
    assert len(calib) == project.policy.policy.calibration.references - 1
    for name in [*calib, "heldout", "planted"]:
        info = json.loads(baselines.info_file(project.root, name).read_text())
        assert info["provenance"]["registration_sha256"]
        baselines.check_fresh(project.root, name, project.params, project.policy, project.fs)
    assert "planted leak: crm/" in r.out
    assert (project.root / REGISTRATION).is_file()
