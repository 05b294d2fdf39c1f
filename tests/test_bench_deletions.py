"""bench/bench_deletions.py's judgement helpers: growth over the run, the leak search."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench.bench_deletions import growth, leaks


def test_growth_reports_a_flat_run_as_flat_and_a_growing_one_as_growing() -> None:
    flat = [{"n": n, "command_s": 40.0 + (n % 3), "train_s": 20.0} for n in range(1, 101)]
    g = growth(flat)
    assert abs(g["slope_s_per_deletion"]) < 0.01
    assert g["first_tenth_s"] == pytest.approx(g["last_tenth_s"], abs=1.0)
    rising = [{"n": n, "command_s": 40.0 + 0.5 * n, "train_s": 20.0} for n in range(1, 101)]
    r = growth(rising)
    assert r["slope_s_per_deletion"] == pytest.approx(0.5)
    assert r["last_tenth_s"] - r["first_tenth_s"] == pytest.approx(45.0)


def test_leaks_finds_text_in_plain_files_and_inside_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/records.jsonl").write_bytes(b'{"text": "Ada lives at 3 Elm Row"}')
    (tmp_path / "bundle.tar.gz").write_bytes(gzip.compress(b"... Bo paid 12 ..."))
    (tmp_path / "clean.txt").write_bytes(b"nothing here")
    found = leaks([tmp_path], [b"Ada lives at 3 Elm Row", b"Bo paid 12", b"not anywhere"])
    assert sorted(Path(f.split(":")[0]).name for f in found) == ["bundle.tar.gz", "records.jsonl"]
