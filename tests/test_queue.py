"""The deletion queue through the CLI: ``delete --enqueue``, ``ledger status``, ``delete --flush``.

On a small project built through the gate (no pipeline, no DVC): enqueueing
only writes the ledger and a signed acknowledgement, so it needs neither. The
flush that retrains is in tests/test_queue_flush.py (it needs a pipeline).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from exante.queue import Period
from lineage.acknowledgement import RULE, deadline_for, verify_acknowledgement
from lineage.errors import UntrustedKeyError
from lineage.ledger import HEAD, LEDGER, verify_ledger
from lineage.signing import load_trusted_keys, sign_envelope, write_envelope
from tests._cli import exante
from tests.conftest import Keys, Project, records_of


def _trusted(project: Project) -> dict:
    return load_trusted_keys(project.root / "policies" / "trusted_keys")


def _files(root: Path) -> dict[str, bytes]:
    """What a deletion could change: the ledger, its head, data, models (the lock is not data)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "ledger.lock"}  # fmt: skip


def _enqueue(project: Project, *args: str):
    return exante(project.root, "delete", "--enqueue", *args)


def test_enqueue_acknowledges_with_the_deadline_and_does_not_retrain(project: Project):
    root = project.root
    before = set(_files(root))
    r = _enqueue(project, "--subject", "p0001", "--reason", "T-1", "--request-id", "q-1")
    assert r.code == 0, r.err
    assert "q-1: " in r.out and "queued; receipt due by" in r.out

    ledger = verify_ledger(root, _trusted(project))
    assert ledger.status_of("q-1") == "queued"
    request = ledger.request("q-1")
    assert set(request.record_ids) == {x["record_id"] for x in records_of(root, "p0001")}
    received = datetime.fromisoformat(request.received_at)
    ack = verify_acknowledgement(root / "data/acks/q-1.dsse.json", _trusted(project))
    assert (
        ack.deadline == deadline_for(received, months=1).isoformat() == ledger.ack("q-1").deadline
    )
    assert ack.received_at == request.received_at and ack.rule == RULE
    assert ack.ledger_entry_sha256 == request.sha256
    written = set(_files(root)) - before  # the ledger, its head, the ack; no model, no deny set
    assert written == {LEDGER.as_posix(), HEAD.as_posix(), "data/acks/q-1.dsse.json"}
    assert exante(root, "ledger", "verify").code == 0


def _usage(project: Project, capsys, *args: str) -> str:
    """argparse's exit 2 happens before ``main`` maps anything: its message, from stderr."""
    from exante.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["-C", str(project.root), *args])
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_status_lists_pending_requests_and_fails_once_one_is_overdue(project: Project, capsys):
    root = project.root
    assert _enqueue(project, "--record", "crm/p0002-city", "--reason", "T-2",
                    "--request-id", "q-2").code == 0  # fmt: skip
    due = datetime.fromisoformat(verify_ledger(root, _trusted(project)).ack("q-2").deadline)

    on_time = exante(root, "ledger", "status", "--as-of", "2026-12-01")  # before any receipt
    early = exante(root, "ledger", "status", "--as-of", (due.replace(second=0)).isoformat())
    late = exante(root, "ledger", "status", "--as-of", f"{due.year + 1}-01-01")
    assert on_time.code == 0 and early.code == 0, early.out + early.err
    assert "pending deletion requests as of" in early.out and "q-2" in early.out
    assert "queued" in early.out and "left" in early.out
    assert late.code == 1
    assert "OVERDUE by" in late.out and "1 deletion requests overdue: q-2" in late.err
    assert "exante delete --flush" in late.err
    assert "is not a date" in _usage(project, capsys, "ledger", "status", "--as-of", "soon")


def test_the_period_is_a_params_value(project: Project):
    root = project.root
    (root / "params.yaml").write_text(yaml.safe_dump(
        {"deletion": {"deadline_months": 0, "deadline_days": 10}}))  # fmt: skip
    assert _enqueue(project, "--record", "crm/p0003-city", "--reason", "T-3",
                    "--request-id", "q-3").code == 0  # fmt: skip
    ledger = verify_ledger(root, _trusted(project))
    received = datetime.fromisoformat(ledger.request("q-3").received_at)
    assert (datetime.fromisoformat(ledger.ack("q-3").deadline) - received).days == 10
    assert "params deletion" in ledger.ack("q-3").rule
    (root / "params.yaml").write_text(yaml.safe_dump(
        {"deletion": {"deadline_months": 0, "deadline_days": 0}}))  # fmt: skip
    r = _enqueue(project, "--record", "crm/p0003-email", "--reason", "T-4")
    assert r.code == 3 and "deletion" in r.err and "give a period" in r.err


def test_one_month_is_a_calendar_month():
    jan31 = datetime(2027, 1, 31, 9, tzinfo=UTC)
    assert deadline_for(jan31, months=1) == datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert deadline_for(datetime(2027, 12, 15, tzinfo=UTC), months=1).month == 1
    assert Period(0, 30).deadline(jan31) == datetime(2027, 3, 2, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subject", "p9999", "--reason", "T"], "subject 'p9999' has no records"),
        (["--record", "crm/nobody", "--reason", "T"], "'crm/nobody' is not in data/records"),
        (["--subject", "p0001", "--reason", "T", "--request-id", "a b"], "is malformed"),
        (["--subject", "p0001", "--reason", "T", "--request-id=-x"], "is malformed"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_written(project, args, message):
    before = _files(project.root)
    r = _enqueue(project, *args)
    assert r.code == 3 and message in r.err, r.err
    assert _files(project.root) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--enqueue", "--subject", "p0001"], "needs --reason"),
        (["--enqueue", "--subject", "p1", "--reason", "T", "--plan"], "--enqueue takes no --plan"),
        (["--flush", "--subject", "p0001"], "--flush takes no records"),
    ],
)
def test_usage_errors_exit_2(project, capsys, args, message):
    assert message in _usage(project, capsys, "delete", *args)


def test_flush_with_nothing_pending_says_so_and_writes_nothing(project: Project):
    before = _files(project.root)
    r = exante(project.root, "delete", "--flush")
    assert r.code == 0 and "no pending deletion requests" in r.out
    assert _files(project.root) == before


def test_a_forged_acknowledgement_is_refused(project: Project, keys: Keys):
    assert _enqueue(project, "--record", "crm/p0004-city", "--reason", "T",
                    "--request-id", "q-5").code == 0  # fmt: skip
    path = project.root / "data/acks/q-5.dsse.json"
    payload = json.loads(path.read_text())["payload"]
    import base64

    write_envelope(path, sign_envelope(base64.b64decode(payload), keys.stranger))
    with pytest.raises(UntrustedKeyError):
        verify_acknowledgement(path, _trusted(project))


def test_a_flush_that_fails_leaves_every_request_pending_for_the_next(project: Project):
    """No pipeline here, so ``dvc repro`` fails: the requests are ``failed``, not lost."""
    root = project.root
    for n in (6, 7):
        assert _enqueue(project, "--record", f"crm/p000{n}-city", "--reason", "T",
                        "--request-id", f"q-{n}").code == 0  # fmt: skip
    first = exante(root, "delete", "--flush")
    assert first.code == 1 and "dvc repro" in first.err and "--resume" in first.err
    ledger = verify_ledger(root, _trusted(project))
    assert [ledger.status_of(f"q-{n}") for n in (6, 7)] == ["failed", "failed"]
    assert not (root / "data/receipts").exists()
    status = exante(root, "ledger", "status")
    assert status.code == 0 and status.out.count(" failed ") == 2
    again = exante(root, "delete", "--flush")  # takes both up again, from retraining
    assert again.code == 1 and "processing 2 requests together: q-6, q-7" in again.out
    assert exante(root, "ledger", "verify").code == 0


def test_a_deletions_repro_reaches_every_stage_but_the_audit(tmp_path):
    from exante._dvc import _targets

    assert _targets(tmp_path, ("audit",)) == []  # no dvc.yaml: a plain `dvc repro` says so
    (tmp_path / "dvc.yaml").write_text("stages: [unclosed")
    assert _targets(tmp_path, ("audit",)) == []  # unreadable: the same
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train: {cmd: t}\n  audit: {cmd: a}\n  ingest: {foreach: [1], do: {cmd: i}}\n"
    )
    assert _targets(tmp_path, ("audit",)) == ["ingest", "train"]  # unconnected: both named
    assert _targets(tmp_path, ()) == []  # nothing skipped: every stage, as `dvc repro` does
    chain = ("stages:\n  up: {cmd: u, outs: [a]}\n  mid: {cmd: m, deps: [a], outs: [b]%s}\n"
             "  leaf: {cmd: l, deps: [b], outs: [c]}\n  audit: {cmd: x, deps: [c]}\n")  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(chain % "")
    assert _targets(tmp_path, ("audit",)) == ["leaf"]  # up and mid are its upstream
    (tmp_path / "dvc.yaml").write_text(chain % ", frozen: true")
    # DVC cuts a frozen stage's upstream off: `dvc repro leaf` would not reach up
    assert _targets(tmp_path, ("audit",)) == ["leaf", "mid", "up"]
    (tmp_path / "dvc.yaml").write_text(chain % ", wdir: sub")  # paths move: no guessing
    assert _targets(tmp_path, ("audit",)) == ["leaf", "mid", "up"]
    loop = "stages:\n  p: {cmd: p, deps: [b], outs: [a]}\n  q: {cmd: q, deps: [a], outs: [b]}\n"
    (tmp_path / "dvc.yaml").write_text(loop + "  audit: {cmd: x}\n")
    assert _targets(tmp_path, ("audit",)) == ["p", "q"]  # none unread: every stage named


def test_the_repro_targets_are_the_stages_no_other_reads_and_reach_every_stage():
    """``dvc repro`` of the targets runs their upstream: on the repository's pipeline, every
    stage but the audit is upstream of (or is) a target, and the audit is not."""
    from exante._dvc import _paths, _reads, _targets

    root = Path(__file__).resolve().parents[1]
    targets = _targets(root, ("audit",))
    assert targets == ["report", "verify"]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    body = {n: s.get("do", s) for n, s in stages.items()}
    outs = {m: _paths(s, "outs", "metrics", "plots") for m, s in body.items()}
    reached, todo = set(), list(targets)
    while todo:  # walk upstream: a stage whose outputs a reached stage reads
        n = todo.pop()
        reached.add(n)
        deps = _paths(body[n], "deps")
        todo += [m for m in body if m not in reached and m != n and _reads(deps, outs[m])]
    assert reached == set(stages) - {"audit"}
