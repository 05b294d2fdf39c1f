"""The tamper suite: every way of changing signed data after the fact, and the error it raises.

Each test starts from a built, signed project, changes one thing, and checks
that training's admission check (``verify_training_input``) raises that
tamper's own error class, naming what changed, and that ``exante check``
exits 1 with the class name. Nothing here re-signs with a trusted key: that
is what a legitimate rebuild does.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lineage._canonical import sha256_hex, text_sha256
from lineage.admission import verify_training_input
from lineage.errors import (
    ArtifactDigestError,
    ForeignSignatureError,
    ForgedDecisionError,
    LineageError,
    ManifestRollbackError,
    MissingRecordError,
    RecordHashMismatchError,
    RecordTamperedError,
    RefusedRecordError,
    SignatureMismatchError,
    UnsignedRecordError,
    UntrustedKeyError,
)
from lineage.manifest import leaves_bytes, merkle_root, parse_leaves
from lineage.records import Record, read_all, read_records, write_records
from lineage.signing import generate_key, load_signer, make_statement, sign_envelope
from lineage.stages import run_check, run_gate, run_ingest, run_manifest
from tests._cli import exante
from tests.conftest import AS_OF, Project, make_project

RECORDS = Path("data/records")
MANIFEST = Path("data/manifest.dsse.json")
LEAVES = Path("data/manifest.leaves")
DECISION = Path("data/gate/decision.dsse.json")
ALLOWED = Path("data/gate/allowed.leaves")
CRM_EMAIL = "crm/p0001-email"
FORUM_POST = "forum/post-00001"


# -- helpers -------------------------------------------------------------------


def admit(root: Path):
    """What ``exante check`` runs: every record, complete, refused ones left out."""
    records = read_all(root / RECORDS)
    return verify_training_input(records, root=root, complete=True, skip_refused=True)


def assert_detected(root: Path, error: type[LineageError], *named: str) -> LineageError:
    """The API raises exactly ``error`` naming ``named``; ``exante check`` exits 1 saying so."""
    with pytest.raises(error) as caught:
        admit(root)
    assert type(caught.value) is error
    for name in named:
        assert name in str(caught.value)
    result = exante(root, "check")
    assert result.code == 1
    assert f"verification failed: {error.__name__}" in result.err
    assert result.out == ""
    return caught.value


def edit_record(root: Path, record_id: str, change) -> None:
    """Rewrite one record of its source's records file with ``change(record)``."""
    path = root / RECORDS / f"{record_id.split('/')[0]}.jsonl"
    records = [change(r) if r.record_id == record_id else r for r in read_records(path)]
    write_records(path, records)


def envelope(root: Path, path: Path) -> dict:
    return json.loads((root / path).read_bytes())


def payload_of(env: dict) -> dict:
    return json.loads(base64.b64decode(env["payload"]))


def with_payload(env: dict, statement: dict) -> dict:
    return {**env, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}


def put(root: Path, path: Path, env: dict) -> None:
    (root / path).write_text(json.dumps(env, indent=2))


def untrusted_signer(tmp_path: Path):
    """A valid P-256 key whose public half is NOT under the project's policies/trusted_keys."""
    key = tmp_path / "mallory" / "signing.key.pem"
    generate_key(key, tmp_path / "mallory" / "trusted", name="mallory")
    return load_signer(key)


def next_manifest(project: Project, *, gate: bool) -> None:
    """A legitimate change (one more recipe), re-ingested and signed as manifest v2."""
    raw = project.root / "data" / "raw" / "recipes.jsonl"
    row = {"id": "recipe-9999", "text": "Mint tea. Steep fresh mint for 5 minutes."}
    with open(raw, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    run_ingest(project.root)
    run_manifest(project.root, project.signer)
    if gate:
        run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)


# -- the untampered project ------------------------------------------------------


def test_untampered_project_is_admitted(project: Project) -> None:
    admitted = admit(project.root)
    assert admitted.manifest_version == 1
    assert CRM_EMAIL in admitted.record_ids
    assert not any(rid.startswith("forum/") for rid in admitted.record_ids)
    result = exante(project.root, "check")
    assert result.code == 0, result.err
    assert result.out.startswith("ok: every record matches signed manifest v1")


def test_check_exit_codes_through_the_real_command(project: Project) -> None:
    """The installed entry point, not just ``main``: 0 when clean, 1 after a tamper."""

    def check() -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "exante", "check"]
        return subprocess.run(cmd, cwd=project.root, capture_output=True, text=True, check=False)

    assert check().returncode == 0
    edit_record(project.root, CRM_EMAIL, lambda r: dataclasses.replace(r, text=r.text + "!"))
    done = check()
    assert done.returncode == 1
    assert "RecordHashMismatchError" in done.stderr
    assert CRM_EMAIL in done.stderr


# -- records ---------------------------------------------------------------------


def test_one_byte_of_text_changed(project: Project) -> None:
    def flip(r: Record) -> Record:
        return dataclasses.replace(r, text=r.text.replace("@", "#", 1))

    edit_record(project.root, CRM_EMAIL, flip)
    exc = assert_detected(project.root, RecordHashMismatchError, CRM_EMAIL)
    assert exc.problems == (CRM_EMAIL,)


def test_text_and_digest_changed_together(project: Project) -> None:
    def rewrite(r: Record) -> Record:
        text = r.text.replace("@", "@evil.", 1)
        return dataclasses.replace(r, text=text, sha256=text_sha256(text))

    edit_record(project.root, CRM_EMAIL, rewrite)
    exc = assert_detected(project.root, RecordTamperedError, CRM_EMAIL)
    assert exc.problems == (CRM_EMAIL,)


def test_record_added_after_signing(project: Project) -> None:
    path = project.root / RECORDS / "crm.jsonl"
    extra = Record.make("crm/p9999-email", "crm", ["p9999"], "The email of X is x@example.com.")
    write_records(path, [*read_records(path), extra])
    exc = assert_detected(project.root, UnsignedRecordError, "crm/p9999-email")
    assert exc.problems == ("crm/p9999-email",)


def test_record_removed_after_signing(project: Project) -> None:
    path = project.root / RECORDS / "crm.jsonl"
    write_records(path, [r for r in read_records(path) if r.record_id != CRM_EMAIL])
    exc = assert_detected(project.root, MissingRecordError, CRM_EMAIL)
    assert exc.problems == (CRM_EMAIL,)
    # training on a subset is legitimate: only complete=True asks for every record
    subset = read_all(project.root / RECORDS)
    admitted = verify_training_input(subset, root=project.root, skip_refused=True)
    assert CRM_EMAIL not in admitted.record_ids


def test_refused_record_passed_for_training(project: Project) -> None:
    forum = [r for r in read_all(project.root / RECORDS) if r.record_id == FORUM_POST]
    with pytest.raises(RefusedRecordError) as caught:
        verify_training_input(forum, root=project.root)
    assert caught.value.problems == (FORUM_POST,)
    # with skip_refused it is left out of the admitted set instead
    admitted = verify_training_input(forum, root=project.root, skip_refused=True)
    assert admitted.record_ids == ()


# -- the manifest ------------------------------------------------------------------


def test_manifest_payload_edited_without_resigning(project: Project) -> None:
    env = envelope(project.root, MANIFEST)
    statement = payload_of(env)
    statement["predicate"]["record_count"] += 1
    put(project.root, MANIFEST, with_payload(env, statement))
    assert_detected(project.root, SignatureMismatchError, "modified after signing")


def test_signature_swapped_in_from_another_version(project: Project) -> None:
    v1 = envelope(project.root, MANIFEST)
    next_manifest(project, gate=True)
    v2 = envelope(project.root, MANIFEST)
    assert payload_of(v2)["predicate"]["version"] == 2
    put(project.root, MANIFEST, {**v2, "signatures": v1["signatures"]})
    assert_detected(project.root, ForeignSignatureError, "copied from another file")


def test_manifest_signed_by_untrusted_key(project: Project, tmp_path: Path) -> None:
    mallory = untrusted_signer(tmp_path)
    env = envelope(project.root, MANIFEST)
    put(project.root, MANIFEST, sign_envelope(base64.b64decode(env["payload"]), mallory))
    assert_detected(project.root, UntrustedKeyError, mallory.keyid[:16])


def test_older_manifest_replayed(project: Project) -> None:
    next_manifest(project, gate=True)
    assert admit(project.root).manifest_version == 2
    shutil.copy(project.root / "data/manifests/v000001.dsse.json", project.root / MANIFEST)
    assert_detected(project.root, ManifestRollbackError, "manifest v1 is older than v2")


def test_replay_detected_even_with_the_history_rewound(project: Project) -> None:
    """The verifier remembers the newest version it admitted; deleting v2 does not hide it."""
    next_manifest(project, gate=True)
    admit(project.root)
    (project.root / "data/manifests/v000002.dsse.json").unlink()
    shutil.copy(project.root / "data/manifests/v000001.dsse.json", project.root / MANIFEST)
    assert_detected(project.root, ManifestRollbackError, "manifest v1 is older than v2")


def test_manifest_leaves_edited(project: Project) -> None:
    path = project.root / LEAVES
    leaves = [leaf for leaf in parse_leaves(path.read_bytes(), what="x") if leaf[0] != CRM_EMAIL]
    path.write_bytes(leaves_bytes(leaves))
    assert_detected(project.root, ArtifactDigestError, str(LEAVES))


# -- the gate decision ----------------------------------------------------------------


def forum_leaf(root: Path) -> tuple[str, str]:
    signed = dict(parse_leaves((root / LEAVES).read_bytes(), what="manifest"))
    return FORUM_POST, signed[FORUM_POST]


def allowed_with_forum(root: Path) -> list[tuple[str, str]]:
    allowed = parse_leaves((root / ALLOWED).read_bytes(), what="allowed")
    return sorted([*allowed, forum_leaf(root)], key=lambda leaf: leaf[0].encode())


def test_refused_record_added_to_the_allowed_leaves(project: Project) -> None:
    (project.root / ALLOWED).write_bytes(leaves_bytes(allowed_with_forum(project.root)))
    assert_detected(project.root, ForgedDecisionError, str(ALLOWED))


def test_edited_decision_resigned_by_untrusted_key(project: Project, tmp_path: Path) -> None:
    allowed = allowed_with_forum(project.root)
    data = leaves_bytes(allowed)
    statement = payload_of(envelope(project.root, DECISION))
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    subjects[ALLOWED.as_posix()] = sha256_hex(data)
    predicate = statement["predicate"]
    predicate["allowed"] = {"merkle_root": merkle_root(allowed)[0], "count": len(allowed)}
    predicate["refused_records"] = [
        r for r in predicate["refused_records"] if r["record_id"] != FORUM_POST
    ]
    forged = make_statement(subjects, statement["predicateType"], predicate)
    mallory = untrusted_signer(tmp_path)
    put(project.root, DECISION, sign_envelope(forged, mallory))
    (project.root / ALLOWED).write_bytes(data)
    assert_detected(project.root, UntrustedKeyError, mallory.keyid[:16])


def test_decision_left_from_an_older_manifest(project: Project) -> None:
    next_manifest(project, gate=False)
    assert_detected(project.root, ForgedDecisionError, "does not judge manifest v2")


# -- what the gate judges -------------------------------------------------------------


def _move_forum_to_crm(root: Path) -> str:
    path = root / RECORDS / "forum.jsonl"
    write_records(path, [dataclasses.replace(r, source_id="crm") for r in read_records(path)])
    return "data/records/forum.jsonl"


def _hide_a_subject(root: Path) -> str:
    (root / "data" / "ledger.jsonl").write_text(json.dumps({"subject_ids": ["p0001"]}) + "\n")
    path = root / RECORDS / "crm.jsonl"
    hidden = [
        dataclasses.replace(r, subject_ids=("p9999",)) if "p0001" in r.subject_ids else r
        for r in read_records(path)
    ]
    write_records(path, hidden)
    return "data/records/crm.jsonl"


def _relax_forum_terms(root: Path) -> str:
    path = root / "data" / "sources.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["sources"]["forum"]["license"] = "CC0-1.0"
    raw["sources"]["forum"]["terms"]["permits_ml_training"] = True
    path.write_text(yaml.safe_dump(raw))
    return "forum"


@pytest.mark.parametrize("tamper", [_move_forum_to_crm, _hide_a_subject, _relax_forum_terms])
def test_gate_judges_only_what_the_manifest_signed(project: Project, tamper) -> None:
    """Sources, subjects and terms are not in the leaves; editing them must not sway the gate."""
    decision = (project.root / DECISION).read_bytes()
    named = tamper(project.root)
    with pytest.raises(ArtifactDigestError) as caught:
        run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)
    assert caught.value.problems == (named,)
    result = exante(project.root, "gate")
    assert result.code == 1
    assert "verification failed: ArtifactDigestError" in result.err
    assert (project.root / DECISION).read_bytes() == decision


def test_changed_terms_are_judged_once_signed(project: Project) -> None:
    _relax_forum_terms(project.root)
    run_manifest(project.root, project.signer)
    decision, _ = run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)
    assert decision.source_reasons["forum"] == ()
    assert FORUM_POST in admit(project.root).record_ids


# -- fuzz ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One built project for every fuzz example (each example restores what it changed)."""
    p = make_project(tmp_path_factory.mktemp("fuzz") / "proj")
    p.build()
    return p


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_b64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
_envelopes = st.fixed_dictionaries(
    {
        "payload": _b64 | st.text(max_size=20),
        "payloadType": st.sampled_from(["application/vnd.in-toto+json", "text/plain"]),
        "signatures": st.lists(
            st.fixed_dictionaries({"keyid": st.text(max_size=8), "sig": _b64}) | _json,
            max_size=2,
        ),
    }
).map(lambda d: json.dumps(d).encode())
_flips = st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300)
    | _envelopes
    | _json.map(lambda v: json.dumps(v).encode())
    | _flips.map(lambda f: ("flip", f))
)
@example(data=b"[" * 100_000)  # deeper than Python's recursion limit
@example(data=b'{"payload": 1, "payloadType": [], "signatures": {}}')
def test_arbitrary_manifest_bytes_raise_only_lineage_errors(built: Project, data) -> None:
    path = built.root / MANIFEST
    original = path.read_bytes()
    if isinstance(data, tuple):  # flip bytes of the real envelope
        buf = bytearray(original)
        for i, xor in data[1]:
            buf[i % len(buf)] ^= xor
        data = bytes(buf)
    try:
        path.write_bytes(data)
        run_check(built.root)
    except LineageError:
        pass  # any other exception fails the test: that would be an internal error, exit 70
    else:  # only a change that does not alter the envelope (say, whitespace) may pass
        assert json.loads(data) == json.loads(original)
    finally:
        path.write_bytes(original)
