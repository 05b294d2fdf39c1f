"""The audit check of the exports: numbers and digests recomputed from the bundled artifacts.

Each tampering re-signs the export with the project's own key, so only the
recomputation (not the signature) can catch it.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest

from lineage._canonical import sha256_hex
from lineage.signing import load_trusted_keys, make_statement, sign_envelope
from verify.audit.checks import CHECKS, Check
from verify.export import build_exports, check_exports
from verify.export._build import PREDICATE_TYPE
from verify.export._facts import read_inputs


@pytest.fixture(scope="module")
def bundle(released_module) -> dict[str, bytes]:
    """The files a bundle carries that the check reads: the inputs and ``exports/``."""
    root = released_module.root
    exports = build_exports(root, signer=released_module.signer)
    return {**read_inputs(root), **{f"exports/{n}": d for n, d in exports.items()}}


def _check(released, files) -> Check:
    ctx = SimpleNamespace(
        files=files, trusted=load_trusted_keys(released.root / "policies/trusted_keys")
    )
    c = Check("exports")
    check_exports(ctx, c)
    return c


def _resign(released, files: dict, fmt: str, *, describes=None, **changes) -> None:
    """Sign ``fmt``'s envelope anew over its (possibly edited) files and predicate."""
    name = f"exports/{fmt}.dsse.json"
    old = json.loads(base64.b64decode(json.loads(files[name])["payload"]))
    subjects = {s["name"]: sha256_hex(files[f"exports/{s['name']}"]) for s in old["subject"]}
    predicate = old["predicate"] | ({"describes": describes} if describes else {}) | changes
    env = sign_envelope(make_statement(subjects, PREDICATE_TYPE, predicate), released.signer)
    files[name] = json.dumps(env).encode()


def test_the_check_is_registered_with_audit_verify():
    assert any(fn is check_exports for _, fn in CHECKS)


def test_a_good_bundle_passes(released_module, bundle):
    c = _check(released_module, dict(bundle))
    assert c.ok, c.problems
    assert "3 signed exports" in c.notes[0]


def test_a_number_edited_and_re_signed_fails(released_module, bundle):
    files = dict(bundle)
    doc = json.loads(files["exports/eu-summary.json"])
    crm = doc["section_2_list_of_data_sources"]["2_4_user"]["sources"]["crm"]
    crm["records_trained"] += 1
    files["exports/eu-summary.json"] = json.dumps(doc, indent=2, sort_keys=True).encode()
    _resign(released_module, files, "eu-summary")
    c = _check(released_module, files)
    assert not c.ok
    assert any("eu-summary.json" in p and "crm.records_trained" in p for p in c.problems), (
        c.problems
    )


def test_a_dp_epsilon_edited_in_the_bom_and_re_signed_fails(released_module, bundle):
    files = dict(bundle)
    old = b'\\"epsilon\\": 3.25'
    assert old in files["exports/cyclonedx.json"]
    files["exports/cyclonedx.json"] = files["exports/cyclonedx.json"].replace(
        old, b'\\"epsilon\\": 0.5'
    )
    _resign(released_module, files, "cyclonedx")
    c = _check(released_module, files)
    assert any("cyclonedx.json" in p and "modelCard.properties" in p and "0.5" in p
               for p in c.problems), c.problems  # fmt: skip


def test_a_model_digest_edited_in_the_spdx_document_fails(released_module, bundle):
    files = dict(bundle)
    doc = json.loads(files["exports/spdx.json"])
    model = next(o for o in doc["@graph"] if o.get("type") == "ai_AIPackage")
    model["verifiedUsing"][0]["hashValue"] = "0" * 64
    files["exports/spdx.json"] = json.dumps(doc, indent=2, sort_keys=True).encode()
    _resign(released_module, files, "spdx")
    c = _check(released_module, files)
    assert any("spdx.json" in p and "hashValue" in p for p in c.problems), c.problems


def test_an_export_that_describes_another_manifest_fails(released_module, bundle):
    files = dict(bundle)
    env = json.loads(files["exports/spdx.dsse.json"])
    describes = json.loads(base64.b64decode(env["payload"]))["predicate"]["describes"]
    describes["manifest"]["merkle_root"] = "f" * 64
    _resign(released_module, files, "spdx", describes=describes)
    c = _check(released_module, files)
    assert any("describes other artifacts" in p and "merkle_root" in p for p in c.problems)


def test_an_edit_without_re_signing_fails(released_module, bundle):
    files = dict(bundle)
    files["exports/eu-summary.md"] += b"\nAll records were public.\n"
    c = _check(released_module, files)
    assert any("eu-summary.md" in p and "not the file" in p for p in c.problems), c.problems


@pytest.mark.parametrize("fmt", ["eu-summary", "cyclonedx", "spdx"])
def test_a_missing_export_fails(released_module, bundle, fmt):
    files = {n: d for n, d in bundle.items() if not n.startswith(f"exports/{fmt}")}
    c = _check(released_module, files)
    assert any(f"exports/{fmt}.dsse.json: missing" in p for p in c.problems), c.problems


def test_malformed_sizes_in_a_signed_summary_are_a_problem_not_a_crash(released_module, bundle):
    files = dict(bundle)
    doc = json.loads(files["exports/eu-summary.json"])
    doc["record_sizes"] = {"crm": [1, 2]}
    files["exports/eu-summary.json"] = json.dumps(doc).encode()
    _resign(released_module, files, "eu-summary")
    c = _check(released_module, files)
    assert any("record_sizes is missing or malformed" in p for p in c.problems), c.problems


def test_an_export_of_another_schema_version_is_named_not_misread(released_module, bundle):
    files = dict(bundle)
    _resign(released_module, files, "eu-summary", schema_version=1)
    c = _check(released_module, files)
    assert not c.ok
    (problem,) = [p for p in c.problems if "eu-summary" in p]
    assert "export schema 1" in problem and "schema 2" in problem and "audit bundle" in problem
