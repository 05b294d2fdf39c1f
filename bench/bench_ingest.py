"""Benchmark: ingesting a million parquet rows against pyarrow reading the same file.

One run generates ``--rows`` rows (``id``, a ``text`` of 100–200 characters, a
``subject`` column and two columns the mapping leaves out) into a temporary
directory, then times, each in a fresh interpreter that reports its own peak
RSS (``VmHWM``), best of ``--repeat`` (5):

* **arrow**: ``ParquetFile.iter_batches`` over the three mapped columns, each
  column turned into Python objects (``to_pylist``) — what any Python reader of
  the file pays before it can look at a value;
* **arrow (no Python objects)**: the same batches, left in Arrow memory;
* **exante**: ``lineage.ingest.ingest`` of the file registered as a parquet
  source with a field mapping — read, check every id, text and subject, hash,
  sort by id and write the records file.

Imports are done before the clock starts, for every reader: pyarrow and
exante's ingest modules. pandas is not: pyarrow imports it on its first
conversion of a Python value (0.13-0.19 s, once a process), which neither
reader makes; each run reports whether pandas was imported while it was timed.

The ratio exante/arrow (records per second) is the result; target ≥ 0.5. The
memory check runs exante again on half the rows, as many times: from half to
all of them, its peak RSS (the lowest of the runs at each size) must grow by
less than a quarter of what the records file grows (an ingest that held its
records in memory would grow by more than all of it).

    python bench/bench_ingest.py                  # 1,000,000 rows
    python bench/bench_ingest.py --rows 20000 --check
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lineage._runs import RUN_BYTES

RSS_GROWTH_SHARE = 0.25  # of the growth of the records file, from half the rows to all
BATCH = 65_536
COLUMNS = ["id", "text", "subject"]
WORDS = [
    "the", "harbour", "bread", "garden", "customer", "order", "shipped", "river", "library",
    "evening", "paper", "window", "market", "letter", "station", "quietly", "north", "seven",
]  # fmt: skip
ACCENTED = ["café", "naïve", "Zürich", "façade"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    p.add_argument(
        "--order", choices=["sorted", "shuffled"], default="sorted",
        help="ids in the file in id order (default), or shuffled: the sort then merges runs",
    )  # fmt: skip
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- data -----------------------------------------------------------------------------


def _text(rng: random.Random) -> str:
    words, size = [], rng.randint(100, 200)
    while sum(map(len, words)) + len(words) < size:
        words.append(rng.choice(ACCENTED) if rng.random() < 0.01 else rng.choice(WORDS))
    return " ".join(words)[:size].strip()


def write_parquet(path: Path, rows: int, *, seed: int = 7, shuffled: bool = False) -> None:
    """``rows`` rows written in row groups, so generating them needs little memory too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    order = list(range(rows))
    if shuffled:
        rng.shuffle(order)
    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("subject", pa.string()),
         ("score", pa.float64()), ("lang", pa.string())]
    )  # fmt: skip
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, BATCH):
            n = min(BATCH, rows - start)
            w.write_table(pa.table({
                "id": [f"r{i:08d}" for i in order[start : start + n]],
                "text": [_text(rng) for _ in range(n)],
                "subject": [f"p{rng.randrange(50_000):05d}" for _ in range(n)],
                "score": [rng.random() for _ in range(n)],
                "lang": ["en"] * n,
            }, schema=schema))  # fmt: skip


SOURCES_YAML = """schema_version: 1
sources:
  bench:
    description: benchmark rows
    location: {location}
    format: parquet
    fields: {{id: id, text: text, subjects: subject}}
    license: CC0-1.0
    terms: {{summary: synthetic, permits_ml_training: true}}
    consent_basis: none
    contains_personal_data: false
    tdm_opt_out: false
    acquired: {{date: "2025-01-01", method: generated}}
    jurisdiction: EU
    retention: indefinite
"""


def make_project(root: Path, parquet: Path) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "sources.yaml").write_text(SOURCES_YAML.format(location=parquet))


# -- children: each measures itself ------------------------------------------------


def _peak_rss_kib() -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in lines if line.startswith("VmHWM:")))


def _arrow(root: Path, *, python_objects: bool) -> int:
    import pyarrow.parquet as pq  # already imported: costs no time here

    n = 0
    for batch in pq.ParquetFile(root / "rows.parquet").iter_batches(BATCH, columns=COLUMNS):
        if python_objects:
            cols = [batch.column(c).to_pylist() for c in COLUMNS]
            n += len(cols[0])
        else:
            n += batch.num_rows
    return n


def _exante(root: Path) -> int:
    from lineage.ingest import ingest
    from lineage.sources import load_registry

    project = root / "project"
    registry = load_registry(project / "data" / "sources.yaml")
    return ingest(registry, project, project / "data" / "records")["bench"]


def child(kind: str, root: Path) -> None:
    import pyarrow.parquet  # noqa: F401

    import lineage._arrow_rows  # what ingest of a parquet source loads
    import lineage._arrow_runs
    import lineage.ingest  # noqa: F401

    run = {
        "arrow": lambda: _arrow(root, python_objects=True),
        "arrow-raw": lambda: _arrow(root, python_objects=False),
        "exante": lambda: _exante(root),
    }[kind]
    t = time.perf_counter()
    n = run()
    print(n, time.perf_counter() - t, _peak_rss_kib(), int("pandas" in sys.modules))


def measure(kind: str, root: Path, repeat: int) -> tuple:
    """(rows, best seconds, lowest and highest peak RSS MiB, median seconds, whether
    pandas was imported in any run) of ``kind``.

    Each run in a fresh interpreter.

    Both sizes of the memory check run ``repeat`` times and are compared by their
    lowest peaks: a maximum over two runs against one run at the other size
    would count the run-to-run noise as growth.
    """
    times, peaks, n, pandas = [], [], 0, False
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(root)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows, seconds, kib, imported = out.stdout.split()
        n, pandas = int(rows), pandas or imported == "1"
        times.append(float(seconds))
        peaks.append(int(kib) / 1024)
    return n, min(times), min(peaks), max(peaks), statistics.median(times), pandas


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        shuffled = args.order == "shuffled"
        write_parquet(root / "rows.parquet", args.rows, shuffled=shuffled)
        mib = (root / "rows.parquet").stat().st_size / (1 << 20)
        took = time.perf_counter() - t
        print(
            f"generated {args.rows:,} rows, ids {args.order} ({mib:.0f} MiB parquet), {took:.1f} s"
        )
        make_project(root / "project", root / "rows.parquet")
        results = {k: measure(k, root, args.repeat) for k in ("arrow-raw", "arrow", "exante")}
        small = root / "small"
        small.mkdir()
        write_parquet(small / "rows.parquet", max(1, args.rows // 2), shuffled=shuffled)
        make_project(small / "project", small / "rows.parquet")
        half = measure("exante", small, args.repeat)
        written = [records_mib(r) for r in (small, root)]
    return report(args, results, half, written)


def records_mib(root: Path) -> float:
    return (root / "project" / "data" / "records" / "bench.jsonl").stat().st_size / (1 << 20)


def report(args, results: dict, half: tuple, written: list[float]) -> int:
    print(f"\n{'reader':<34}{'rows':>10}{'seconds':>9}{'rows/s':>12}{'peak RSS':>12}  pandas")
    for kind, (n, s, _, rss, _, pandas) in results.items():
        print(f"{kind:<34}{n:>10,}{s:>9.2f}{n / s:>12,.0f}{rss:>9.0f} MiB  "
              f"{'imported' if pandas else 'no'}")  # fmt: skip
    assert len({r[0] for r in results.values()}) == 1, "readers disagree on the row count"
    rate = {k: r[0] / r[1] for k, r in results.items()}
    ratio, raw_ratio = rate["exante"] / rate["arrow"], rate["exante"] / rate["arrow-raw"]
    growth, allowed = results["exante"][2] - half[2], RSS_GROWTH_SHARE * (written[1] - written[0])
    spills = written[0] * (1 << 20) > RUN_BYTES  # else both sizes sort in memory, by design
    ok_ratio, ok_rss = ratio >= 0.5, growth <= allowed or not spills
    print(f"\nexante / arrow (to Python objects): {ratio:.2f}x   target >= 0.5x  "
          f"{'ok' if ok_ratio else 'MISSED'}")  # fmt: skip
    print(f"exante / arrow (Arrow memory only): {raw_ratio:.2f}x   (for scale)")
    median = results["arrow"][4] / results["exante"][4]
    print(f"exante / arrow, medians of {args.repeat} runs: {median:.2f}x   (for the spread)")
    verdict = ("ok" if ok_rss else "MISSED") if spills else "n/a: no run spilled at this size"
    print(f"exante peak RSS (lowest of {args.repeat} runs; highest): "
          f"{half[2]:.0f} MiB ({half[3]:.0f}) at {half[0]:,} rows, "
          f"{results['exante'][2]:.0f} MiB ({results['exante'][3]:.0f}) at "
          f"{results['exante'][0]:,} rows: "
          f"growth {growth:+.0f} MiB, while the records file grew {written[0]:.0f} -> "
          f"{written[1]:.0f} MiB (target growth <= {allowed:.0f} MiB)  {verdict}")  # fmt: skip
    return 1 if args.check and not (ok_ratio and ok_rss) else 0


if __name__ == "__main__":
    sys.exit(main())
