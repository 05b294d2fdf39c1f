"""Audit bundles end to end: a real pipeline, one deletion, the bundle, the offline verifier.

Each check of ``exante audit verify`` gets a tamper test: the bundle is modified
and, where the modification would otherwise be caught by the index alone,
the index is re-signed with the project's own key, so the test shows that the
named check, not only the index, catches it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage._canonical import sha256_hex
from lineage.signing import generate_key, load_signer, make_statement, sign_envelope
from tests.conftest import Deletion, contains
from tests.test_pipeline import REPO, run
from tests.verify.audit._mutate import container_mutation, file_mutation, json_mutation
from tests.verify.audit.test_fuzz import assert_handled, run_verify
from verify.audit import verify_bundle
from verify.audit._files import INDEX, read_tar_gz, write_tar_gz
from verify.audit.bundle import PREDICATE_TYPE, index_predicate
from verify.export.cyclonedx import validate as validate_bom

BUNDLE = Path("data/audit/bundle.tar.gz")
HTML = Path("data/audit/report.html")


@pytest.fixture(scope="module")
def project(deletion: Deletion) -> dict:
    """The shared project (tests/conftest.py) after its one deletion, request req-42."""
    pub = next((deletion.root / "policies/trusted_keys").glob("*.pub.pem"))
    return {"root": deletion.root, "needles": deletion.needles_before, "pub": pub}


def _verify(path: Path, pub: Path) -> dict[str, bool]:
    return {c.name.split(":")[0]: c.ok for c in verify_bundle(path, keys=[pub]).checks}


def test_the_bundle_after_a_deletion_verifies_offline(project, tmp_path):
    root = project["root"]
    copy = tmp_path / "elsewhere" / "bundle.tar.gz"  # no project around it
    copy.parent.mkdir()
    shutil.copy(root / BUNDLE, copy)
    out = run(["exante", "audit", "verify", str(copy), "--key", str(project["pub"])], tmp_path)
    assert out.stdout.count("PASS") == 9 and "9 of 9 checks passed" in out.stdout
    assert re.search(r"[1-9]\d* record × manifest-version absences verified", out.stdout)
    files = read_tar_gz(copy)
    assert any(n.startswith("data/receipts/") for n in files)
    assert {"dvc.yaml", "dvc.lock", "params.yaml", "environment/pip-freeze.txt",
            "mlflow/runs.json", "report.html", INDEX} <= set(files)  # fmt: skip
    runs = json.loads(files["mlflow/runs.json"])
    assert len(runs["deletions"]) == 1 and runs["parents"]["verification"] in runs["runs"]


def test_the_bundle_holds_no_record_content(project):
    files = read_tar_gz(project["root"] / BUNDLE)
    leaks = [f"{n}: {x[:30]!r}" for n, d in files.items() for x in project["needles"]
             if contains(d, x)]  # fmt: skip
    assert project["needles"] and not leaks


def test_the_bundle_is_byte_identical_when_rebuilt(project, tmp_path):
    root = project["root"]
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    run(["exante", "audit", "bundle", "--out", str(a), "--html", str(tmp_path / "a.html")], root)
    run(["exante", "audit", "bundle", "--out", str(b), "--html", str(tmp_path / "b.html")], root)
    assert a.read_bytes() == b.read_bytes()
    # The one built by `exante delete` differs only by dvc.lock, which then recorded it.
    first, again = read_tar_gz(root / BUNDLE), read_tar_gz(a)
    assert {n for n in first | again if first.get(n) != again.get(n)} == {"dvc.lock", INDEX}
    assert "Data and pipelines are up to date" in run(["dvc", "status"], root).stdout


def test_the_bundle_carries_the_signed_exports_and_the_project_a_copy(project):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    names = {"eu-summary.json", "eu-summary.md", "eu-summary.dsse.json", "cyclonedx.json",
             "cyclonedx.dsse.json", "spdx.json", "spdx.dsse.json"}  # fmt: skip
    assert {n for n in files if n.startswith("exports/")} == {f"exports/{n}" for n in names}
    for name in names:  # data/audit/exports is what the bundle carries
        assert (root / "data/audit/exports" / name).read_bytes() == files[f"exports/{name}"]
    bom = json.loads(files["exports/cyclonedx.json"])
    assert validate_bom(json.dumps(bom)) is None
    manifest = _statement(files, "data/manifest.dsse.json")["predicate"]
    assert manifest["merkle"]["root"] in files["exports/eu-summary.md"].decode()
    doc = json.loads(files["exports/eu-summary.json"])
    listed = {sid: s for sec in doc["section_2_list_of_data_sources"].values()
              for sid, s in sec["sources"].items()}  # fmt: skip
    assert {sid: s["records"] for sid, s in listed.items()} == {
        sid: s["record_count"] for sid, s in manifest["sources"].items()
    }


def test_a_bundle_from_an_unrun_project_is_refused(tmp_path):
    run(["exante", "keys", "init", "--dev"], tmp_path)
    out = run(["exante", "audit", "bundle", "--out", str(tmp_path / "b.tar.gz")], tmp_path,
              check=False)  # fmt: skip
    assert out.returncode == 3 and "Run `dvc repro`" in out.stderr
    assert not (tmp_path / "b.tar.gz").exists()


# -- tampering: one test per check ----------------------------------------------------


def _resign(root: Path, files: dict[str, bytes], path: Path, *, signer=None) -> Path:
    """Write ``files`` as a bundle whose index is signed anew (by the project key by default)."""
    files = {n: d for n, d in files.items() if n != INDEX}
    signer = signer or load_signer(root / ".exante/keys/signing.key.pem")
    subjects = {n: sha256_hex(d) for n, d in files.items()}
    env = sign_envelope(make_statement(subjects, PREDICATE_TYPE, index_predicate(files)), signer)
    files[INDEX] = json.dumps(env).encode()
    path.write_bytes(write_tar_gz(path, files))
    return path


def _statement(files: dict[str, bytes], name: str) -> dict:
    return json.loads(base64.b64decode(json.loads(files[name])["payload"]))


def _sign_statement(root: Path, files: dict[str, bytes], name: str, statement: dict) -> None:
    signer = load_signer(root / ".exante/keys/signing.key.pem")
    files[name] = json.dumps(sign_envelope(json.dumps(statement).encode(), signer)).encode()


def _edit_ledger(root, files):
    lines = files["data/ledger.jsonl"].splitlines()
    assert b'"reason":"' in lines[0]
    lines[0] = lines[0].replace(b'"reason":"', b'"reason":"(edited) ')
    files["data/ledger.jsonl"] = b"\n".join(lines) + b"\n"


def _drop_receipt(root, files):
    for name in [n for n in files if n.startswith("data/receipts/")]:
        del files[name]


def _old_leaves(root, files):
    latest = max(n for n in files if n.endswith(".leaves") and n.startswith("data/manifests/"))
    files[latest] = files["data/manifests/v000001.leaves"]


def _drop_first_manifest(root, files):
    del files["data/manifests/v000001.dsse.json"]


def _stranger_signs_decision(root, files):
    key = root.parent / "stranger.key.pem"
    if not key.exists():
        generate_key(key, root.parent / "stranger", name="stranger")
    payload = base64.b64decode(json.loads(files["data/gate/decision.dsse.json"])["payload"])
    files["data/gate/decision.dsse.json"] = json.dumps(
        sign_envelope(payload, load_signer(key))
    ).encode()


def _model_signature_names_other_weights(root, files):
    sig = json.loads(files["models/ensemble.sig"])
    payload = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    raw = json.dumps(payload).encode()
    env = sign_envelope(raw, load_signer(root / ".exante/keys/signing.key.pem"),
                        payload_type=sig["dsseEnvelope"]["payloadType"])  # fmt: skip
    sig["dsseEnvelope"] = {**env, "signatures": [{"sig": env["signatures"][0]["sig"], "keyid": ""}]}
    files["models/ensemble.sig"] = json.dumps(sig).encode()


def _attestation_names_other_manifest(root, files):
    st = _statement(files, "models/attestation.dsse.json")
    st["predicate"]["manifest_payload_sha256"] = "1" * 64
    _sign_statement(root, files, "models/attestation.dsse.json", st)


def _export_number_edited_and_resigned(root, files):
    doc = json.loads(files["exports/eu-summary.json"])
    text = doc["section_1_general_information"]["1_3_modalities_and_size"]["text"]
    text["records"] += 1
    files["exports/eu-summary.json"] = json.dumps(doc).encode()
    st = _statement(files, "exports/eu-summary.dsse.json")
    for subject in st["subject"]:
        subject["digest"]["sha256"] = sha256_hex(files[f"exports/{subject['name']}"])
    _sign_statement(root, files, "exports/eu-summary.dsse.json", st)


def _report_names_other_attestation(root, files):
    st = _statement(files, "data/verification/report.dsse.json")
    st["predicate"]["lineage"]["attestation_sha256"] = "2" * 64
    _sign_statement(root, files, "data/verification/report.dsse.json", st)


TAMPER = {
    "signatures": _stranger_signs_decision,
    "manifest chain": _drop_first_manifest,
    "deletion ledger": _edit_ledger,
    "deletions": _drop_receipt,
    "model": _model_signature_names_other_weights,
    "lineage": _attestation_names_other_manifest,
    "verification report": _report_names_other_attestation,
    "exports": _export_number_edited_and_resigned,
}


@pytest.mark.parametrize("check", sorted(TAMPER))
def test_each_check_catches_its_tampering(project, tmp_path, check):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    TAMPER[check](root, files)
    verdicts = _verify(_resign(root, files, tmp_path / "t.tar.gz"), project["pub"])
    assert verdicts[check] is False, verdicts
    assert verdicts["index"] is True  # re-signed: only the named check can catch it


def test_a_deleted_record_back_in_a_later_manifest_is_caught(project, tmp_path):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    _old_leaves(root, files)
    verdicts = _verify(_resign(root, files, tmp_path / "t.tar.gz"), project["pub"])
    assert verdicts["deletions"] is False and verdicts["manifest chain"] is False


def test_a_modified_copy_fails_the_index_and_the_command_exits_1(project, tmp_path):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    files["params.yaml"] += b"# edited\n"
    path = tmp_path / "t.tar.gz"
    path.write_bytes(write_tar_gz(path, files))
    out = run(["exante", "audit", "verify", str(path), "--key", str(project["pub"])], tmp_path,
              check=False)  # fmt: skip
    assert out.returncode == 1 and "FAIL  index" in out.stdout
    assert "params.yaml: modified" in out.stdout


def test_a_bundle_signed_by_another_key_fails(project, tmp_path):
    root = project["root"]
    key = tmp_path / "other.key.pem"
    generate_key(key, tmp_path / "other", name="other")
    path = _resign(root, read_tar_gz(root / BUNDLE), tmp_path / "t.tar.gz",
                   signer=load_signer(key))  # fmt: skip
    assert _verify(path, project["pub"])["index"] is False


def test_a_file_that_is_not_a_bundle_is_bad_input(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    out = run(["exante", "audit", "verify", str(junk)], tmp_path, check=False)
    assert out.returncode == 3 and "not a readable audit bundle" in out.stderr


# -- the HTML report in a real browser --------------------------------------------------


def test_the_report_renders_in_chromium_without_console_errors(project, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: `make browser` installs it"
    root = project["root"]
    html = (root / HTML).resolve()
    assert html.read_bytes() == read_tar_gz(root / BUNDLE)["report.html"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", html.as_uri()], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert dom.returncode == 0 and not console, console
    assert 'data-toc="8"' in dom.stdout  # the script ran and found every section
    count = _statement(read_tar_gz(root / BUNDLE), "data/manifest.dsse.json")["predicate"]
    assert f"<b>{count['record_count']}</b>records in the signed manifest" in dom.stdout
    for text in ("What the model was trained on", "Deletion history", "GDPR-17 ticket 42", "req-42",
                 "GDPR Art. 17", "DSM Directive Art. 4(3)", "What is and is not proven",
                 "approx:gd", "exact"):  # fmt: skip
        assert text in dom.stdout, text
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "audit-report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,3000",
                    html.as_uri()], capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_deletions_verification_is_bundled_and_an_edit_to_it_is_caught(project, tmp_path):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    where = "data/receipts/verification/req-42/"
    assert {where + n for n in ("report.dsse.json", "results.json", "summary.json")} <= set(files)
    summary = json.loads(files[where + "summary.json"])
    assert summary["exact"]["failed_checks"] == 0
    files[where + "summary.json"] = json.dumps(summary | {"edited": True}).encode()
    verdicts = _verify(_resign(root, files, tmp_path / "t.tar.gz"), project["pub"])
    assert verdicts["deletions"] is False and verdicts["index"] is True
    del files[where + "report.dsse.json"]
    verdicts = _verify(_resign(root, files, tmp_path / "u.tar.gz"), project["pub"])
    assert verdicts["deletions"] is False


# -- hostile bundles: the fuzz of tests/verify/audit/test_fuzz.py on the real bundle ----------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_real_bundles_exit_0_1_or_3_without_a_traceback(project, tmp_path_factory, data):
    root = project["root"]
    files = read_tar_gz(root / BUNDLE)
    signer = load_signer(root / ".exante/keys/signing.key.pem")
    mutation = data.draw(
        st.one_of(
            container_mutation((root / BUNDLE).read_bytes(), files),
            json_mutation(files, signer),
            file_mutation(files, signer),
        )
    )
    assert_handled(*run_verify(mutation, tmp_path_factory.mktemp("fuzz"), project["pub"]))
