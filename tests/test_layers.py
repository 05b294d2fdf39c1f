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


def test_ingest_and_the_signing_core_load_no_reader_library():
    """pyarrow and `datasets` load only when a source of their format is read."""
    code = (
        "import sys, lineage.ingest, lineage.manifest, lineage.gate, lineage.admission\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'datasets'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_lineage_loads_no_ml_framework():
    code = (
        "import sys, lineage.stages, lineage.admission, lineage.validation\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(ML)!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
