"""The gate: a pure evaluation of the real registry and policy, and the decision it signs."""

from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path

import pytest

from lineage._canonical import file_sha256, sha256_hex
from lineage.admission import verify_training_input
from lineage.errors import MalformedRecordError, PolicyFileError
from lineage.gate import PREDICATE_TYPE, Denials, evaluate
from lineage.manifest import merkle_root, parse_leaves
from lineage.policy import DenyList, GatePolicy, load_policies
from lineage.records import Record, read_all
from lineage.signing import load_trusted_keys, parse_statement, read_envelope, verify_envelope
from lineage.sources import Registry, load_registry
from lineage.stages import ledger_denials, run_gate
from tests.conftest import AS_OF, REPO, Project

REGISTRY = load_registry(REPO / "data" / "sources.yaml")
POLICY = load_policies(REPO / "policies")["default.yaml"][0]
ALLOWED_FOR_RESEARCH = {"crm", "holdout_people", "plays", "recipes"}


def one_record_per_source(registry: Registry = REGISTRY) -> list[Record]:
    return [
        Record.make(f"{sid}/r1", sid, ["p0001"] if s.contains_personal_data else [], f"{sid} text")
        for sid, s in registry.sources.items()
    ]


def judge(*, purpose="research", as_of=AS_OF, registry=REGISTRY, records=None, **kw):
    records = one_record_per_source(registry) if records is None else records
    return evaluate(
        registry, records, [kw.pop("policy", POLICY)], purpose=purpose, as_of=as_of, **kw
    )


def with_source(sid: str, **changes) -> Registry:
    raw = REGISTRY.model_dump(mode="json")
    raw["sources"][sid].update(changes)
    return Registry.model_validate(raw)


# -- per source, on the real registry -------------------------------------------------


def test_research_allows_exactly_the_permitted_sources() -> None:
    decision = judge()
    allowed = {sid for sid, reasons in decision.source_reasons.items() if not reasons}
    assert allowed == ALLOWED_FOR_RESEARCH
    assert [rid for rid, _ in decision.allowed] == [
        "crm/r1", "holdout_people/r1", "plays/r1", "recipes/r1"
    ]  # fmt: skip
    assert set(decision.record_reasons) == {"forum/r1", "newswire/r1", "support_legacy/r1"}
    assert decision.record_reasons["forum/r1"] == ("source forum is refused",)


def test_forum_terms_forbid_training() -> None:
    reasons = judge().source_reasons["forum"]
    assert any("terms of service forbid ML training: Posts remain" in r for r in reasons)


def test_newswire_tdm_opt_out_cites_its_evidence() -> None:
    [tdm] = [r for r in judge().source_reasons["newswire"] if "text-and-data mining" in r]
    assert tdm == (
        "[default] rights holder reserved text-and-data mining "
        "(tdm-reservation: 1 in /.well-known/tdmrep.json (TDMRep), seen 2025-05-02)"
    )


def test_support_legacy_collects_every_violation() -> None:
    assert judge().source_reasons["support_legacy"] == (
        "[default] personal data on basis 'contract'; policy requires consent",
        "[default] retention period P3Y expired on 2023-01-15",
    )


def test_commercial_refuses_the_non_commercial_license() -> None:
    decision = judge(purpose="commercial")
    assert decision.source_reasons["recipes"] == (
        "[default] license CC-BY-NC-4.0 is not allowed for commercial use",
    )
    assert decision.source_reasons["crm"] == decision.source_reasons["plays"] == ()
    assert not decision.allows("recipes/r1")


def test_personal_data_without_consent_is_refused() -> None:
    decision = judge(registry=with_source("crm", consent_basis="none"))
    assert decision.source_reasons["crm"] == (
        "[default] personal data on basis 'none'; policy requires consent",
    )
    assert not decision.allows("crm/r1")


def test_consent_basis_is_irrelevant_without_personal_data() -> None:
    registry = with_source("plays", consent_basis="none", contains_personal_data=False)
    assert judge(registry=registry).source_reasons["plays"] == ()


def test_retention_is_judged_as_of_the_given_day() -> None:
    # crm: acquired 2025-06-01, retention P5Y, so its last day is 2030-06-01
    assert judge(as_of=date(2030, 6, 1)).source_reasons["crm"] == ()
    assert judge(as_of=date(2030, 6, 2)).source_reasons["crm"] == (
        "[default] retention period P5Y expired on 2030-06-01",
    )
    assert judge(as_of=date(2020, 1, 15)).source_reasons["support_legacy"] == (
        "[default] personal data on basis 'contract'; policy requires consent",
    )


def test_policy_switches_turn_checks_off() -> None:
    lax = POLICY.model_copy(
        update={
            "honour_tdm_opt_out": False,
            "honour_training_prohibitions": False,
            "enforce_retention": False,
        }
    )
    reasons = judge(policy=lax).source_reasons
    assert not any("text-and-data mining" in r for r in reasons["newswire"])
    assert not any("forbid ML training" in r for r in reasons["forum"])
    assert reasons["support_legacy"] == (
        "[default] personal data on basis 'contract'; policy requires consent",
    )


def test_evaluate_is_pure_and_deterministic() -> None:
    """Same inputs, same decision, whatever the record order; no source file is read."""
    raw = REGISTRY.model_dump(mode="json")
    for sid, source in raw["sources"].items():
        source["location"] = f"does/not/exist/{sid}.jsonl"
    nowhere = Registry.model_validate(raw)
    records = one_record_per_source()
    first = judge(registry=nowhere, records=list(reversed(records)))
    assert first == judge(records=records)
    assert records == one_record_per_source()


# -- per record: deny lists ------------------------------------------------------------


def crm_records() -> list[Record]:
    return [
        Record.make(f"crm/{sid}-{fact}", "crm", [sid], f"{sid} {fact}")
        for sid in ("p0001", "p0002", "p0003")
        for fact in ("city", "email")
    ]


DENIED = {
    "crm/p0001-email": ("record is on the deny list (deleted)",),
    "crm/p0002-city": ("data subject(s) p0002 on the deny list (deleted)",),
    "crm/p0002-email": ("data subject(s) p0002 on the deny list (deleted)",),
}


def test_denials_refuse_exactly_the_named_records_and_subjects() -> None:
    denials = Denials(records=frozenset({"crm/p0001-email"}), subjects=frozenset({"p0002"}))
    decision = judge(records=crm_records(), denials=denials)
    assert dict(decision.record_reasons) == DENIED
    assert [rid for rid, _ in decision.allowed] == [
        "crm/p0001-city",
        "crm/p0003-city",
        "crm/p0003-email",
    ]


def test_the_policy_deny_list_works_the_same_way() -> None:
    policy = POLICY.model_copy(
        update={"deny": DenyList(records=("crm/p0001-email",), subjects=("p0002",))}
    )
    assert dict(judge(records=crm_records(), policy=policy).record_reasons) == DENIED


def test_a_denied_record_of_a_refused_source_carries_both_reasons() -> None:
    forum = [Record.make("forum/x", "forum", [], "post")]
    decision = judge(records=forum, denials=Denials(records=frozenset({"forum/x"})))
    assert decision.record_reasons["forum/x"] == (
        "source forum is refused",
        "record is on the deny list (deleted)",
    )


def test_a_record_of_an_unregistered_source_is_refused() -> None:
    decision = judge(records=[Record.make("ghost/1", "ghost", [], "boo")])
    assert decision.record_reasons["ghost/1"] == ("source ghost is not in the registry",)


# -- the deletion ledger --------------------------------------------------------------


def test_ledger_denials(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    entries = [
        {"record_ids": ["crm/p0001-email"], "reason": "erasure request 17"},
        {"subject_ids": ["p0002"]},
        {"record_ids": ["crm/p0003-city"], "subject_ids": ["p0004"]},
    ]
    ledger.write_text(
        "\n".join(json.dumps(e) for e in entries[:2]) + "\n\n" + json.dumps(entries[2])
    )
    assert ledger_denials(ledger) == Denials(
        records=frozenset({"crm/p0001-email", "crm/p0003-city"}),
        subjects=frozenset({"p0002", "p0004"}),
    )
    assert ledger_denials(tmp_path / "absent.jsonl") == Denials()


@pytest.mark.parametrize(
    "line",
    [
        "{oops",
        "[" * 100_000,
        '{"n": ' + "1" * 5000 + "}",
        '["crm/p0001-email"]',
        '{"record_ids": "crm/p0001-email"}',
        '{"subject_ids": [1]}',
    ],
)
def test_malformed_ledger_line_is_named(tmp_path: Path, line: str) -> None:
    """A bare string would deny its characters, not the record: it is refused, loudly."""
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps({"subject_ids": ["p0002"]}) + "\n" + line + "\n")
    with pytest.raises(MalformedRecordError, match=r"ledger\.jsonl:2: not a ledger entry"):
        ledger_denials(ledger)


def _sign_request(project: Project, **kw) -> None:
    from lineage.ledger import append_request, ledger_lock
    from lineage.signing import load_trusted_keys

    trusted = load_trusted_keys(project.root / "policies" / "trusted_keys")
    with ledger_lock(project.root) as lock:
        append_request(lock, project.signer, trusted, request_id="r1", reason="T-1", **kw)


def test_the_gate_stage_reads_the_policy_ledger(project: Project) -> None:
    _sign_request(project, record_hashes={}, subject_ids=["p0001"])
    decision, _ = run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)
    p0001 = {
        r.record_id for r in read_all(project.root / "data/records") if "p0001" in r.subject_ids
    }
    crm = {rid for rid in p0001 if rid.startswith("crm/")}
    assert crm and all(not decision.allows(rid) for rid in p0001)
    for rid in crm:
        assert decision.record_reasons[rid] == ("data subject(s) p0001 on the deny list (deleted)",)
    admitted = verify_training_input(
        read_all(project.root / "data/records"), root=project.root, skip_refused=True
    )
    assert not set(admitted.record_ids) & p0001


# -- the signed decision ---------------------------------------------------------------


def signed_decision(root: Path) -> tuple[dict, bytes]:
    env = read_envelope(root / "data/gate/decision.dsse.json", what="decision")
    payload = verify_envelope(env, load_trusted_keys(root / "policies/trusted_keys"))
    return parse_statement(payload, PREDICATE_TYPE), payload


def test_the_signed_decision_lists_every_refusal_and_the_allowed_root(project: Project) -> None:
    statement, _ = signed_decision(project.root)
    predicate = statement["predicate"]
    records = read_all(project.root / "data/records")
    refused = {r.record_id for r in records if r.source_id not in ALLOWED_FOR_RESEARCH}
    assert refused and {r["record_id"] for r in predicate["refused_records"]} == refused
    for refusal in predicate["refused_records"]:
        source = refusal["record_id"].split("/")[0]
        assert refusal["reasons"] == [f"source {source} is refused"]
        assert predicate["sources"][source]["reasons"]
    allowed_data = (project.root / "data/gate/allowed.leaves").read_bytes()
    allowed = parse_leaves(allowed_data, what="allowed")
    assert {rid for rid, _ in allowed} == {r.record_id for r in records} - refused
    assert predicate["allowed"] == {"merkle_root": merkle_root(allowed)[0], "count": len(allowed)}
    assert (predicate["purpose"], predicate["as_of"], predicate["manifest_version"]) == (
        "research",
        AS_OF.isoformat(),
        1,
    )
    assert predicate["policies"] == {
        "default.yaml": file_sha256(project.root / "policies/default.yaml")
    }
    manifest = json.loads((project.root / "data/manifest.dsse.json").read_bytes())
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects == {
        "manifest:v1": sha256_hex(base64.b64decode(manifest["payload"])),
        "data/gate/allowed.leaves": sha256_hex(allowed_data),
    }


# -- policy files --------------------------------------------------------------------


def policies_dir(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


DEFAULT = (REPO / "policies" / "default.yaml").read_text(encoding="utf-8")
THRESHOLDS = "schema_version: 1\nkind: verification-thresholds\nmax_auc: 0.6\n"


def test_other_kinds_of_policy_are_ignored(tmp_path: Path) -> None:
    d = policies_dir(
        tmp_path, **{"default.yaml": DEFAULT, "thresholds.yaml": THRESHOLDS, "list.yaml": "- 1\n"}
    )
    (tmp_path / "notes.txt").write_text("kind: gate-policy\n")
    loaded = load_policies(d)
    assert list(loaded) == ["default.yaml"]
    policy, digest = loaded["default.yaml"]
    assert isinstance(policy, GatePolicy) and policy.name == "default"
    assert digest == file_sha256(tmp_path / "default.yaml")


def test_no_gate_policy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"no gate policy \(kind: gate-policy\)"):
        load_policies(policies_dir(tmp_path, **{"thresholds.yaml": THRESHOLDS}))


def test_malformed_policies_report_every_problem(tmp_path: Path) -> None:
    typo = DEFAULT.replace("honour_tdm_opt_out", "honor_tdm_opt_out")
    bad_purpose = DEFAULT.replace("  commercial:", "  marketing:")
    d = policies_dir(
        tmp_path,
        **{"a.yaml": typo, "b.yaml": bad_purpose, "c.yaml": "kind: gate-policy\nname: [\n"},
    )
    with pytest.raises(PolicyFileError) as caught:
        load_policies(d)
    problems = caught.value.problems
    assert "a.yaml: honor_tdm_opt_out: Extra inputs are not permitted" in problems
    assert any(p.startswith("b.yaml: licenses.marketing.[key]: ") for p in problems)
    assert any(p.startswith("c.yaml: not valid YAML") for p in problems)
    assert len(problems) == 3


def test_the_gate_refuses_an_edited_ledger(project: Project) -> None:
    """Dropping a subject from the ledger would let them back in: the chain catches it."""
    from lineage.errors import TamperedLedgerEntryError

    _sign_request(project, record_hashes={}, subject_ids=["p0001"])
    ledger = project.root / "data" / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"p0001"', b'"p0009"'))
    with pytest.raises(TamperedLedgerEntryError):
        run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)


# -- pretrained models: judged like sources, pinned by digest ---------------------------


def model_entry(location: str, sha256: str, **changes) -> dict:
    return {
        "description": "a pretrained model", "location": location, "sha256": sha256,
        "license": "Apache-2.0", "terms": {"summary": "Apache-2.0", "permits_ml_training": True},
        "acquired": {"date": "2026-01-01", "method": "pip package"}, **changes,
    }  # fmt: skip


def with_models(**models: dict) -> Registry:
    raw = REGISTRY.model_dump(mode="json")
    raw["models"] = {mid: {"id": mid, **m} for mid, m in models.items()}
    return Registry.model_validate(raw)


def test_a_registered_model_is_judged_by_license_terms_and_its_bytes() -> None:
    digest = "a" * 64
    registry = with_models(
        ok=model_entry("m/ok.gguf", digest),
        nc=model_entry("m/nc.gguf", digest, license="CC-BY-NC-4.0"),
        tos=model_entry(
            "m/tos", digest, terms={"summary": "no fine-tuning", "permits_ml_training": False}
        ),
        swapped=model_entry("m/swapped.gguf", digest),
        gone=model_entry("m/gone.gguf", digest),
    )
    found = {"ok": digest, "nc": digest, "tos": digest, "swapped": "b" * 64, "gone": None}
    research = judge(registry=registry, model_digests=found).models
    assert {m for m, v in research.items() if v["allowed"]} == {"ok", "nc"}
    assert research["tos"]["reasons"] == [
        "[default] its terms forbid training on it: no fine-tuning"
    ]
    assert "is not the registered bytes" in research["swapped"]["reasons"][0]
    assert research["gone"]["reasons"] == ["m/gone.gguf does not exist"]
    commercial = judge(registry=registry, model_digests=found, purpose="commercial").models
    assert commercial["nc"]["allowed"] is False
    assert "CC-BY-NC-4.0 is not allowed for commercial use" in commercial["nc"]["reasons"][0]
    assert judge().models == {}  # no models registered: the decision is as it was


def test_a_model_with_an_unknown_license_is_refused_at_load(tmp_path: Path) -> None:
    import yaml

    from lineage.errors import BadInputError

    raw = yaml.safe_load((REPO / "data/sources.yaml").read_text())
    raw["models"] = {"m": model_entry("m.gguf", "a" * 64, license="Free-ish")}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(BadInputError, match="unknown license") as err:
        load_registry(tmp_path / "sources.yaml")
    assert "m: 'Free-ish'" in str(err.value)
