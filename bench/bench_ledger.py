"""Benchmark: the deletion history at scale — ledger, manifest chain and receipts.

A throwaway project (a small generated corpus, a real signing key) is given a
deletion history built by the real code, at several sizes:

- ``N`` ledger entries: deletions of five entries each (a request, then
  ``retraining``, ``purged``, ``verified``, ``complete``), every entry built,
  checked (``entry_problems``, the status machine) and chained as
  :mod:`lineage.ledger` appends it, and the head signed once at the end by the
  ledger's own writer. Appending them one by one would verify and rewrite the
  whole ledger per entry (quadratic to build); the bytes are the same. The cost
  of one real ``append_request`` on the ledger of each size is timed too;
- ``M`` manifest versions: ``run_manifest`` (what ``exante manifest`` runs)
  called ``M`` times, one record's text changed between versions;
- one signed receipt per completed deletion, issued by ``issue_receipt``
  against the manifest version current when the deletion ran (its record ids
  are absent from every version).

Timed, best of ``--repeat`` (fewer once a timing has spent ``--budget`` seconds):

(a) ``verify_ledger`` — all that ``exante ledger verify`` does;
(b) the audit checks that read the deletion history — ``check_ledger``,
    ``check_manifest_chain`` and ``check_deletions`` of ``verify.audit.checks``
    (the last proves every receipt's records absent from its manifest version and
    every later one) — run as ``exante audit verify`` runs them, on the files a
    bundle would carry. Not timed: reading the tarball, and the model, lineage and
    verification checks, which need a trained pipeline (and do not grow with N, M);
(c) ``verify_receipt`` on the last receipt — all that ``exante receipt verify``
    does; it reads no ledger or manifest history, so it should not grow.

Each size is compared with the smallest size of the same run: the time ratio
is printed beside the size ratio (``N`` for (a) and the append, ``M`` for the
chain check, ``N x M`` for ``check_deletions``), so linear, quadratic or flat
growth is visible without a hard-coded expectation.

    python bench/bench_ledger.py                                  # N 1,000 10,000; M 100 1,000
    python bench/bench_ledger.py --sizes 100 300 --manifests 10 30  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lineage._canonical import sha256_hex, text_sha256
from lineage.corpus import CorpusSpec, generate
from lineage.ledger import SCHEMA_VERSION as LEDGER_SCHEMA
from lineage.ledger import (
    _entry,
    _step,
    _write,
    append_request,
    entry_problems,
    ledger_lock,
    verify_ledger,
)
from lineage.manifest import PREDICATE_TYPE as MANIFEST_TYPE
from lineage.manifest import SignedManifest, history_versions, parse_leaves
from lineage.receipt import issue_receipt, verify_receipt
from lineage.signing import (
    generate_key,
    load_signer,
    load_trusted_keys,
    parse_statement,
    read_envelope,
    verify_envelope,
)
from lineage.stages import run_ingest, run_manifest

REPO = Path(__file__).resolve().parents[1]
STEPS = ("retraining", "purged", "verified", "complete")
PER_DELETION = 1 + len(STEPS)


def corpus(people: int) -> CorpusSpec:
    """A small corpus (``people`` CRM subjects, one play): the leaves each version holds."""
    few = max(1, people // 2)
    return CorpusSpec(people=people, holdout_people=people // 3, plays=("macbeth",),
                      play_chunk_chars=4000, forum_posts=few, news_articles=few, recipes=few,
                      support_chats=few)  # fmt: skip


AUDIT_CHECKS = {  # the checks' functions' names in verify.audit.checks -> a short label
    "check_ledger": "ledger",
    "check_manifest_chain": "manifest chain",
    "check_deletions": "deletions",
}


@dataclass(frozen=True)
class History:
    root: Path
    signer: object
    trusted: dict
    entries: int
    versions: int
    receipts: tuple[Path, ...]
    leaves: int  # records in each manifest version
    build_s: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000], help="ledger entries")
    p.add_argument(
        "--manifests", type=int, nargs="+", default=[100, 1_000], help="manifest versions"
    )
    p.add_argument("--people", type=int, default=12, help="CRM subjects in the corpus")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument(
        "--budget", type=float, default=60.0, help="seconds after which a timing stops repeating"
    )
    args = p.parse_args(argv)
    if len(args.sizes) != len(args.manifests):
        p.error("--sizes and --manifests pair up: give as many of each")
    if min(args.sizes) < PER_DELETION or min(args.manifests) < 1:
        p.error(f"each size needs at least {PER_DELETION} entries and 1 manifest version")
    return args


# -- the throwaway project ------------------------------------------------------------


def make_project(root: Path, people: int):
    """Real registry and policy, a small generated corpus, ingested; a fresh key."""
    (root / "policies" / "trusted_keys").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "sources.yaml", root / "data" / "sources.yaml")
    shutil.copy(REPO / "policies" / "default.yaml", root / "policies" / "default.yaml")
    generate(corpus(people), root / "data" / "raw")
    run_ingest(root)
    key = root / ".exante" / "keys" / "signing.key.pem"
    generate_key(key, root / "policies" / "trusted_keys", name="bench")
    return load_signer(key), load_trusted_keys(root / "policies" / "trusted_keys")


def change_one_record(root: Path, version: int) -> None:
    """Edit the first record's text (and its digest), so the next version differs."""
    path = sorted((root / "data" / "records").glob("*.jsonl"))[0]
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["text"] = f"{record['text'].split(' [edit')[0]} [edit {version}]"
    record["sha256"] = text_sha256(record["text"])
    lines[0] = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")


def make_manifests(root: Path, signer, m: int) -> None:
    for v in range(1, m + 1):
        if v > 1:
            change_one_record(root, v)
        run_manifest(root, signer)


def _checked(d: dict, statuses: dict) -> object:
    """The entry ``d`` as an append checks it: its fields, then the status machine."""
    if problems := entry_problems(d):
        raise SystemExit(f"the bench built an invalid entry: {problems}")
    entry = _entry(d)
    if problem := _step(statuses, entry):
        raise SystemExit(f"the bench built an entry out of order: {problem}")
    return entry


def deletion_entries(n: int, m: int, at: str) -> tuple[list, list[tuple[str, int, str]]]:
    """``n // 5`` deletions, each assigned the manifest version current when it ran."""
    entries, statuses, deletions = [], {}, []
    prev = "0" * 64
    count = n // PER_DELETION

    def add(fields: dict) -> object:
        nonlocal prev
        d = {"schema_version": LEDGER_SCHEMA, "seq": len(entries), "prev": prev} | fields
        entry = _checked(d, statuses)
        entries.append(entry)
        prev = entry.sha256
        return entry

    for i in range(count):
        rid, record = f"del-{i:06d}", f"crm/deleted-{i:06d}"
        version = 1 + i * m // max(count, 1)
        request = add(
            {
                "kind": "request",
                "request_id": rid,
                "status": "received",
                "reason": f"ticket {i}",
                "record_ids": [record],
                "subject_ids": [],
                "record_hashes": {record: text_sha256(f"deleted text {i}")},
                "received_at": at,
            }
        )
        for step in STEPS:
            meta = {"manifest_version": version} if step == "complete" else {}
            add(
                {
                    "kind": "status",
                    "request_id": rid,
                    "status": step,
                    "at": at,
                    "detail": "",
                    "shards": [i % 4] if step == "retraining" else [],
                    "meta": meta,
                }
            )
        deletions.append((rid, version, request.sha256, request.record_hashes))
    return entries, deletions


def signed_manifest(root: Path, version: int, trusted: dict):
    """History version ``version``, signature verified, and its leaves."""
    path = history_versions(root / "data" / "manifests")[version]
    payload = verify_envelope(read_envelope(path, what="manifest"), trusted, what="manifest")
    manifest = SignedManifest(
        parse_statement(payload, MANIFEST_TYPE, what="manifest"), sha256_hex(payload)
    )
    leaves = parse_leaves(path.with_name(path.name.replace(".dsse.json", ".leaves")).read_bytes(),
                          what=str(path))  # fmt: skip
    return manifest, leaves


def make_receipts(root: Path, signer, trusted: dict, deletions) -> tuple[Path, ...]:
    """One receipt per completed deletion, against its version (one version in memory)."""
    out, loaded = [], (None, None)
    for rid, version, entry_sha, removed in deletions:
        if loaded[0] != version:
            loaded = (version, signed_manifest(root, version, trusted))
        manifest, leaves = loaded[1]
        path = root / "data" / "receipts" / f"{rid}.dsse.json"
        issue_receipt(
            path,
            signer,
            request_id=rid,
            ledger_entry_sha256=entry_sha,
            manifest=manifest,
            leaves=leaves,
            removed=removed,
            models_before={"ensemble": "4" * 64},
            models_after={"ensemble": "5" * 64},
            retrained_shards=[int(rid[-6:]) % 4],
        )
        out.append(path)
    return tuple(out)


def build_history(root: Path, n: int, m: int, people: int = 12) -> History:
    start = time.perf_counter()
    signer, trusted = make_project(root, people)
    make_manifests(root, signer, m)
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    entries, deletions = deletion_entries(n, m, at)
    _write(root, tuple(entries), signer)
    receipts = make_receipts(root, signer, trusted, deletions)
    leaves = len(parse_leaves((root / "data/manifest.leaves").read_bytes(), what="leaves"))
    took = time.perf_counter() - start
    return History(root, signer, trusted, len(entries), m, receipts, leaves, took)


# -- the measurements -----------------------------------------------------------------


def best_of(fn: Callable[[], object], repeat: int, budget_s: float) -> tuple[float, object]:
    """Best of ``repeat`` runs, stopping early once ``budget_s`` is spent (at least one run).

    At the largest sizes one run of ``check_deletions`` can take many minutes;
    repeating it would only confirm that.
    """
    best, out, spent = float("inf"), None, 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t
        best, spent = min(best, took), spent + took
        if spent >= budget_s:
            break
    return best, out


def bundle_files(root: Path) -> dict[str, bytes]:
    """What a bundle carries of the deletion history (``verify.audit.bundle`` takes these)."""
    names = ["data/ledger.jsonl", "data/ledger.head.dsse.json", "data/manifest.dsse.json"]
    names.append("data/manifest.leaves")
    files = {n: (root / n).read_bytes() for n in names}
    for folder in ("data/manifests", "data/receipts", "policies/trusted_keys"):
        for p in sorted((root / folder).iterdir()):
            files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


def audit_checks(files: dict[str, bytes], trusted: dict) -> tuple[dict, Path]:
    """The history checks of ``verify_bundle``, on the files extracted as it extracts them."""
    from verify.audit.checks import CHECKS, _Context, _run

    tmp = Path(tempfile.mkdtemp(prefix="exante-bench-audit-"))
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    ctx = _Context(files, trusted, tmp)
    chosen = {AUDIT_CHECKS[fn.__name__]: fn for _, fn in CHECKS if fn.__name__ in AUDIT_CHECKS}
    if len(chosen) != len(AUDIT_CHECKS):
        raise SystemExit(f"verify.audit.checks lacks one of {', '.join(AUDIT_CHECKS)}")

    def run(name: str, fn) -> object:
        check = _run(name, fn, ctx)
        if not check.ok:
            raise SystemExit(
                f"audit check {name!r} failed, the benchmark is void: {check.problems}"
            )
        return check

    return {name: (lambda name=name, fn=fn: run(name, fn)) for name, fn in chosen.items()}, tmp


def one_append(history: History) -> float:
    """A real ``append_request`` on the ledger as it is (the next deletion arriving)."""
    root = history.root
    backup = {p: p.read_bytes() for p in (root / "data" / "ledger.jsonl",
                                          root / "data" / "ledger.head.dsse.json")}  # fmt: skip
    with ledger_lock(root) as lock:
        t = time.perf_counter()
        append_request(
            lock, history.signer, history.trusted, request_id="del-next", reason="bench",
            record_hashes={"crm/deleted-next": text_sha256("deleted text next")},
        )  # fmt: skip
        seconds = time.perf_counter() - t
    for p, data in backup.items():
        p.write_bytes(data)
    return seconds


def measure(history: History, repeat: int, budget_s: float) -> dict[str, float]:
    times = {}
    times["ledger verify"], ledger = best_of(
        lambda: verify_ledger(history.root, history.trusted), repeat, budget_s
    )
    if len(ledger.entries) != history.entries:
        raise SystemExit("verify_ledger read another number of entries: the benchmark is void")
    times["one append"] = one_append(history)
    fns, tmp = audit_checks(bundle_files(history.root), history.trusted)
    try:
        for name, fn in fns.items():
            times[f"audit: {name}"], _ = best_of(fn, repeat, budget_s)
    finally:
        shutil.rmtree(tmp)
    times["receipt verify"], receipt = best_of(
        lambda: verify_receipt(history.receipts[-1], history.trusted), repeat, budget_s
    )
    if not receipt.removed:
        raise SystemExit("the receipt proves nothing removed: the benchmark is void")
    return times


# What each timing is expected to scale with (the size ratio printed beside it).
SCALE = {
    "ledger verify": "N",
    "one append": "N",
    "audit: ledger": "N",
    "audit: manifest chain": "M",
    "audit: deletions": "N x M",
    "receipt verify": "1",
}


def scale(kind: str, n: int, m: int) -> float:
    return {"N": n, "M": m, "N x M": n * m, "1": 1}[kind]


def report(rows: list[tuple[int, int, History, dict[str, float]]]) -> None:
    (n0, m0, _, t0) = rows[0]
    print(f"\n{'':28}" + "".join(f"{f'N={n:,} M={m:,}':>22}" for n, m, _, _ in rows))
    print(f"{'  build (s)':28}" + "".join(f"{h.build_s:22.2f}" for _, _, h, _ in rows))
    print(f"{'  receipts':28}" + "".join(f"{len(h.receipts):22,}" for _, _, h, _ in rows))
    print(f"{'  leaves per version':28}" + "".join(f"{h.leaves:22,}" for _, _, h, _ in rows))
    for name in SCALE:
        cells = "".join(f"{t[name]:22.4f}" for _, _, _, t in rows)
        print(f"  {name + ' (s)':26}{cells}")
    print("\ngrowth against the smallest size (time ratio vs size ratio):")
    for n, m, _, t in rows[1:]:
        print(f"  N={n:,} M={m:,}:")
        for name, kind in SCALE.items():
            ratio = t[name] / t0[name] if t0[name] else float("inf")
            size = scale(kind, n, m) / scale(kind, n0, m0)
            print(f"    {name:24} {ratio:9.1f}x   ({kind} grew {size:,.1f}x)")


def machine() -> str:
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench_ledger: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for n, m in sorted(zip(args.sizes, args.manifests, strict=True)):
        with tempfile.TemporaryDirectory(prefix="exante-bench-ledger-") as tmp:
            history = build_history(Path(tmp) / "project", n, m, args.people)
            print(f"  built N={history.entries:,} M={m:,} in {history.build_s:.1f} s", flush=True)
            rows.append((history.entries, m, history, measure(history, args.repeat, args.budget)))
    report(rows)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
