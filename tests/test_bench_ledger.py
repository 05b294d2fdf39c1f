"""bench/bench_ledger.py at tiny sizes: the history it builds is real and every check passes."""

from __future__ import annotations

from pathlib import Path

from bench.bench_ledger import SCALE, build_history, main, measure
from lineage.ledger import verify_ledger
from lineage.manifest import history_versions
from lineage.receipt import verify_receipt


def test_history_is_real_and_verifies(tmp_path: Path) -> None:
    h = build_history(tmp_path / "p", 23, 3)
    ledger = verify_ledger(h.root, h.trusted)
    assert len(ledger.entries) == h.entries == 20  # four whole deletions of five entries
    assert set(ledger.statuses.values()) == {"complete"}
    assert sorted(history_versions(h.root / "data" / "manifests")) == [1, 2, 3]
    assert [verify_receipt(r, h.trusted).manifest_version for r in h.receipts] == [1, 1, 2, 3]
    times = measure(h, 1, 60.0)
    assert set(times) == set(SCALE)
    assert len(verify_ledger(h.root, h.trusted).entries) == 20  # the timed append was undone


def test_main_prints_growth(capsys) -> None:
    assert main(["--sizes", "10", "20", "--manifests", "2", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "N=20 M=3" in out and "audit: deletions" in out and "grew 2.0x" in out
