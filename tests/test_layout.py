"""One layout object owns every project path: no module spells one, and another layout flows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from lineage.layout import LAYOUT, Layout

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("exante", "lineage", "training", "verify")
# The layout itself, and the embedded demo's generator, which names its own files.
OWNERS = {Path("lineage/layout.py"), Path("lineage/corpus.py")}
# A string that is a project path: under a project directory, or one of its top-level files.
PROJECT_PATH = re.compile(
    r"/?(data|models|policies|\.exante|\.dvc-remote|mlartifacts)/.*"
    r"|/?(params\.yaml|dvc\.yaml|dvc\.lock|mlruns\.db|\.exante|\.dvc-remote|mlartifacts)"
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants: prose may name paths, code may not."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def path_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``source`` that spells a project path."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and PROJECT_PATH.fullmatch(node.value)
    ]


def test_the_scan_finds_a_spelled_path():
    source = '"""Reads data/x."""\nRECORDS = Path("data/records")\nx = f"{r}" + "models/base"'
    assert sorted(text for _, text in path_literals(source)) == ["data/records", "models/base"]
    assert path_literals('d = {"policies": 1, "models": 2}\nmsg = "policies under x"') == []


def test_no_module_spells_a_project_path():
    spelled = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path.relative_to(REPO) not in OWNERS
        for line, text in path_literals(path.read_text(encoding="utf-8"))
    ]
    assert spelled == [], "ask lineage.layout.LAYOUT instead:\n" + "\n".join(spelled)


def test_derived_paths_follow_their_roots():
    moved = Layout(data=Path("store"), models=Path("out/models"))
    assert moved.partition == Path("store/shards/partition.dsse.json")
    assert moved.ledger_head.parent == moved.data
    assert moved.shard_dir(12) == Path("out/models/shards/s12")
    assert moved.request_verifications.is_relative_to(moved.receipts)


def test_a_derived_path_can_be_moved_alone():
    scratch = LAYOUT.moving(shard_models=Path("/tmp/x/shards"))
    assert scratch.shard_dir(3) == Path("/tmp/x/shards/s03")
    assert scratch.base == LAYOUT.base and scratch.partition == LAYOUT.partition
    assert LAYOUT.shard_models == Path("models/shards")  # the default is untouched
    with pytest.raises(TypeError, match="data"):  # a root is a field, not a derived path
        LAYOUT.moving(data=Path("elsewhere"))


def _all_paths(pipeline: dict) -> set[str]:
    """Every string a rendered pipeline names (deps, outs, metrics, vars, params keys)."""
    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            found.add(x)

    walk(pipeline)
    return found


def test_a_second_layout_flows_into_the_rendered_pipeline():
    from exante.params import load_params
    from exante.pipeline import dump, render
    from lineage.sources import load_registry

    registry = load_registry(REPO / LAYOUT.registry)
    params = load_params(REPO / LAYOUT.params)
    moved = Layout(data=Path("store"), models=Path("out/models"), policies=Path("rules"))
    default = render(registry, params)
    pipeline = render(registry, params, layout=moved)
    named = _all_paths(pipeline)
    assert Layout.name(moved.partition) in named
    assert Layout.name(moved.shard_dir(params.train.shards - 1)) in named
    assert Layout.name(moved.verification_files.report) in named
    assert pipeline["vars"] == ["store/sources.yaml"]
    assert "exante audit bundle --out store/audit/bundle.tar.gz" in dump(pipeline)
    # not one of the default layout's paths is left behind (the sources' own files and the
    # probes file are where the registry and params say, not the layout's to move)
    given = {Layout.name(Path(s.location).parent) for s in registry.sources.values()}
    stale = {p for p in named if PROJECT_PATH.fullmatch(p) and str(Path(p).parent) not in given}
    assert stale == set(), stale
    # the stages are the same; only where they read and write moved
    assert list(pipeline["stages"]) == list(default["stages"])
    assert _all_paths(default) != named
    assert yaml.safe_load(dump(pipeline))["stages"] == pipeline["stages"]
