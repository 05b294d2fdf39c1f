"""``exante delete`` end to end: a real ``dvc repro`` in a throwaway git repo with a DVC remote.

One person is deleted; only their shard retrains (from its clean slices), the
receipt verifies offline, the pipeline is a no-op afterwards, and none of their
text is left anywhere under the project or in the remote.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Deletion, contains, records_of
from tests.test_pipeline import BIN, run

# The first three run by default (one deletion, end to end); the crash and concurrency
# tests each run more deletions and are opt-in (`make test-all`).


@pytest.fixture(scope="module")
def project(deletion: Deletion) -> tuple[Path, Path]:
    """The shared project (tests/conftest.py), after its one deletion (req-42)."""
    return deletion.root, deletion.remote


def _tree(*dirs: Path) -> dict[str, str]:
    """Every file and its digest; the ledger's (empty) lock file is not data."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "ledger.lock"
    }


def _leaks(dirs: list[Path], needles: list[bytes]) -> list[str]:
    found = []
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                if p.name.endswith(".tar.gz"):  # the audit bundle: search what it holds
                    data = gzip.decompress(data)
                found += [f"{p}: {n!r}" for n in needles if contains(data, n)]
    return found


def test_delete_refuses_unknown_ids_and_plan_writes_nothing(project):
    root, remote = project
    before = _tree(root, remote)
    out = run(["exante", "delete", "--record", "crm/nobody-email", "crm/p0001-city",
               "--subject", "p9999", "--reason", "T-1"], root, check=False)  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert "'crm/nobody-email' is not in data/records" in out.stderr
    assert "subject 'p9999' has no records" in out.stderr
    plan = run(["exante", "delete", "--subject", "p0003", "--reason", "T-2", "--plan"], root)
    assert "plan (dry run, nothing written)" in plan.stdout
    assert "estimated retrain cost" in plan.stdout and "shard " in plan.stdout
    assert _tree(root, remote) == before
    usage = run(["exante", "delete", "--subject", "p0003"], root, check=False)
    assert usage.returncode == 2 and "needs --reason" in usage.stderr


def test_delete_a_person_retrains_one_shard_and_purges_every_copy(deletion: Deletion):
    root, remote, records = deletion.root, deletion.remote, deletion.records
    needles = [r["text"].encode() for r in records] + [deletion.canary.encode()]
    assert set(needles) <= set(deletion.needles_before)  # all there before the deletion
    other = records_of(root, "p0001")[0]["text"].encode()
    assert _leaks([root], [other])  # the grep finds a retained person's text
    assert len(deletion.placed) == 1  # a person's records share one shard
    ((shard, slices),) = deletion.placed.items()
    metrics = deletion.metrics_before
    assert "req-42: complete" in deletion.stdout
    (log,) = [p.read_text() for p in (root / ".exante/logs").glob("repro-*.log")]
    assert "Running stage 'train'" in log  # the deletion's own dvc repro, kept
    (warm,) = [p.read_text() for p in (root / ".exante/logs").glob("warm-*.log")]
    assert ": train shards\n" in warm and ": a pool worker\n" in warm  # forked, not spawned
    assert "Running stage 'audit'" not in log  # the bundle is built once, after the receipt
    # only the sources that held the person re-ingest: the others' raw files did not change
    ingested = set(re.findall(r"Running stage 'ingest@([\w-]+)'", log))
    assert ingested == {r["source_id"] for r in records}, ingested

    for s in range(4):
        now = (root / f"models/shards/s{s:02d}/metrics.json").read_bytes()
        assert (now != metrics[s]) == (s == shard), f"shard {s}"
    m = json.loads((root / f"models/metrics/s{shard:02d}.json").read_text())
    assert m["reused_slices"] == list(range(min(slices)))  # the clean prefix is reused
    assert m["trained_slices"] == list(range(min(slices), 2))

    receipt = root / "data/receipts/req-42.dsse.json"
    verified = run(["exante", "receipt", "verify", str(receipt)], root)
    assert f"{len(records)} non-inclusion proofs verified" in verified.stdout
    payload = base64.b64decode(json.loads(receipt.read_text())["payload"])
    predicate = json.loads(payload)["predicate"]
    assert predicate["retrained_shards"] == [shard]
    assert predicate["manifest"]["version"] == 2
    ledger = run(["exante", "ledger", "verify"], root).stdout
    assert re.search(r"req-42\s+complete", ledger)
    _check_mlflow_run(root, "req-42", slices_reused=min(slices))

    again = run(["dvc", "repro"], root).stdout
    assert "Running stage" not in again
    assert (root / "data/ledger.jsonl.dvc").is_file()  # the ledger is under DVC control
    assert "up to date" in run(["dvc", "status"], root).stdout

    bundle = root / "data/audit/bundle.tar.gz"  # rebuilt with the receipt, searched unpacked
    assert b"data/receipts/req-42.dsse.json" in gzip.decompress(bundle.read_bytes())
    assert _leaks([root, remote], needles) == []
    assert records_of(root, deletion.subject) == []
    # a re-generated corpus and a re-ingest leave the person out
    run(["exante", "corpus", "--out", "data/raw"], root)
    run(["exante", "ingest"], root)
    assert records_of(root, deletion.subject) == []
    assert "Running stage" not in run(["dvc", "repro"], root).stdout


def test_the_retrained_shard_is_bit_identical_to_training_from_scratch(project, tmp_path):
    """The proof that deletion is exact: retrain-from-the-clean-slice == from scratch."""
    import safetensors.torch as st
    import torch

    from training.sisa import final_checkpoint

    root, _ = project
    receipt = json.loads((root / "data/receipts/req-42.dsse.json").read_text())
    (shard,) = json.loads(base64.b64decode(receipt["payload"]))["predicate"]["retrained_shards"]
    copy = tmp_path / "scratch"
    shutil.copytree(root, copy, symlinks=True)
    shutil.rmtree(copy / f"models/shards/s{shard:02d}")  # no checkpoint to start from
    run(["exante", "train", "shard", "--shard", str(shard)], copy)
    m = json.loads((copy / f"models/metrics/s{shard:02d}.json").read_text())
    assert m["reused_slices"] == [] and m["trained_slices"] == [0, 1]
    a = st.load_file(final_checkpoint(root / f"models/shards/s{shard:02d}") / "model.safetensors")
    b = st.load_file(final_checkpoint(copy / f"models/shards/s{shard:02d}") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _slice1_records(root: Path, n: int) -> tuple[int, list[str]]:
    """``n`` crm records in slice 1 of one shard, not yet named by the ledger."""
    ledger = root / "data/ledger.jsonl"
    rows = [json.loads(x) for x in ledger.read_text().splitlines()] if ledger.exists() else []
    named = {i for r in rows for i in r.get("record_ids", [])}
    for f in sorted((root / "data" / "shards").glob("s*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        ids = [r["record"]["record_id"] for r in rows if r["slice"] == 1]
        ids = [i for i in ids if i.startswith("crm/") and i not in named]
        if len(ids) >= n:
            return int(f.stem[1:]), ids[:n]
    raise AssertionError("no shard has enough records in slice 1")


def _b_statuses(ledger: Path) -> bytes:
    """Status entries of the batch (canonical JSON puts ``request_id`` before ``seq``)."""
    lines = ledger.read_bytes().splitlines() if ledger.exists() else []
    return b"\n".join(x for x in lines if b'"kind":"status"' in x and b'"request_id":"b' in x)


def _status(root: Path, request_id: str) -> str:
    out = run(["exante", "ledger", "verify"], root).stdout
    return re.search(rf"{re.escape(request_id)}\s+(\w+)", out).group(1)


@pytest.mark.slow
def test_a_killed_batch_is_finished_by_resume_retraining_its_shard_once(project):
    root, remote = project
    shard, ids = _slice1_records(root, 2)
    texts = [
        json.loads(line)["text"].encode()
        for line in (root / "data/records/crm.jsonl").read_text().splitlines()
        if json.loads(line)["record_id"] in ids
    ]
    metrics = {s: (root / f"models/shards/s{s:02d}/metrics.json").read_bytes() for s in range(4)}
    requests = root.parent / "batch.jsonl"
    requests.write_text("".join(
        json.dumps({"request_id": f"b{n}", "reason": "T-7", "record_ids": [i]}) + "\n"
        for n, i in enumerate(ids)
    ))  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["exante", "delete", "--from-file", str(requests)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    ledger, deadline = root / "data/ledger.jsonl", time.monotonic() + 120
    while b'"request_id":"b1","schema_version":1,"seq":' not in _b_statuses(ledger):
        assert proc.poll() is None and time.monotonic() < deadline, "never reached retraining"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its dvc repro, mid-pipeline
    proc.wait()
    assert _status(root, "b0") == "retraining" and _status(root, "b1") == "retraining"

    run(["exante", "delete", "--resume"], root)
    assert _status(root, "b0") == "complete" and _status(root, "b1") == "complete"
    for s in range(4):
        now = (root / f"models/shards/s{s:02d}/metrics.json").read_bytes()
        assert (now != metrics[s]) == (s == shard), f"shard {s}"
    m = json.loads((root / f"models/metrics/s{shard:02d}.json").read_text())
    assert (m["reused_slices"], m["trained_slices"]) == ([0], [1])  # once, from the clean slice
    for n in range(2):
        run(["exante", "receipt", "verify", f"data/receipts/b{n}.dsse.json"], root)
    assert _leaks([root, remote], texts) == []
    assert "Running stage" not in run(["dvc", "repro"], root).stdout


@pytest.mark.slow
def test_a_failed_purge_is_marked_failed_and_resumed(project):
    root, remote = project
    _, (record,) = _slice1_records(root, 1)
    aside = remote.with_name(remote.name + ".aside")
    remote.rename(aside)
    remote.write_text("not a directory")  # dvc push fails: the remote is unusable
    try:
        out = run(["exante", "delete", "--record", record, "--reason", "T-9",
                   "--request-id", "f1"], root, check=False)  # fmt: skip
    finally:
        remote.unlink()
        aside.rename(remote)
    assert out.returncode == 1, out.stderr
    assert "exante delete --resume" in out.stderr and "dvc push" in out.stderr
    assert _status(root, "f1") == "failed"
    run(["exante", "delete", "--resume"], root)
    assert _status(root, "f1") == "complete"
    run(["exante", "receipt", "verify", "data/receipts/f1.dsse.json"], root)


def _check_mlflow_run(root: Path, request_id: str, *, slices_reused: int) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("exante-deletion")
    (found,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`exante.request_ids` = '{request_id}'"
    )
    assert found.info.status == "FINISHED"
    m = found.data.metrics
    assert m["shards_retrained"] == 1 and m["slices_reused"] == slices_reused
    assert 0 < m["estimated_cost_ratio"] < 1 and m["wall_seconds"] > 0


def _entries(root: Path) -> list[dict]:
    ledger = root / "data/ledger.jsonl"
    return [json.loads(x) for x in ledger.read_text().splitlines()] if ledger.exists() else []


@pytest.mark.slow
def test_two_concurrent_deletions_are_serialized_and_both_honoured(project):
    root, _ = project
    _, ids = _slice1_records(root, 2)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    procs = [
        subprocess.Popen(
            ["exante", "delete", "--record", rid, "--reason", "T-8", "--request-id", f"c{n}"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, rid in enumerate(ids)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
    # one deletion ran from received to complete before the other was received
    mine = [e["request_id"] for e in _entries(root) if e.get("request_id") in {"c0", "c1"}]
    assert mine == sorted(mine, key=lambda r: r != mine[0])
    for n in range(2):
        assert _status(root, f"c{n}") == "complete"
        run(["exante", "receipt", "verify", f"data/receipts/c{n}.dsse.json"], root)
    assert not {r["record_id"] for r in _records_of_all(root)} & set(ids)


def _records_of_all(root: Path) -> list[dict]:
    rows = []
    for f in sorted((root / "data" / "records").glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("status", ["received", "purged"])
def test_a_kill_at_another_point_keeps_the_ledger_honest_and_resume_finishes(project, status):
    root, _ = project
    _, (record,) = _slice1_records(root, 1)
    rid = f"k-{status}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["exante", "delete", "--record", record, "--reason", "T-10",
                             "--request-id", rid], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300

    def reached() -> bool:
        for e in _entries(root):
            if e.get("request_id") == rid and (e.get("status") == status or status == "received"):
                return True
        return False

    while not reached():
        assert proc.poll() is None and time.monotonic() < deadline, f"never reached {status}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    check = run(["exante", "ledger", "verify"], root, check=False)
    if check.returncode == 0:
        assert not re.search(rf"{rid}\s+complete", check.stdout)
    else:  # killed between the ledger's rename and its head's: one unsigned line
        assert "appended after the head was signed" in check.stderr, check.stderr
        assert "exante delete --resume" in check.stderr
    resumed = run(["exante", "delete", "--resume"], root).stdout
    if f"request {rid} was never acknowledged; send it again" in resumed:
        assert status == "received"  # only a request can be rolled back before it is acknowledged
        run(["exante", "delete", "--record", record, "--reason", "T-10", "--request-id", rid], root)
    assert _status(root, rid) == "complete"
    run(["exante", "receipt", "verify", f"data/receipts/{rid}.dsse.json"], root)
    assert record not in {r["record_id"] for r in _records_of_all(root)}
    assert "Running stage" not in run(["dvc", "repro"], root).stdout


def test_the_plan_counts_replayed_characters_for_every_slice():
    from exante._cost import slice_cost as _slice_cost
    from training.config import Schedule, TrainConfig

    cfg = TrainConfig(slices=4, shard=Schedule(max_epochs=10, replay=0.25))
    assert [_slice_cost(cfg, [100] * 4, r) for r in range(4)] == [1000, 1250, 1500, 1750]
    fixed = TrainConfig(slices=4, shard=Schedule(max_epochs=10, slice_epochs=2))
    assert [_slice_cost(fixed, [100] * 4, r) for r in range(4)] == [200, 400, 600, 4000]
    equal = TrainConfig(slices=4, shard=Schedule(max_epochs=10, slice_work="equal"))
    assert [_slice_cost(equal, [100] * 4, r) for r in range(4)] == [4000, 4000, 3900, 4000]
    # min_steps 40, 4 records a slice: 1, 1, 2, 2 steps an epoch raise the caps to 40, 40, 20, 20
    floor = TrainConfig(
        slices=4, shard=Schedule(max_epochs=10, slice_work="equal", min_steps=40, batch_size=8)
    )
    assert [_slice_cost(floor, [100] * 4, r, [4] * 4) for r in range(4)] == [4000, 8000, 6000, 8000]
    big = [_slice_cost(floor, [100] * 4, r, [80] * 4) for r in range(4)]  # 10+ steps: no raise
    assert big == [4000, 4000, 3900, 4000]


def test_the_plan_counts_the_caps_a_step_floor_raises_on_what_remains(tmp_path):
    """One slice of 9 records; deleting 2 leaves 7: 2 steps an epoch become 1, so under
    min_steps 8 the cap rises from 4 to 8 epochs, and the plan prices the retrain at 8."""
    from exante._cost import plan
    from lineage.layout import LAYOUT
    from lineage.records import Record
    from training.config import Schedule, TrainConfig
    from training.partition import Placement, write_shards

    recs = [Record.make(f"t/{i}", "t", [f"p{i}"], "x" * 10) for i in range(9)]
    cfg = TrainConfig(shards=1, slices=1,
                      shard=Schedule(max_epochs=2, batch_size=8, min_steps=8))  # fmt: skip
    out = tmp_path / LAYOUT.shard_file(0).parent
    write_shards(recs, [Placement(0, 0, r.record_id) for r in recs], shards=1, out_dir=out)
    (tmp_path / LAYOUT.base_file()).write_text("")
    cost = plan(tmp_path, cfg, ["t/0", "t/1"])["cost"]
    assert cost["full"] == 4 * 90  # 9 records: 2 steps an epoch, cap 4 epochs, 90 characters
    assert cost["retrain"] == 8 * 90  # 7 remain: 1 step, cap 8 (characters counted before)
    unfloored = cfg.model_copy(update={"shard": cfg.shard.model_copy(update={"min_steps": None})})
    assert plan(tmp_path, unfloored, ["t/0", "t/1"])["cost"]["retrain"] == 2 * 90


def test_a_verified_deletion_keeps_a_signed_report_that_outlives_the_release(deletion: Deletion):
    """``--verify``: the request's own records, measured before their text was gone."""
    root = deletion.root
    ((shard, _),) = deletion.placed.items()
    where = root / "data/receipts/verification/req-42"
    checked = run(["exante", "verify", "check", str(where / "report.dsse.json")], root,
                  check=False)  # fmt: skip
    assert "verification report OK" in checked.stdout  # signed, every file it names unchanged
    # one person: nothing to relearn on, so exact is inconclusive and the check says so
    assert checked.returncode == 1 and "NOT SHOWN: exact is inconclusive" in checked.stdout
    results = json.loads((where / "results.json").read_text())
    ids = {r["record_id"] for r in deletion.records}
    crm = {i for i in ids if i.startswith("crm/")}
    assert crm and crm <= set(results["forget_set"]["forget_records"]) <= ids
    assert results["forget_set"]["forget_people"] == [deletion.subject]
    assert results["forget_set"]["shard"] == shard
    assert results["relearn_split"]["skipped"].startswith("one person")
    assert results["summary"]["exact"]["verdict"] == "inconclusive"  # never pass by absence
    assert "relearn/relearn_em" in results["summary"]["exact"]["inconclusive"]
    assert results["subjects"]["exact"] == results["subjects"]["retrain"]  # bit-identical

    entries = [json.loads(x) for x in (root / "data/ledger.jsonl").read_text().splitlines()]
    (entry,) = [e for e in entries if e["request_id"] == "req-42" and e.get("status") == "complete"]
    info = entry["meta"]["verification"]["req-42"]
    assert info["exact_is_release"] is True
    assert info["verdicts"]["exact"] == "inconclusive" and info["shard"] == shard
    assert "verified in shard" in deletion.stdout
    assert not list((root / "models").glob("*.tmp"))  # the scratch workspace is gone
    assert not (root / "data/verification/requests").exists()


def test_delete_verify_refuses_records_in_two_shards_before_writing(deletion: Deletion):
    root = deletion.root
    ledger = (root / "data/ledger.jsonl").read_bytes()
    by_shard = {}
    for s in range(4):
        for row in (root / f"data/shards/s{s:02d}.jsonl").read_text().splitlines():
            rid = re.search(r'"record_id": ?"(crm/[^"]+)"', row)
            if rid:
                by_shard.setdefault(s, rid.group(1))
    a, b = list(by_shard.values())[:2]
    out = run(["exante", "delete", "--record", a, b, "--reason", "T-9", "--verify"], root,
              check=False)  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert "one request per shard" in out.stderr
    assert (root / "data/ledger.jsonl").read_bytes() == ledger
    usage = run(["exante", "delete", "--resume", "--verify"], root, check=False)
    assert usage.returncode == 2 and "--verify" in usage.stderr


def test_a_source_still_holding_a_removed_record_is_ingested_again_by_force(tmp_path, monkeypatch):
    """A raw change DVC does not see (a file .dvcignore hides) leaves ingest cached: the
    deletion finds the record still there and forces that source's ingest, then the rest."""
    from exante import _cost, _stream, deletion
    from lineage.records import Record, write_records

    kept, gone = (Record.make(f"crm/p0001-{f}", "crm", ["p0001"], f"{f} text") for f in "ab")
    (tmp_path / "data/records").mkdir(parents=True)
    write_records(tmp_path / "data/records/crm.jsonl", [kept, gone])
    (tmp_path / "dvc.yaml").write_text("stages:\n  ingest: {foreach: [crm], do: {cmd: i}}\n"
                                       "  audit: {cmd: a}\n")  # fmt: skip
    cmds = []

    def dvc(cmd, *args, **kwargs):  # `python -m dvc ...`: what it was asked to run
        cmds.append(cmd[3:])
        return 0, []

    monkeypatch.setattr(_stream, "run_streamed", dvc)
    monkeypatch.setattr(_cost, "plan", lambda *a: {"shards": {}})
    ctx = deletion.Context(root=tmp_path, cfg=None, signer=None, trusted={}, progress=None)
    deletion._repro(ctx, {gone.record_id: gone.sha256})
    assert cmds == [["repro", "ingest"], ["repro", "-f", "-s", "ingest@crm"], ["repro", "ingest"]]
    cmds.clear()
    write_records(tmp_path / "data/records/crm.jsonl", [kept])  # gone, as a deletion leaves it
    deletion._repro(ctx, {gone.record_id: gone.sha256})
    assert cmds == [["repro", "ingest"]]
