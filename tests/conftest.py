"""Shared fixtures: tiny projects built in tmp dirs from the real registry and policy."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import NamedTuple

import pytest

from lineage.corpus import CorpusSpec, generate
from lineage.signing import Signer, generate_key, load_signer, load_trusted_keys
from lineage.stages import run_gate, run_ingest, run_manifest

REPO = Path(__file__).resolve().parents[1]
SMALL = CorpusSpec(
    people=12,
    holdout_people=4,
    canary_fraction=0.5,
    plays=("macbeth",),
    play_chunk_chars=4000,
    forum_posts=6,
    news_articles=5,
    recipes=5,
    support_chats=4,
)
AS_OF = date(2026, 11, 23)

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Project:
    root: Path
    key: Path

    @property
    def signer(self):
        return load_signer(self.key)

    def build(self, *, purpose: str = "research") -> None:
        """ingest → manifest → gate (validation has its own tests: GX costs seconds)."""
        run_ingest(self.root)
        run_manifest(self.root, self.signer)
        run_gate(self.root, self.signer, purpose=purpose, as_of=AS_OF)


def make_project(root: Path, spec: CorpusSpec = SMALL) -> Project:
    """A project directory with the real sources.yaml and policy, a small corpus and a key."""
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "data" / "sources.yaml", root / "data" / "sources.yaml")
    (root / "policies" / "trusted_keys").mkdir(parents=True)
    shutil.copy(REPO / "policies" / "default.yaml", root / "policies" / "default.yaml")
    generate(spec, root / "data" / "raw")
    key = root / ".exante" / "keys" / "signing.key.pem"
    generate_key(key, root / "policies" / "trusted_keys", name="test")
    return Project(root, key)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A small project, built through the gate."""
    p = make_project(tmp_path / "proj")
    p.build()
    return p


class Keys(NamedTuple):
    """A trusted signer, its trusted-keys map, and a signer nobody trusts."""

    signer: Signer
    trusted: dict
    stranger: Signer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    generate_key(root / "ok.key.pem", root / "trusted", name="ok")
    generate_key(root / "stranger.key.pem", root / "elsewhere", name="stranger")
    return Keys(
        load_signer(root / "ok.key.pem"),
        load_trusted_keys(root / "trusted"),
        load_signer(root / "stranger.key.pem"),
    )


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads, then restore the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second thread costs more than it gives.

    Use it per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    with torch_threads(1):
        yield
