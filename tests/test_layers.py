"""The dependency arrow points one way: lineage ← training ← verify."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ML = {"torch", "transformers", "opacus", "peft", "optimum", "mlflow", "accelerate", "datasets"}
FORBIDDEN = {
    "lineage": ML | {"training", "verify", "exante"},
    "training": {"mlflow", "verify", "exante"},
    "verify": {"exante"},
}
# The one exception: source readers use `datasets` to read a user's dataset, and the
# source scrubber to rewrite one without deleted rows, imported inside their functions
# only (the test below proves no lineage import loads it).
LAZY_READERS = {Path("lineage/_readers.py"): {"datasets"}, Path("lineage/scrub.py"): {"datasets"}}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package):
    bad = {
        f"{p.relative_to(REPO)} imports {m}"
        for p in (REPO / package).rglob("*.py")
        for m in imported_roots(p) & FORBIDDEN[package]
        if m not in LAZY_READERS.get(p.relative_to(REPO), set())
    }
    assert not bad, sorted(bad)


def test_detector_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import torch.nn\n    from mlflow import log\n")
    assert imported_roots(f) == {"torch", "mlflow"}


def loaded_roots(modules: tuple[str, ...], roots: set[str]) -> list[str]:
    """The modules of ``roots`` a fresh interpreter holds after importing ``modules``."""
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(roots)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_ingest_and_the_signing_core_load_no_reader_library():
    """pyarrow, polars and `datasets` load only when a source of their format is read."""
    core = ("lineage.ingest", "lineage.manifest", "lineage.gate", "lineage.admission")
    assert loaded_roots(core, {"pyarrow", "datasets", "polars", "polars_hash"}) == []


def test_importing_lineage_loads_no_ml_framework():
    assert loaded_roots(("lineage.stages", "lineage.admission", "lineage.validation"), ML) == []


# What the pipeline's stages without a model import (corpus, gate, partition, attest, verify
# register, a fresh `verify baseline all`, `exante delete` around its `dvc repro`): each is its
# own process, and torch with transformers took 1-2.5 s of every one of them.
MODEL_FREE = ("exante.cli", "exante.params", "exante.deletion", "training.stages",
              "training.checkpoints", "training.knowledge", "verify.config", "verify.forget",
              "verify.baselines", "verify.provenance", "verify.unlearn")  # fmt: skip


def test_the_stages_without_a_model_load_no_ml_framework():
    assert loaded_roots(MODEL_FREE, ML) == []


def test_the_unlearning_registry_loads_every_method_on_first_use():
    """verify.unlearn loads its torch half lazily; the registry must still hold every method."""
    code = (
        "import sys, verify.unlearn as u\nassert 'torch' not in sys.modules\n"
        "print(sorted(u.UNLEARNERS), u.unlearn.__name__, u.ga.__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['ga',", "'gd',", "'npo',", "'npo_rt']", "unlearn",
                                  "verify.unlearn.ga", "True"]  # fmt: skip


def test_the_attacks_registry_loads_optimum_quanto_only_to_quantize():
    """Every verification process imports the attacks; quanto's 1.8 s of imports are paid only
    by one that quantizes a model with it (a run whose quantized rows are stored never does)."""
    code = (
        "import sys, torch\nfrom verify.attacks import ATTACKS\n"
        "assert 'optimum.quanto' not in sys.modules, 'quanto at import'\n"
        "m = ATTACKS['quantize_quanto_int8'](torch.nn.Sequential(torch.nn.Linear(4, 4)))\n"
        "print(type(m[0]).__name__, 'optimum.quanto' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Linear", "True"]


def test_the_verification_parent_loads_no_transformers_until_it_builds_a_model():
    """The verify stage's parent hands model directories to its workers: it loads no model
    library at import (transformers alone took 1 s of every verification process's start)."""
    assert loaded_roots(("verify.stage", "verify.run", "training.model"),
                        {"transformers", "optimum", "peft"}) == []  # fmt: skip


def test_the_measuring_processes_load_neither_scipy_nor_model_signing_at_import():
    """scipy.stats (0.65 s, for one KS test when judging) and model_signing (0.25 s, to sign
    or verify a model directory) load where they are used: every training, report and
    verification process, and each measuring worker, imported both before."""
    modules = ("verify.run", "verify.stage", "training.stages", "training.attest")
    assert loaded_roots(modules, {"scipy", "model_signing"}) == []


def test_a_shard_without_dp_loads_no_opacus():
    """The policy's DP checks import Opacus (about 3 s) only when a source needs DP: a shard
    trained or looked up without it, in the stage's process or a worker, never pays for it."""
    code = (
        "import sys\nfrom training.config import TrainConfig\n"
        "from training.stages import check_privacy_config, check_privacy_spent\n"
        "import training.sisa\ncheck_privacy_config(TrainConfig(), None, 'shard 0')\n"
        "check_privacy_spent(None, None, 'shard 0')\nprint('opacus' in sys.modules)\n"
        "check_privacy_spent({'epsilon': 1.0}, 2.0, 'shard 0')\nprint('opacus' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # and loaded where a budget is checked
