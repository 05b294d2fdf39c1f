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

from exante.init import merge_into  # noqa: F401  (tests import it from here)
from lineage.corpus import CorpusSpec, generate
from lineage.signing import Signer, generate_key, load_signer, load_trusted_keys
from lineage.stages import run_gate, run_ingest, run_manifest
from training.dp_secret import DEFAULT_SECRET_PATH, create_dp_secret

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


def source_entry(sid: str) -> dict:
    """A registry entry for a test source ``sid``: CC0, no personal data; add a location."""
    return {
        "description": f"test source {sid}",
        "license": "CC0-1.0",
        "terms": {"summary": "test data", "permits_ml_training": True},
        "consent_basis": "none",
        "contains_personal_data": False,
        "tdm_opt_out": False,
        "acquired": {"date": "2025-01-01", "method": "test"},
        "jurisdiction": "EU",
        "retention": "indefinite",
    }


def make_project(root: Path, spec: CorpusSpec = SMALL) -> Project:
    """A project directory with the real sources.yaml and policy, a small corpus and a key."""
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "data" / "sources.yaml", root / "data" / "sources.yaml")
    (root / "policies" / "trusted_keys").mkdir(parents=True)
    shutil.copy(REPO / "policies" / "default.yaml", root / "policies" / "default.yaml")
    generate(spec, root / "data" / "raw")
    key = root / ".exante" / "keys" / "signing.key.pem"
    generate_key(key, root / "policies" / "trusted_keys", name="test")
    create_dp_secret(root / DEFAULT_SECRET_PATH)  # as `exante keys init` does
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


# -- one real deletion, shared by the deletion and audit tests ---------------------------


@dataclass
class Deletion:
    """A pipeline project with a DVC remote, after one person's ``exante delete``.

    What the tests need of the state before is captured first: the person's
    records and canary, where they were placed, the shard metrics, and every
    record text and secret of the project (for the content searches).
    """

    root: Path
    remote: Path
    subject: str
    records: list[dict]
    canary: str
    placed: dict[int, list[int]]
    metrics_before: dict[int, bytes]
    needles_before: list[bytes]
    stdout: str


def records_of(root: Path, subject: str) -> list[dict]:
    import json

    rows = []
    for f in sorted((root / "data" / "records").glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return [r for r in rows if subject in r["subject_ids"]]


def shard_of(root: Path, record_ids: set[str]) -> dict[int, list[int]]:
    """shard → the slices holding any of ``record_ids``."""
    import json

    out: dict[int, list[int]] = {}
    for f in sorted((root / "data" / "shards").glob("s*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            if row["record"]["record_id"] in record_ids:
                out.setdefault(int(f.stem[1:]), []).append(row["slice"])
    return out


def project_needles(root: Path) -> list[bytes]:
    """Every record's text, every planted secret, the holdout people's names and secrets."""
    import json

    out = set()
    for f in root.glob("data/records/*.jsonl"):
        out |= {json.loads(line)["text"] for line in f.read_text().splitlines()}
    for name in ("crm.jsonl", "holdout_people.jsonl"):
        for line in (root / "data/raw" / name).read_text().splitlines():
            row = json.loads(line)
            out |= {row["value"]} if row["fact"] in ("canary", "email", "phone") else set()
            if row["fact"] == "birth_year":  # the person's name
                out.add(row["text"].split(" was born in ")[0])
    return sorted(x.encode() for x in out)


@pytest.fixture(scope="session")
def deletion(tmp_path_factory) -> Deletion:
    import json

    from tests.test_pipeline import SMALL_CORPUS, build_project, run

    root, remote = tmp_path_factory.mktemp("deletion"), tmp_path_factory.mktemp("remote")
    build_project(root, SMALL_CORPUS | {"canary_fraction": 1.0})
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "remote", "add", "-d", "local", str(remote)], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run(["exante", "keys", "init", "--dev"], root)
    run(["dvc", "repro"], root)
    run(["dvc", "push"], root)  # the remote now holds the person's records too
    subject = "p0002"
    records = records_of(root, subject)
    crm = [json.loads(x) for x in (root / "data/raw/crm.jsonl").read_text().splitlines()]
    before = Deletion(
        root, remote, subject, records,
        canary=next(r["value"] for r in crm if r["id"] == f"{subject}-canary"),
        placed=shard_of(root, {r["record_id"] for r in records}),
        metrics_before={s: (root / f"models/shards/s{s:02d}/metrics.json").read_bytes()
                        for s in range(4)},
        needles_before=project_needles(root),
        stdout="",
    )  # fmt: skip
    out = run(["exante", "delete", "--subject", subject, "--reason", "GDPR-17 ticket 42",
               "--request-id", "req-42", "--verify"], root)  # fmt: skip
    before.stdout = out.stdout
    return before


def contains(data: bytes, needle: bytes) -> bool:
    """``needle`` in ``data``; a secret of digits must stand alone, not inside a digest."""
    import re

    if needle.isdigit():
        return re.search(rb"(?<![0-9A-Za-z])" + needle + rb"(?![0-9A-Za-z])", data) is not None
    return needle in data
