"""The ledger's deny set where records are made: the corpus, ingest, and its dvc dep file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage.corpus import generate
from lineage.erasure import DENIED, denials, write_denied
from lineage.errors import LedgerEntryError
from lineage.gate import Denials
from lineage.ledger import append_request, ledger_lock
from lineage.records import read_all
from lineage.signing import load_trusted_keys
from lineage.stages import run_ingest
from tests.conftest import SMALL, Project, make_project


def _request(p: Project, **kw) -> None:
    trusted = load_trusted_keys(p.root / "policies" / "trusted_keys")
    with ledger_lock(p.root) as lock:
        append_request(lock, p.signer, trusted, request_id="r1", reason="T-1", **kw)


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return make_project(tmp_path / "proj")


def test_no_ledger_denies_nothing(proj):
    assert denials(proj.root) == Denials()


def test_ingest_leaves_out_denied_subjects_and_records(proj):
    run_ingest(proj.root)
    records = read_all(proj.root / "data" / "records")
    who = next(r.subject_ids[0] for r in records if r.source_id == "support_legacy")
    p1 = {r.record_id: r.sha256 for r in records if who in r.subject_ids}
    other = next(r for r in records if r.subject_ids and r.subject_ids[0] != who)
    _request(proj, record_hashes=p1 | {other.record_id: other.sha256}, subject_ids=[who])
    write_denied(proj.root)
    run_ingest(proj.root)
    left = {r.record_id for r in read_all(proj.root / "data" / "records")}
    assert not left & (set(p1) | {other.record_id})
    assert any(r.startswith("crm/") for r in left)
    assert any(r.startswith("support_legacy/") for r in p1)  # subjects reach every source


def test_the_corpus_is_generated_without_denied_rows(proj, tmp_path):
    _request(proj, record_hashes={"crm/p0003-email": "0" * 64}, subject_ids=["p0001"])
    out = tmp_path / "raw"
    generate(SMALL, out, denials=write_denied(proj.root))
    crm = [json.loads(x) for x in (out / "crm.jsonl").read_text().splitlines()]
    ids = {r["id"] for r in crm}
    assert "p0003-email" not in ids and "p0003-city" in ids
    assert not any("p0001" in r["subject_ids"] for r in crm)
    chats = (out / "support_legacy.jsonl").read_text()
    assert '"p0001"' not in chats


def test_a_stale_deny_file_stops_ingest(proj):
    _request(proj, record_hashes={"crm/p0003-email": "0" * 64})
    with pytest.raises(LedgerEntryError, match="does not list what"):
        run_ingest(proj.root)  # the request was appended, the deny set not rewritten
    write_denied(proj.root)
    run_ingest(proj.root)
    assert (proj.root / DENIED).read_text() == (
        '{"record_ids":["crm/p0003-email"],"subject_ids":[]}\n'
    )


def test_a_ledger_cut_short_stops_ingest(proj):
    """Dropping the last request (and rewriting the deny file) is caught by the signed head."""
    from lineage.errors import VerificationError

    _request(proj, record_hashes={"crm/p0003-email": "0" * 64})
    (proj.root / "data" / "ledger.jsonl").write_bytes(b"")
    (proj.root / DENIED).write_text('{"record_ids":[],"subject_ids":[]}\n')
    with pytest.raises(VerificationError):
        run_ingest(proj.root)
