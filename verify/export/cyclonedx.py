"""A CycloneDX 1.6 ML-BOM: the released model and the data it was trained on.

The model is a ``machine-learning-model`` component whose model card names
its datasets, training parameters, DP guarantee per shard and the
verification verdicts; each source is a ``data`` component with its
governance, license, classification, the sha256 of its records file and the
manifest's Merkle root. ``cyclonedx-python-lib`` builds and serializes the BOM;
it has no model for ``modelCard`` and ``data`` yet, so those two objects are
added to its JSON, and the whole is validated against the official 1.6 JSON
schema the library ships (strict).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.bom_ref import BomRef
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.spdx import is_supported_id
from cyclonedx.validation.json import JsonStrictValidator

from lineage.errors import VerificationError
from verify.export._facts import RELEASED

NAME = "cyclonedx.json"
MODEL_REF = "model"
PREFIX = "exante:"  # property names in exante's namespace
FILL = "operator-to-fill-in"


class BomValidationError(VerificationError):
    """The BOM does not validate against the CycloneDX 1.6 schema (a bug in the exporter)."""


def render(facts: dict) -> dict[str, bytes]:
    data = json.loads(_serialize(_bom(facts)))
    _add_model_card(data, facts)
    _add_data(data, facts)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    problems = validate(text)
    if problems:
        raise BomValidationError(f"the CycloneDX BOM does not validate: {problems}")
    return {NAME: text.encode("utf-8")}


def validate(text: str) -> str | None:
    """None if ``text`` validates against the official CycloneDX 1.6 JSON schema, else why not."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    return None if error is None else str(error)[:500]


def _serialize(bom: Bom) -> str:
    return make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string()


def _bom(facts: dict) -> Bom:
    d = facts["describes"]
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "exante:" + json.dumps(d, sort_keys=True))
    model = _model(facts)
    bom = Bom(
        serial_number=serial,
        metadata=BomMetaData(
            timestamp=datetime.fromisoformat(d["training_attestation"]["created_at"]),
            component=model,
            properties=[Property(name=PREFIX + k, value=v) for k, v in _lineage(d).items()],
        ),
    )
    for sid in sorted(facts["sources"]):
        bom.components.add(_source(sid, facts["sources"][sid], d))
    bom.register_dependency(model, [c for c in bom.components if c.bom_ref.value != MODEL_REF])
    return bom


def _lineage(d: dict) -> dict[str, str]:
    return {
        "manifest.version": str(d["manifest"]["version"]),
        "manifest.merkle_root": d["manifest"]["merkle_root"],
        "manifest.payload_sha256": d["manifest"]["payload_sha256"],
        "gate_decision.payload_sha256": d["gate_decision"]["payload_sha256"],
        "training_attestation.sha256": d["training_attestation"]["sha256"],
        "verification_report.sha256": d["verification_report"]["sha256"],
    }


def _model(facts: dict) -> Component:
    files = facts["model"]["files"]
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name="released-model",
        version=FILL,
        bom_ref=BomRef(MODEL_REF),
        description=facts["model"]["architecture"],
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=_files_digest(files))],
        properties=[Property(name=f"{PREFIX}file:{n}", value=h) for n, h in files.items()],
    )


def _files_digest(files: dict[str, str]) -> str:
    """One digest for the model: sha256 over its sorted ``sha256  name`` lines."""
    import hashlib

    lines = "".join(f"{h}  {n}\n" for n, h in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _license(license_id: str):
    if is_supported_id(license_id):
        return DisjunctiveLicense(id=license_id)
    return LicenseExpression(license_id)


def _source(sid: str, s: dict, d: dict) -> Component:
    props = {
        "kind": s["kind"],
        "records": str(s["records"]),
        "records_trained": str(s["records_trained"]),
        "records_held_out": str(s["records_held_out"]),  # allowed, kept as non-members
        "records_refused": str(s["records_refused"]),
        "bytes": str(s["bytes"]),
        "bytes_trained": str(s["bytes_trained"]),
        "gate": "allowed" if s["allowed"] else "refused",
        "tdm_opt_out": str(s["tdm_opt_out"]).lower(),
        "consent_basis": str(s["consent_basis"]),
        "acquired": f"{s['acquired_date']} ({s['acquired_method']})",
        "jurisdiction": str(s["jurisdiction"]),
        "retention": str(s["retention"]),
        "manifest.merkle_root": d["manifest"]["merkle_root"],
    }
    props |= {f"refusal:{n}": r for n, r in enumerate(s["refusal_reasons"])}
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=s["records_sha256"])]
    return Component(
        type=ComponentType.DATA,
        name=sid,
        bom_ref=BomRef(f"source:{sid}"),
        description=s["description"],
        licenses=[_license(s["license"])],
        hashes=hashes if s["records_sha256"] else [],
        properties=[Property(name=PREFIX + k, value=v) for k, v in props.items()],
    )


# -- what the library does not model: modelCard and data --------------------------------


def _component(data: dict, ref: str) -> dict:
    if data["metadata"]["component"]["bom-ref"] == ref:
        return data["metadata"]["component"]
    return next(c for c in data["components"] if c["bom-ref"] == ref)


def _add_model_card(data: dict, facts: dict) -> None:
    params = facts["model"]["params"]
    _component(data, MODEL_REF)["modelCard"] = {
        "modelParameters": {
            "approach": {"type": "self-supervised"},
            "task": "text-generation",
            "architectureFamily": "transformer",
            "modelArchitecture": facts["model"]["architecture"],
            "datasets": [
                {"ref": f"source:{sid}"}
                for sid, s in sorted(facts["sources"].items())
                if s["records_trained"]
            ],
            "inputs": [{"format": "text"}],
            "outputs": [{"format": "text"}],
        },
        "quantitativeAnalysis": {"performanceMetrics": _metrics(facts["verification"])},
        "considerations": _considerations(facts),
        "properties": [
            {"name": f"{PREFIX}param:{k}", "value": json.dumps(v, sort_keys=True)}
            for k, v in sorted(params.items())
        ]
        + [
            {"name": f"{PREFIX}dp:shard:{shard}", "value": json.dumps(dp, sort_keys=True)}
            for shard, dp in sorted(facts["model"]["dp"].items())
        ],
    }


def _metrics(v: dict) -> list[dict]:
    out = []
    for model, metrics in sorted(v["metrics"].items()):
        for name, value in sorted(metrics.items()):
            out.append({"type": name, "value": json.dumps(value), "slice": model})
    for model, verdict in sorted(v["verdicts"].items()):
        out.append({"type": "verdict", "value": str(verdict["verdict"]), "slice": model})
    return out


def _considerations(facts: dict) -> dict:
    dp = facts["model"]["dp"]
    eps = {s: e["epsilon"] for s, e in sorted(dp.items()) if e}
    verdicts = facts["verification"]["verdicts"]
    released = verdicts.get(RELEASED, {})
    return {
        "technicalLimitations": [
            "The verification tests deletion of a forget set against a retrain reference. "
            f"The release itself ({RELEASED}, trained on the forget set): verdict "
            f"{released.get('verdict')}, {released.get('failed')} of {released.get('checks')} "
            "checks failed; after deletion: "
            + ", ".join(f"{k}: {v['verdict']}" for k, v in verdicts.items() if k != RELEASED)
        ],
        "performanceTradeoffs": [
            "Differential privacy per shard: "
            + (", ".join(f"shard {s}: epsilon {e}" for s, e in eps.items()) or "not enabled")
        ],
    }


def _add_data(data: dict, facts: dict) -> None:
    d = facts["describes"]
    for sid, s in sorted(facts["sources"].items()):
        _component(data, f"source:{sid}")["data"] = [
            {
                "type": "dataset",
                "name": sid,
                "description": s["description"],
                "classification": _classification(s),
                "sensitiveData": ["personal data"] if s["contains_personal_data"] else [],
                "contents": {
                    "properties": [
                        {"name": f"{PREFIX}records_sha256", "value": str(s["records_sha256"])},
                        {
                            "name": f"{PREFIX}manifest.merkle_root",
                            "value": d["manifest"]["merkle_root"],
                        },
                    ]
                },
                "governance": {"custodians": [{"organization": {"name": FILL}}]},
            }
        ]


def _classification(s: dict) -> str:
    if s["contains_personal_data"]:
        return "personal data"
    return "public" if s["kind"] == "public" else "restricted"
