"""``exante delete`` imports what its steps after the pipeline need while ``dvc repro`` runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from exante.deletion import AFTER_REPRO


def test_every_module_imported_ahead_exists() -> None:
    """A renamed module would make the warm-up import nothing, silently."""
    assert [n for n in AFTER_REPRO if importlib.util.find_spec(n) is None] == []


def test_a_module_that_fails_to_import_is_skipped_and_the_rest_imported() -> None:
    code = """if True:
        import sys
        from exante.deletion import _import_ahead

        _import_ahead(("no_such_module_here", "colorsys")).join()
        print("colorsys" in sys.modules, "no_such_module_here" in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"]
    assert out.stderr == ""
