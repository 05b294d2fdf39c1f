"""The scratch workspace a deletion's verification runs in never writes into the project."""

from __future__ import annotations

from pathlib import Path

from verify.request import _link_workspace, request_dir


def test_the_workspace_links_what_it_reads_and_owns_what_it_writes(tmp_path: Path):
    root = tmp_path / "project"
    for d in ("models/base", "models/verify/retrain", "models/old.tmp", "data/shards",
              "data/verification", "data/receipts/verification/earlier", "policies"):  # fmt: skip
        (root / d).mkdir(parents=True)
    (root / "params.yaml").write_text("x: 1\n")
    scratch = root / "models" / "verify-r1.tmp"
    _link_workspace(root, scratch)

    for linked in ("params.yaml", "policies", "models/base", "data/shards"):
        assert (scratch / linked).is_symlink(), linked
        assert (scratch / linked).resolve() == (root / linked).resolve()
    for owned in ("models", "data"):
        assert (scratch / owned).is_dir() and not (scratch / owned).is_symlink()
    # written by the verification: absent here, so it cannot write through a link
    for absent in ("models/verify", "models/old.tmp", "models/verify-r1.tmp",
                   "data/verification", "data/receipts"):  # fmt: skip
        assert not (scratch / absent).exists(), absent
    out = scratch / request_dir("r/1")
    out.mkdir(parents=True)
    (out / "results.json").write_text("{}")
    assert not (root / request_dir("r/1")).exists()  # nothing reached the project
    assert request_dir("r/1").name == "r_1"
