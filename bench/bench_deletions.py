"""Benchmark: many deletions in a row, one at a time and as flushed batches.

Run it in a project where the pipeline has run (``make run``). Like
``bench_deletion.py`` it works on copies of the project (git, DVC cache and
remote; the virtual environment left out) in a temporary directory.

(series)  ``--count`` CRM records (seeded) deleted one after another, each with
          its own ``exante delete --record``;
(batched) the same records on a second copy, as ``--batches`` groups: each
          record enqueued (``--enqueue``), then one ``exante delete --flush``.

After every deletion (or flush) the bench checks, and stops at the first
failure: each new receipt verifies (``exante receipt verify``); ``dvc status``
reports nothing changed; ``dvc repro`` runs no stage; no file under the project
(DVC cache included) or the DVC remote holds the text of any record deleted so
far (the audit bundle is searched unpacked). It reports the time per deletion
over the run (does it grow with the history? the mean of the last tenth against
the first, and a least-squares slope), the retained knowledge of the release at
the end (``models/report.json``: exact match over the retained people's
facts), and the sizes and verification times of the ledger, the manifest chain
and the audit bundle. The check times are reported apart from the commands'.

    python bench/bench_deletions.py                       # 100 records, then 10 batches
    python bench/bench_deletions.py --count 10 --batches 0   # 10 in a row only
    python bench/bench_deletions.py --json out.json       # the raw numbers too
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from bench.bench_deletion import BIN, IGNORE, crm_records, retrained, sh, shard_metrics
except ImportError:  # run as a script: bench/ is on the path, the repository root may not be
    from bench_deletion import BIN, IGNORE, crm_records, retrained, sh, shard_metrics

from exante.params import load_params
from lineage.ledger import HEAD, LEDGER


def texts_of(root: Path, record_ids: list[str]) -> dict[str, bytes]:
    rows = (json.loads(x) for x in (root / "data/records/crm.jsonl").read_text().splitlines())
    wanted = set(record_ids)
    return {r["record_id"]: r["text"].encode() for r in rows if r["record_id"] in wanted}


def leaks(dirs: list[Path], needles: list[bytes]) -> list[str]:
    """Files that still hold any needle (the audit bundle searched unpacked)."""
    found = []
    for d in dirs:
        for p in d.rglob("*"):
            if not p.is_file() or p.is_symlink() or ".venv" in p.parts:
                continue
            data = p.read_bytes()
            if p.name.endswith(".tar.gz"):
                data = gzip.decompress(data)
            found += [f"{p}: {n[:40]!r}" for n in needles if n in data]
    return found


def out_of(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def check(root: Path, remote: Path | None, receipts: list[Path], gone: dict[str, bytes]) -> dict:
    """Every post-deletion check; exits with the reason on the first one that fails."""
    t0 = time.perf_counter()
    for r in receipts:
        out_of(["exante", "receipt", "verify", str(r)], root)
    t_receipt = time.perf_counter() - t0
    t0 = time.perf_counter()
    status = out_of([sys.executable, "-m", "dvc", "status"], root)
    if "up to date" not in status:
        sys.exit(f"dvc status is not clean after the deletion:\n{status}")
    repro = out_of([sys.executable, "-m", "dvc", "repro"], root)
    if "Running stage" in repro:
        sys.exit(f"dvc repro ran stages after the deletion:\n{repro}")
    t_dvc = time.perf_counter() - t0
    t0 = time.perf_counter()
    outside = remote is not None and not remote.is_relative_to(root)
    left = leaks([root] + ([remote] if outside else []), list(gone.values()))
    if left:
        sys.exit("deleted text is left:\n" + "\n".join(left[:20]))
    return {"receipt_s": t_receipt, "dvc_s": t_dvc, "search_s": time.perf_counter() - t0}


def remote_dir(root: Path) -> Path | None:
    name = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=root,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    if not name:
        return None
    url = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=root,
                         capture_output=True, text=True).stdout  # fmt: skip
    for line in url.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            path = Path(parts[1])
            return path if path.is_absolute() else (root / ".dvc" / path).resolve()
    return None


def new_receipts(root: Path, seen: set[str]) -> list[Path]:
    got = sorted(p for p in (root / "data/receipts").glob("*.dsse.json") if p.name not in seen)
    seen.update(p.name for p in got)
    return got


def trained_seconds(before: dict, after: dict) -> float:
    return sum(after[s]["wall_seconds"] for s in retrained(before, after))


def series(root: Path, picked: list[str], shards: int) -> list[dict]:
    remote, seen, gone, rows = remote_dir(root), set(), {}, []
    new_receipts(root, seen)
    for n, rid in enumerate(picked):
        gone |= texts_of(root, [rid])
        before = shard_metrics(root, shards)
        wall = sh(["exante", "delete", "--record", rid, "--reason", f"bench-{n}"], root)
        row = {"n": n + 1, "records": 1, "command_s": wall,
               "train_s": trained_seconds(before, shard_metrics(root, shards))}  # fmt: skip
        row |= check(root, remote, new_receipts(root, seen), gone)
        rows.append(row)
        print(f"  series {n + 1}/{len(picked)} {rid}: {wall:.1f} s "
              f"(training {row['train_s']:.1f} s; checks {row['receipt_s'] + row['dvc_s']:.1f} s "
              f"+ search {row['search_s']:.1f} s)", flush=True)  # fmt: skip
    return rows


def batched(root: Path, picked: list[str], batches: int, shards: int) -> list[dict]:
    remote, seen, gone, rows = remote_dir(root), set(), {}, []
    new_receipts(root, seen)
    size = -(-len(picked) // batches)
    for b in range(batches):
        group = picked[b * size : (b + 1) * size]
        if not group:
            break
        gone |= texts_of(root, group)
        t0 = time.perf_counter()
        for n, rid in enumerate(group):
            sh(["exante", "delete", "--record", rid, "--reason", f"bench-b{b}-{n}", "--enqueue"],
               root)  # fmt: skip
        enqueue = time.perf_counter() - t0
        before = shard_metrics(root, shards)
        wall = sh(["exante", "delete", "--flush"], root)
        row = {"n": b + 1, "records": len(group), "command_s": wall, "enqueue_s": enqueue,
               "train_s": trained_seconds(before, shard_metrics(root, shards))}  # fmt: skip
        row |= check(root, remote, new_receipts(root, seen), gone)
        rows.append(row)
        print(f"  batch {b + 1}/{batches} ({len(group)} records): flush {wall:.1f} s, "
              f"enqueue {enqueue:.1f} s (training {row['train_s']:.1f} s)", flush=True)  # fmt: skip
    return rows


def sizes_and_checks(root: Path) -> dict:
    """Sizes of the history's files and how long each offline check takes on them."""
    receipts = sorted((root / "data/receipts").glob("*.dsse.json"))
    manifests = [p for p in (root / "data/manifests").rglob("*") if p.is_file()]
    bundle = root / "data/audit/bundle.tar.gz"
    report = json.loads((root / "models/report.json").read_text())
    return {
        "ledger_entries": len((root / LEDGER).read_text().splitlines()),
        "ledger_bytes": (root / LEDGER).stat().st_size + (root / HEAD).stat().st_size,
        "manifest_versions": len(manifests),
        "manifest_chain_bytes": sum(p.stat().st_size for p in manifests),
        "bundle_bytes": bundle.stat().st_size,
        "receipts": len(receipts),
        "ledger_verify_s": sh(["exante", "ledger", "verify"], root),
        "audit_verify_s": sh(["exante", "audit", "verify", str(bundle)], root),
        "receipt_verify_s": sh(["exante", "receipt", "verify", str(receipts[-1])], root),
        "knowledge": (report.get("knowledge") or {}).get("exact_match"),
        "people": (report.get("knowledge") or {}).get("people"),
    }


def growth(rows: list[dict]) -> dict:
    """Does the time per deletion grow with the history? First and last tenth, and a slope."""
    xs, ys = [r["n"] for r in rows], [r["command_s"] for r in rows]
    tenth = max(1, len(ys) // 10)
    slope = statistics.linear_regression(xs, ys).slope if len(set(xs)) > 1 else 0.0
    return {"first_tenth_s": statistics.fmean(ys[:tenth]),
            "last_tenth_s": statistics.fmean(ys[-tenth:]),
            "median_s": statistics.median(ys), "slope_s_per_deletion": slope,
            "train_median_s": statistics.median(r["train_s"] for r in rows)}  # fmt: skip


def copy_of(source: Path, tmp: Path, name: str) -> Path:
    root = tmp / name / "project"
    shutil.copytree(source, root, ignore=IGNORE, symlinks=True)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=100, help="records deleted in all")
    ap.add_argument("--batches", type=int, default=10, help="flushes for the batched run (0: none)")
    ap.add_argument("--no-series", action="store_true", help="the batched run only")
    ap.add_argument("--json", type=Path, help="write every number here too")
    args = ap.parse_args()

    source = args.project.resolve()
    if not (source / "models/attestation.dsse.json").is_file():
        sys.exit(f"{source}: no trained models; run `make run` first")
    cfg = load_params(source / "params.yaml").train
    pool = crm_records(source)
    if args.count > len(pool):
        sys.exit(f"--count {args.count}: the project has {len(pool)} CRM records")
    picked = random.Random(args.seed).sample(pool, args.count)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    out: dict = {"count": args.count, "seed": args.seed, "records_before": len(pool)}
    with tempfile.TemporaryDirectory(prefix="exante-bench-dels-") as tmp:
        for mode in ("series", "batched"):
            if (mode == "series" and args.no_series) or (mode == "batched" and not args.batches):
                continue
            root = copy_of(source, Path(tmp), mode)
            print(f"({mode}) {args.count} records in {root}", flush=True)
            t0 = time.perf_counter()
            rows = (series(root, picked, cfg.shards) if mode == "series"
                    else batched(root, picked, args.batches, cfg.shards))  # fmt: skip
            out[mode] = {"rows": rows, "wall_s": time.perf_counter() - t0,
                         "growth": growth(rows), "end": sizes_and_checks(root)}  # fmt: skip
            shutil.rmtree(root.parent)
    for mode in ("series", "batched"):
        if mode not in out:
            continue
        g, e = out[mode]["growth"], out[mode]["end"]
        unit, units = ("deletion", "deletions") if mode == "series" else ("flush", "flushes")
        print(f"({mode}) {len(out[mode]['rows'])} {units}, {out[mode]['wall_s']:.0f} s in all")
        print(
            f"  per {unit}: first tenth {g['first_tenth_s']:.1f} s, last tenth "
            f"{g['last_tenth_s']:.1f} s, median {g['median_s']:.1f} s (training median "
            f"{g['train_median_s']:.1f} s); slope {g['slope_s_per_deletion']:+.2f} s per {unit}"
        )
        print(
            f"  at the end: retained knowledge (exact match, {e['people']} people) "
            f"{e['knowledge']}; ledger {e['ledger_entries']} entries, {e['ledger_bytes']} B; "
            f"manifest chain {e['manifest_versions']} files, {e['manifest_chain_bytes']} B; "
            f"audit bundle {e['bundle_bytes']} B"
        )
        print(
            f"  checks: ledger verify {e['ledger_verify_s']:.1f} s, audit verify "
            f"{e['audit_verify_s']:.1f} s, one receipt {e['receipt_verify_s']:.1f} s"
        )
        print(
            "  after every step: receipts verified, dvc status clean, dvc repro ran nothing, "
            "no deleted text left"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
