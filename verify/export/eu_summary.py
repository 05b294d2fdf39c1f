"""The EU AI Act public summary of training content, as JSON and Markdown.

Follows the sections of the AI Office's *Template for the Public Summary of
Training Content for general-purpose AI models* (Art. 53(1)(d) of Regulation
(EU) 2024/1689; template published 24 July 2025): 1 general information, 2 the
list of data sources by category, 3 data-processing aspects. Every number is a
fact from :mod:`verify.export._facts`; what exante cannot know is listed under
``operator_must_fill_in`` and marked in the Markdown.
"""

from __future__ import annotations

import json

from verify.export._facts import KINDS

JSON_NAME = "eu-summary.json"
MD_NAME = "eu-summary.md"
TEMPLATE = (
    "European Commission AI Office, Template for the Public Summary of Training Content "
    "for general-purpose AI models (24 July 2025), Art. 53(1)(d) Regulation (EU) 2024/1689"
)
FILL = "[operator to fill in]"
OPERATOR_FIELDS = (
    "1.1 provider name, contact and authorised representative",
    "1.2 model name and version, model dependencies (base models), date placed on the market",
    "1.3 types of content per modality (fiction, news, personal communication, ...)",
    "2 confirmation of each source's category (exante derives it from the registry entry)",
    "2.3 crawler names, purposes and the period and types of websites crawled",
    "3.1 the opt-out protocols the crawler honours (robots.txt, TDMRep, ...) beyond the "
    "registry's tdm_opt_out flags",
    "3.2 measures to remove illegal content (exante enforces licence, terms, opt-out, "
    "consent and deletion policy; it does not scan content for illegality)",
    "3.3 any other information the provider wishes to add",
)
# The template's ranges for the size of text training data.
TEXT_RANGES = ((10**9, "Less than 1 billion tokens"),
               (10**13, "1 billion to 10 trillion tokens"),
               (None, "More than 10 trillion tokens"))  # fmt: skip


def render(facts: dict) -> dict[str, bytes]:
    """``{file name: bytes}``: the summary as sorted JSON and as Markdown."""
    doc = document(facts)
    return {
        JSON_NAME: json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n",
        MD_NAME: markdown(doc).encode("utf-8"),
    }


def document(facts: dict) -> dict:
    totals = facts["totals"]
    return {
        "template": TEMPLATE,
        "describes": facts["describes"],
        "section_1_general_information": _general(facts, totals),
        "section_2_list_of_data_sources": _sources_by_kind(facts["sources"]),
        "section_3_data_processing_aspects": _processing(facts),
        "operator_must_fill_in": list(OPERATOR_FIELDS),
        "record_sizes": {
            sid: {"bytes": s["bytes"], "bytes_allowed": s["bytes_allowed"]}
            for sid, s in sorted(facts["sources"].items())
        },
    }


def _general(facts: dict, totals: dict) -> dict:
    model = facts["model"]
    tokens = totals["bytes_trained"] if model["tokens_are_bytes"] else None
    return {
        "1_1_provider": {"name": FILL, "contact": FILL},
        "1_2_model": {
            "name_and_version": FILL,
            "dependencies": FILL,
            "placed_on_market": FILL,
            "architecture": model["architecture"],
            "training_attested_at": facts["describes"]["training_attestation"]["created_at"],
            "model_files_sha256": model["files"],
        },
        "1_3_modalities_and_size": {
            "modalities": ["text"],
            "text": {
                "records": totals["records_trained"],
                "bytes": totals["bytes_trained"],
                "tokens": tokens,
                "size_range": _range(tokens),
                "how_counted": (
                    "records: manifest leaves the signed gate decision allowed; bytes: UTF-8 "
                    "bytes of those records' canonical text; tokens: "
                    + (
                        "the tokenizer is byte-level, so tokens = bytes"
                        if tokens is not None
                        else "not computed (the model's own tokenizer); operator to fill in"
                    )
                ),
            },
            "image": None,
            "audio": None,
            "video": None,
            "other": None,
            "types_of_content": FILL,
            "data_collection_period": {
                "from": totals["acquired_from"],
                "to": totals["acquired_to"],
                "how": "acquisition dates in the source registry (records carry no dates)",
            },
        },
    }


def _range(tokens: int | None) -> str | None:
    if tokens is None:
        return None
    return next(label for limit, label in TEXT_RANGES if limit is None or tokens < limit)


def _sources_by_kind(sources: dict) -> dict:
    out = {}
    for n, (kind, label) in enumerate(KINDS.items(), 1):
        listed = {sid: _source(s) for sid, s in sources.items() if s["kind"] == kind}
        out[f"2_{n}_{kind}"] = {"category": label, "sources": listed}
    return out


def _source(s: dict) -> dict:
    keys = ("description", "license", "terms_summary", "terms_url", "acquired_date",
            "acquired_method", "jurisdiction", "contains_personal_data", "consent_basis",
            "tdm_opt_out", "records", "records_trained", "records_held_out", "records_refused",
            "bytes", "bytes_trained", "allowed", "refusal_reasons")  # fmt: skip
    return {k: s[k] for k in keys}


def _processing(facts: dict) -> dict:
    sources, by = facts["sources"], facts["refusals"]["by_reason"]
    opted_out = sorted(sid for sid, s in sources.items() if s["tdm_opt_out"])
    tdm = by.get("tdm_opt_out", {"sources": 0, "records": 0})
    return {
        "3_1_reservation_of_rights": {
            "basis": "Art. 4(3) Directive (EU) 2019/790: a rights reservation (TDM opt-out) "
            "recorded in the source registry refuses the whole source at the policy gate",
            "sources_with_opt_out": opted_out,
            "sources_refused_for_opt_out": tdm["sources"],
            "records_refused_for_opt_out": tdm["records"],
            "records_trained_from_opted_out_sources": sum(
                sources[sid]["records_trained"] for sid in opted_out
            ),
            "opt_out_evidence": {sid: sources[sid]["tdm_opt_out_evidence"] for sid in opted_out},
        },
        "3_2_removal_of_illegal_content": {
            "measures": FILL,
            "policy_gate": "records are refused before training for: " + ", ".join(sorted(by))
            if by
            else "no record was refused",
        },
        "refusals_by_reason": by,
        "records_refused": facts["refusals"]["records"],
        "gate": facts["describes"]["gate_decision"],
    }


# -- Markdown ----------------------------------------------------------------------------


def markdown(doc: dict) -> str:
    g = doc["section_1_general_information"]
    text = g["1_3_modalities_and_size"]["text"]
    period = g["1_3_modalities_and_size"]["data_collection_period"]
    d = doc["describes"]
    lines = [
        "# Public Summary of Training Content",
        "",
        f"Following the {doc['template']}.",
        "",
        f"Computed by exante from signed manifest v{d['manifest']['version']} "
        f"(Merkle root `{d['manifest']['merkle_root']}`), gate decision "
        f"`{d['gate_decision']['payload_sha256']}` and training attestation "
        f"`{d['training_attestation']['sha256']}`. Fields marked {FILL} are for the provider.",
        "",
        "## 1. General information",
        "",
        f"- Provider: {FILL}",
        f"- Model name and version: {FILL}; dependencies: {FILL}; placed on the market: {FILL}",
        f"- Architecture: {g['1_2_model']['architecture']}",
        "- Modalities: text",
        f"- Text: {text['records']} records, {text['bytes']} bytes, "
        f"{text['tokens'] if text['tokens'] is not None else FILL} tokens "
        f"({text['size_range'] or FILL})",
        f"- How counted: {text['how_counted']}",
        f"- Data collection period: {period['from']} to {period['to']} ({period['how']})",
        "",
        "## 2. List of data sources",
        "",
    ]
    for key, section in doc["section_2_list_of_data_sources"].items():
        lines += _md_kind(key, section)
    lines += _md_processing(doc["section_3_data_processing_aspects"])
    lines += ["## Fields the provider must fill in", ""]
    lines += [f"- {f}" for f in doc["operator_must_fill_in"]] + [""]
    return "\n".join(lines)


def _md_kind(key: str, section: dict) -> list[str]:
    number = ".".join(key.split("_")[:2])
    lines = [f"### {number} {section['category']}", ""]
    if not section["sources"]:
        return [*lines, "None.", ""]
    lines += [
        "| source | license | acquired | records | trained on | refused | bytes trained | gate |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for sid, s in section["sources"].items():
        gate = "allowed" if s["allowed"] else "refused: " + "; ".join(s["refusal_reasons"])
        lines.append(
            f"| {sid} | {s['license']} | {s['acquired_date']} | {s['records']} | "
            f"{s['records_trained']} | {s['records_refused']} | {s['bytes_trained']} | "
            f"{_cell(gate)} |"
        )
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_processing(p: dict) -> list[str]:
    tdm = p["3_1_reservation_of_rights"]
    lines = [
        "## 3. Data processing aspects",
        "",
        "### 3.1 Respect of reservation of rights (TDM opt-out)",
        "",
        f"{tdm['basis']}.",
        "",
        f"- Sources with an opt-out: {', '.join(tdm['sources_with_opt_out']) or 'none'}",
        f"- Sources refused for the opt-out: {tdm['sources_refused_for_opt_out']}; "
        f"records refused: {tdm['records_refused_for_opt_out']}; records trained on from "
        f"opted-out sources: {tdm['records_trained_from_opted_out_sources']}",
        "",
        "### 3.2 Removal of illegal content",
        "",
        f"- Measures: {p['3_2_removal_of_illegal_content']['measures']}",
        f"- Policy gate: {p['3_2_removal_of_illegal_content']['policy_gate']}",
        "",
        "### Refusals by reason",
        "",
        "| reason | sources | records |",
        "|---|---:|---:|",
    ]
    for reason, n in p["refusals_by_reason"].items():
        lines.append(f"| {reason} | {n['sources']} | {n['records']} |")
    return [*lines, "", f"Records refused in all: {p['records_refused']}.", ""]
