"""An SPDX 3.0.1 document with the AI and Dataset profiles.

The released model is an ``ai_AIPackage``; each source a
``dataset_DatasetPackage``; relationships say which datasets the model was
``trainedOn`` (sources the gate allowed) and ``testedOn`` (the verification),
and which license each dataset declares. Built with ``spdx-python-model``,
whose bindings check every value's type on assignment and every required
property when serializing; :func:`validate` reads a document back into the
model and links it, so a dangling reference or an unknown type is an error.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime

from spdx_python_model import v3_0_1 as spdx

from lineage.errors import VerificationError

NAME = "spdx.json"
BASE = "https://exante.dev/spdx/"
FILL = "NOASSERTION (operator to fill in)"


class SpdxValidationError(VerificationError):
    """The SPDX document is not valid SPDX 3.0.1 (a bug in the exporter)."""


def render(facts: dict) -> dict[str, bytes]:
    objects = _objects(facts)
    out = io.BytesIO()
    try:
        spdx.JSONLDSerializer().write(spdx.SHACLObjectSet(objects), out, indent=2, sort_keys=True)
    except (ValueError, TypeError) as exc:
        raise SpdxValidationError(f"the SPDX document does not serialize: {exc}") from None
    data = out.getvalue().rstrip(b"\n") + b"\n"
    problems = validate(data)
    if problems:
        raise SpdxValidationError(f"the SPDX document does not validate: {problems}")
    return {NAME: data}


def validate(data: bytes) -> list[str]:
    """Read ``data`` back with spdx-python-model: every type known, every reference resolved."""
    objects = spdx.SHACLObjectSet()
    try:
        spdx.JSONLDDeserializer().read(io.BytesIO(data), objects)
    except (ValueError, TypeError, KeyError) as exc:
        return [f"not SPDX 3.0.1 JSON-LD: {exc}"]
    missing = sorted(objects.link())
    problems = [f"reference to an element not in the document: {m}" for m in missing]
    docs = list(objects.foreach_type(spdx.SpdxDocument))
    if len(docs) != 1:
        problems.append(f"{len(docs)} SpdxDocument elements, not 1")
    try:  # serializing again checks every required property and cardinality
        spdx.JSONLDSerializer().write(objects, io.BytesIO())
    except (ValueError, TypeError) as exc:
        problems.append(str(exc))
    return problems


def _id(facts: dict, name: str) -> str:
    return f"{BASE}{facts['describes']['manifest']['merkle_root']}/{name}"


def _objects(facts: dict) -> list:
    ci = spdx.CreationInfo(
        _id="_:creationinfo",
        specVersion="3.0.1",
        created=_time(facts["describes"]["training_attestation"]["created_at"]),
    )
    agent = spdx.SoftwareAgent(_id=_id(facts, "agent/exante"), name="exante", creationInfo=ci)
    ci.createdBy.append(agent)
    model = _model(facts, ci)
    datasets = {sid: _dataset(facts, sid, s, ci) for sid, s in sorted(facts["sources"].items())}
    rels, added = _relationships(facts, ci, model, datasets)
    elements = [agent, model, *datasets.values(), *added, *rels]
    doc = spdx.SpdxDocument(
        _id=_id(facts, "document"),
        name="exante training lineage: released model and training data",
        creationInfo=ci,
        comment=_lineage_comment(facts),
    )
    for profile in ("core", "software", "ai", "dataset", "simpleLicensing"):
        doc.profileConformance.append(getattr(spdx.ProfileIdentifierType, profile))
    doc.rootElement.append(model)
    doc.element.extend(elements)
    return [doc, *elements]


def _time(iso: str) -> datetime:
    """A signed ISO time (the attestation's, so rebuilding gives the same document)."""
    return datetime.fromisoformat(iso)


def _lineage_comment(facts: dict) -> str:
    d = facts["describes"]
    return (
        f"Computed from signed manifest v{d['manifest']['version']} (payload sha256 "
        f"{d['manifest']['payload_sha256']}, Merkle root {d['manifest']['merkle_root']}), "
        f"gate decision {d['gate_decision']['payload_sha256']}, training attestation "
        f"{d['training_attestation']['sha256']}, verification report "
        f"{d['verification_report']['sha256']}."
    )


def _sha256(value: str):
    return spdx.Hash(algorithm=spdx.HashAlgorithm.sha256, hashValue=value)


def _model(facts: dict, ci) -> object:
    m, v = facts["model"], facts["verification"]
    files = "".join(f"{h}  {n}\n" for n, h in sorted(m["files"].items()))
    pkg = spdx.ai_AIPackage(
        _id=_id(facts, "model"),
        name="released-model",
        creationInfo=ci,
        software_packageVersion=FILL,
        software_primaryPurpose=spdx.software_SoftwarePurpose.model,
        software_downloadLocation="NOASSERTION",
        releaseTime=_time(facts["describes"]["training_attestation"]["created_at"]),
        description=m["architecture"],
        ai_typeOfModel=["transformer (GPT-2)"],
        ai_informationAboutTraining=(
            "SISA shards trained on the records a signed policy gate allowed; tokenizer "
            f"{m['tokenizer']}"
        ),
        ai_limitation=(
            "Verification against a retrain reference: "
            + ", ".join(f"{k}: {x['verdict']}" for k, x in sorted(v["verdicts"].items()))
        ),
        ai_useSensitivePersonalInformation=(
            spdx.PresenceType.yes
            if any(
                s["contains_personal_data"] and s["records_trained"]
                for s in facts["sources"].values()
            )
            else spdx.PresenceType.no
        ),
        ai_standardCompliance=["CycloneDX 1.6 ML-BOM", "EU AI Act Art. 53(1)(d) summary"],
    )
    pkg.verifiedUsing.append(_sha256(hashlib.sha256(files.encode()).hexdigest()))
    for k, val in sorted(m["params"].items()):
        pkg.ai_hyperparameter.append(
            spdx.DictionaryEntry(key=k, value=json.dumps(val, sort_keys=True))
        )
    for shard, dp in sorted(m["dp"].items()):
        value = "none" if not dp else json.dumps(dp, sort_keys=True)
        pkg.ai_hyperparameter.append(spdx.DictionaryEntry(key=f"dp.shard.{shard}", value=value))
    for model, metrics in sorted(v["metrics"].items()):
        for name, value in sorted(metrics.items()):
            pkg.ai_metric.append(
                spdx.DictionaryEntry(key=f"{model}.{name}", value=json.dumps(value))
            )
    return pkg


def _dataset(facts: dict, sid: str, s: dict, ci) -> object:
    pkg = spdx.dataset_DatasetPackage(
        _id=_id(facts, f"dataset/{sid}"),
        name=sid,
        creationInfo=ci,
        description=s["description"],
        software_downloadLocation="NOASSERTION",
        software_primaryPurpose=spdx.software_SoftwarePurpose.data,
        dataset_datasetSize=s["bytes"],
        dataset_dataCollectionProcess=f"{s['acquired_method']} ({s['acquired_date']})",
        dataset_intendedUse=(
            f"training: {s['records_trained']} of {s['records']} records allowed by the gate"
            + (
                f"; {s['records_held_out']} held out as non-members (never trained)"
                if s["records_held_out"]
                else ""
            )
            + ("" if s["allowed"] else "; refused: " + "; ".join(s["refusal_reasons"]))
        ),
        dataset_hasSensitivePersonalInformation=(
            spdx.PresenceType.yes if s["contains_personal_data"] else spdx.PresenceType.no
        ),
        comment=(
            f"kind: {s['kind']}; records {s['records']}, trained {s['records_trained']}, "
            f"refused {s['records_refused']}; bytes {s['bytes']}, trained "
            f"{s['bytes_trained']}; consent basis {s['consent_basis']}; TDM opt-out "
            f"{str(s['tdm_opt_out']).lower()}; manifest Merkle root "
            f"{facts['describes']['manifest']['merkle_root']}"
        ),
    )
    pkg.dataset_datasetType.append(spdx.dataset_DatasetType.text)
    if s["records_sha256"]:
        pkg.verifiedUsing.append(_sha256(s["records_sha256"]))
    return pkg


def _relationships(facts: dict, ci, model, datasets: dict) -> tuple[list, list]:
    """The relationships, and the elements they add (licenses, the forget set)."""
    rels, added = [], []
    trained = [datasets[sid] for sid, s in facts["sources"].items() if s["records_trained"]]
    if trained:
        rels.append(_rel(facts, "trainedOn", model, trained, ci))
    tested = _forget_set(facts, ci)
    if tested is not None:
        added.append(tested)
        rels.append(_rel(facts, "testedOn", model, [tested], ci, name="verification"))
    licenses = {}
    for sid, s in sorted(facts["sources"].items()):
        lic = licenses.setdefault(s["license"], spdx.simplelicensing_LicenseExpression(
            _id=_id(facts, f"license/{s['license']}"), creationInfo=ci,
            simplelicensing_licenseExpression=s["license"]))  # fmt: skip
        rels.append(_rel(facts, "hasDeclaredLicense", datasets[sid], [lic], ci, name=sid))
    return rels, added + [licenses[k] for k in sorted(licenses)]


def _forget_set(facts: dict, ci) -> object | None:
    """The verification's forget set, by the digest its signed report names."""
    digest = facts["verification"].get("forget_set_sha256")
    if not digest:
        return None
    pkg = spdx.dataset_DatasetPackage(
        _id=_id(facts, "dataset/verification-forget-set"),
        name="verification-forget-set",
        creationInfo=ci,
        software_downloadLocation="NOASSERTION",
        software_primaryPurpose=spdx.software_SoftwarePurpose.data,
        description="The people and records the verification tested deletion on, against a "
        f"retrain reference ({facts['verification']['reference']}); not published.",
    )
    pkg.dataset_datasetType.append(spdx.dataset_DatasetType.text)
    pkg.verifiedUsing.append(_sha256(digest))
    return pkg


def _rel(facts: dict, kind: str, src, targets: list, ci, *, name: str = "model") -> object:
    rel = spdx.Relationship(
        _id=_id(facts, f"relationship/{kind}/{name}"),
        creationInfo=ci,
        from_=src,
        relationshipType=getattr(spdx.RelationshipType, kind),
    )
    rel.to.extend(targets)
    return rel
