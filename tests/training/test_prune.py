"""Checkpoints that saw a deleted record are deleted; the shard's current ones never are."""

from __future__ import annotations

import json
from pathlib import Path

from training.checkpoints import META, prune


def _ckpt(d: Path, name: str, records: list[str]) -> None:
    (d / name).mkdir(parents=True)
    (d / name / META).write_text(json.dumps({"records": records}))
    (d / name / "model.safetensors").write_bytes(b"weights")


def test_prune_removes_what_saw_a_denied_record_and_partial_dirs(tmp_path):
    d = tmp_path / "ckpt"
    _ckpt(d, "clean", ["crm/a"])
    _ckpt(d, "stale", ["crm/a", "crm/gone"])
    _ckpt(d, "current", ["crm/gone"])  # named in keep: never touched (admission guards it)
    (d / ".partial.x1").mkdir()
    removed = prune(d, frozenset({"crm/gone"}), keep=["current"])
    assert removed == [".partial.x1", "stale"]
    assert sorted(p.name for p in d.iterdir()) == ["clean", "current"]


def test_prune_of_a_missing_dir_does_nothing(tmp_path):
    assert prune(tmp_path / "none", frozenset({"x"}), keep=[]) == []
