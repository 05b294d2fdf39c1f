"""The compliance exports: schema-valid, numbers read back against the records, signed, stable."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter

import pytest
from spdx_python_model import v3_0_1 as spdx_model

from lineage._canonical import sha256_hex
from lineage.signing import load_trusted_keys, parse_statement, subjects_of, verify_envelope
from tests._cli import exante
from tests.conftest import make_project
from verify.export import build_exports
from verify.export import cyclonedx as cdx
from verify.export import spdx as spdx_export
from verify.export._build import PREDICATE_TYPE, project_facts
from verify.export.cyclonedx import validate as validate_bom
from verify.export.spdx import validate as validate_spdx


@pytest.fixture(scope="module")
def exports(released_module) -> dict[str, bytes]:
    return build_exports(released_module.root, signer=released_module.signer)


def _manifest_subjects(root) -> dict[str, str]:
    env = json.loads((root / "data/manifest.dsse.json").read_bytes())
    return subjects_of(json.loads(base64.b64decode(env["payload"])))


# -- CycloneDX --------------------------------------------------------------------------


def test_the_cyclonedx_bom_validates_against_the_official_1_6_schema(exports, released_module):
    text = exports["cyclonedx.json"].decode()
    assert validate_bom(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    card = model["modelCard"]
    trained = {d["ref"] for d in card["modelParameters"]["datasets"]}
    assert trained == {"source:crm", "source:plays", "source:recipes"}
    props = {p["name"]: p["value"] for p in card["properties"]}
    assert json.loads(props["exante:dp:shard:0"])["epsilon"] == 3.25
    assert any(m["type"] == "verdict" and m["slice"] == "original" and m["value"] == "fail"
               for m in card["quantitativeAnalysis"]["performanceMetrics"])  # fmt: skip
    signed = _manifest_subjects(released_module.root)
    data = {c["name"]: c for c in bom["components"]}
    assert set(data) == {
        "crm", "forum", "holdout_people", "newswire", "plays", "recipes", "support_legacy"
    }  # fmt: skip
    held = {p["name"]: p["value"] for p in data["holdout_people"]["properties"]}
    assert held["exante:records_trained"] == "0"
    assert held["exante:records_held_out"] == held["exante:records"] != "0"
    for sid, c in data.items():
        assert c["type"] == "data" and c["data"][0]["governance"]
        assert c["hashes"][0]["content"] == signed[f"data/records/{sid}.jsonl"]


def test_the_schema_validator_is_real_a_wrong_bom_fails(exports):
    bom = json.loads(exports["cyclonedx.json"])
    bom["components"][0]["data"][0]["type"] = "not-a-data-type"
    assert validate_bom(json.dumps(bom)) is not None
    bom = json.loads(exports["cyclonedx.json"])
    bom["metadata"]["component"]["modelCard"]["modelParameters"]["approach"]["type"] = "magic"
    assert validate_bom(json.dumps(bom)) is not None


# -- SPDX -------------------------------------------------------------------------------


def _spdx_objects(data: bytes) -> spdx_model.SHACLObjectSet:
    objects = spdx_model.SHACLObjectSet()
    spdx_model.JSONLDDeserializer().read(io.BytesIO(data), objects)
    objects.link()
    return objects


def test_the_spdx_document_is_valid_spdx_3_0_1_with_ai_and_dataset_profiles(exports):
    data = exports["spdx.json"]
    assert validate_spdx(data) == []
    objects = _spdx_objects(data)
    (doc,) = objects.foreach_type(spdx_model.SpdxDocument)
    profiles = {str(p).rsplit("/", 1)[-1] for p in doc.profileConformance}
    assert {"ai", "dataset"} <= profiles
    (model,) = objects.foreach_type(spdx_model.ai_AIPackage)
    datasets = {d.name: d for d in objects.foreach_type(spdx_model.dataset_DatasetPackage)}
    assert {"crm", "forum", "newswire", "plays", "recipes", "support_legacy"} <= set(datasets)
    rels = {str(r.relationshipType).rsplit("/", 1)[-1]: r
            for r in objects.foreach_type(spdx_model.Relationship)
            if r.from_ is model}  # fmt: skip
    assert {t.name for t in rels["trainedOn"].to} == {"crm", "plays", "recipes"}
    assert {t.name for t in rels["testedOn"].to} == {"verification-forget-set"}
    params = {e.key: e.value for e in model.ai_hyperparameter}
    assert json.loads(params["dp.shard.0"])["epsilon"] == 3.25 and params["dp.shard.1"] == "none"


def test_the_spdx_validation_is_real_a_dangling_reference_fails(exports):
    doc = json.loads(exports["spdx.json"])
    graph = doc["@graph"]
    doc["@graph"] = [o for o in graph if o.get("name") != "plays"]  # still referenced
    problems = validate_spdx(json.dumps(doc).encode())
    assert any("dataset/plays" in p for p in problems), problems


# -- the EU summary's numbers, read back against the records -----------------------------


def _records_read_independently(root) -> tuple[Counter, Counter, Counter]:
    allowed = {line.split("\t")[0] for line in
               (root / "data/gate/allowed.leaves").read_text().splitlines()}  # fmt: skip
    held = {json.loads(line)["record"]["record_id"]
            for line in (root / "data/shards/holdout.jsonl").read_text().splitlines()}  # fmt: skip
    assert held  # the demo holds its holdout people out
    records, trained, size = Counter(), Counter(), Counter()
    for path in sorted((root / "data/records").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            records[row["source_id"]] += 1
            if row["record_id"] in allowed - held:
                trained[row["source_id"]] += 1
                size[row["source_id"]] += len(row["text"].encode("utf-8"))
    return records, trained, size


def test_the_eu_summary_numbers_are_the_records(exports, released_module):
    root = released_module.root
    records, trained, size = _records_read_independently(root)
    doc = json.loads(exports["eu-summary.json"])
    listed = {
        sid: s
        for section in doc["section_2_list_of_data_sources"].values()
        for sid, s in section["sources"].items()
    }
    assert set(listed) == set(records)
    for sid, s in listed.items():
        assert (s["records"], s["records_trained"], s["bytes_trained"]) == (
            records[sid], trained[sid], size[sid]
        ), sid  # fmt: skip
        assert s["records_refused"] == records[sid] - trained[sid] - s["records_held_out"]
        assert s["records_held_out"] == (records[sid] if sid == "holdout_people" else 0)
    text = doc["section_1_general_information"]["1_3_modalities_and_size"]["text"]
    assert text["records"] == sum(trained.values()) and text["bytes"] == sum(size.values())
    assert text["tokens"] == text["bytes"]  # byte-level tokenizer
    tdm = doc["section_3_data_processing_aspects"]["3_1_reservation_of_rights"]
    assert tdm["sources_with_opt_out"] == ["newswire"]
    assert tdm["records_refused_for_opt_out"] == records["newswire"] > 0
    assert tdm["records_trained_from_opted_out_sources"] == 0
    by = doc["section_3_data_processing_aspects"]["refusals_by_reason"]
    assert by["terms_of_service"] == {"sources": 1, "records": records["forum"]}
    assert by["retention_expired"] == {"sources": 1, "records": records["support_legacy"]}
    assert by["license"]["records"] == records["forum"] + records["newswire"]
    kinds = {k.split("_", 2)[2]: set(v["sources"]) for k, v in
             doc["section_2_list_of_data_sources"].items()}  # fmt: skip
    assert kinds["crawled"] == {"forum", "newswire"}
    assert kinds["user"] == {"crm", "holdout_people", "support_legacy"}
    assert "1.1 provider name" in " ".join(doc["operator_must_fill_in"])
    md = exports["eu-summary.md"].decode()
    assert f"{text['records']} records, {text['bytes']} bytes" in md and "## 3." in md


# -- signed, stable, through the CLI ---------------------------------------------------


def test_each_export_is_signed_over_its_files_and_names_what_it_describes(exports, released_module):
    root = released_module.root
    trusted = load_trusted_keys(root / "policies/trusted_keys")
    facts = project_facts(root)
    for fmt, files in [("eu-summary", ["eu-summary.json", "eu-summary.md"]),
                       ("cyclonedx", ["cyclonedx.json"]), ("spdx", ["spdx.json"])]:  # fmt: skip
        env = json.loads(exports[f"{fmt}.dsse.json"])
        st = parse_statement(verify_envelope(env, trusted, what=fmt), PREDICATE_TYPE, what=fmt)
        assert subjects_of(st) == {f: sha256_hex(exports[f]) for f in files}
        described = st["predicate"]["describes"]
        assert described == facts["describes"]
        assert described["manifest"]["merkle_root"] in exports[files[0]].decode()


def test_exports_are_byte_identical_when_rebuilt(exports, released_module):
    again = build_exports(released_module.root, signer=released_module.signer)
    assert again == exports


def test_the_cli_writes_one_format_and_refuses_an_untrained_project(released_module, tmp_path):
    out = exante(released_module.root, "export", "cyclonedx", "--out", str(tmp_path / "x"))
    assert out.code == 0, out.err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "cyclonedx.dsse.json",
        "cyclonedx.json",
    ]
    assert validate_bom((tmp_path / "x/cyclonedx.json").read_text()) is None
    untrained = make_project(tmp_path / "untrained")
    untrained.build()
    bare = exante(untrained.root, "export", "spdx", "--out", str(tmp_path / "y"))
    assert bare.code == 3 and "models/attestation.dsse.json" in bare.err


def test_renderers_refuse_to_write_what_does_not_validate(released_module, monkeypatch):
    facts = project_facts(released_module.root)
    monkeypatch.setattr(cdx, "_classification", lambda s: 42)  # not a string: schema error
    with pytest.raises(cdx.BomValidationError):
        cdx.render(facts)
    monkeypatch.setattr(spdx_export, "validate", lambda data: ["a problem"])
    with pytest.raises(spdx_export.SpdxValidationError):
        spdx_export.render(facts)
