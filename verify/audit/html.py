"""The audit report: one self-contained HTML file a person can read.

It is rendered from the bundle's own files (the same bytes the index signs),
so it states nothing the bundle cannot back: sources and terms from the signed
manifest, refusals from the signed gate decision, the chain from data to
model, the deletion history from the ledger and receipts, the verdicts from
the signed verification report, the plots inline. No external resource is
loaded; a small script only builds the table of contents.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from html import escape

from lineage.layout import LAYOUT
from verify.audit._files import RECEIPT
from verify.verdicts import cell_outcome

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem 2rem;
color:#1d2430}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7e2;padding-top:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}
th,td{border:1px solid #d0d7e2;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a6b2d;font-weight:600}.fail{color:#a3161b;font-weight:600}
.inconclusive,.ineffective{color:#8a5a00;font-weight:600}.na{color:#5b6472}
code{font-size:.85em;word-break:break-all}.muted{color:#5b6472}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d0d7e2;border-radius:6px;
padding:.5rem 1rem;min-width:10rem}.card b{display:block;font-size:1.4rem}
nav ol{columns:2}img{max-width:100%;border:1px solid #d0d7e2}
"""

SCRIPT = """
(function () {
  var nav = document.getElementById("toc"), list = document.createElement("ol");
  document.querySelectorAll("h2[id]").forEach(function (h) {
    var a = document.createElement("a"), li = document.createElement("li");
    a.href = "#" + h.id; a.textContent = h.textContent; li.appendChild(a); list.appendChild(li);
  });
  nav.appendChild(list);
  document.documentElement.setAttribute("data-toc", String(list.children.length));
})();
"""


def _payload(files: dict[str, bytes], name: str) -> dict:
    return json.loads(base64.b64decode(json.loads(files[name])["payload"]))


def _json(files: dict[str, bytes], name: str, default=None):
    return json.loads(files[name]) if name in files else default


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escape text with :func:`escape` before passing it)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(outcome: str) -> str:
    """An outcome as the summary spells it (pass, fail, inconclusive, ineffective, n/a)."""
    css = {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive",
           "ineffective": "ineffective"}.get(outcome, "na")  # fmt: skip
    return f'<span class="{css}">{escape(outcome)}</span>'


def render(files: dict[str, bytes]) -> str:
    manifest = _payload(files, LAYOUT.name(LAYOUT.manifest))
    decision = _payload(files, LAYOUT.name(LAYOUT.gate_decision))
    attestation = _payload(files, LAYOUT.name(LAYOUT.attestation))
    report = _payload(files, LAYOUT.name(LAYOUT.verification_files.report))
    sections = [
        _summary(files, manifest, decision, report),
        _sources(manifest, decision),
        _chain(files, manifest, decision, attestation),
        _deletions(files),
        _verification(files, report),
        _proven(),
        _obligations(),
        _how_to_check(files),
    ]
    title = f"exante audit report: manifest v{manifest['predicate']['version']}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        '<p class="muted">Rendered from the signed files of this audit bundle; every number '
        'below comes from a file the bundle index signs.</p><nav id="toc"><b>Contents</b></nav>'
        + "".join(sections)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def _summary(files, manifest, decision, report) -> str:
    m, d = manifest["predicate"], decision["predicate"]
    ledger = _ledger(files)
    complete = sum(
        1 for r in ledger["requests"] if ledger["status"].get(r["request_id"]) == "complete"
    )
    verdicts = report["predicate"].get("summary", {})
    cards = [
        ("records in the signed manifest", m["record_count"]),
        ("allowed for training", d["allowed"]["count"]),
        ("refused by the policy gate", len(d.get("refused_records", []))),
        ("deletion requests honoured", f"{complete} of {len(ledger['requests'])}"),
        ("subjects verified", len(verdicts)),
    ]
    html = "".join(f'<div class="card"><b>{escape(str(v))}</b>{escape(k)}</div>' for k, v in cards)
    return (
        '<h2 id="summary">Summary</h2><div class="cards">' + html + "</div>"
        f"<p>Manifest v{m['version']} (Merkle root <code>{m['merkle']['root']}</code>, "
        f"{m['record_count']} records, created {escape(m['created_at'])}); gate decision for the "
        f"purpose <b>{escape(d['purpose'])}</b> as of {escape(d['as_of'])}.</p>"
    )


def _sources(manifest, decision) -> str:
    rows = []
    gate = decision["predicate"]["sources"]
    for sid, s in sorted(manifest["predicate"]["sources"].items()):
        g = gate.get(sid, {})
        reasons = "<br>".join(escape(r) for r in g.get("reasons", [])) or "—"
        about = f"<span class='muted'>{escape(s.get('description', ''))}</span>"
        personal = "<br>personal data" if s["contains_personal_data"] else ""
        rows.append([
            f"<b>{escape(sid)}</b><br>{about}",
            escape(s["license"]),
            escape(s["consent_basis"]) + personal,
            escape(s["jurisdiction"]),
            "yes" if s["tdm_opt_out"] else "no",
            ("permits ML training" if s["terms"]["permits_ml_training"] else "forbids ML training")
            + f"<br><span class='muted'>{escape(s['terms'].get('summary') or '')}</span>",
            escape(str(s.get("retention"))),
            f"{g.get('allowed', 0)} of {g.get('records', s['record_count'])}",
            reasons,
        ])  # fmt: skip
    refused = Counter(
        "; ".join(r["reasons"]) for r in decision["predicate"].get("refused_records", [])
    )
    refusal_rows = [[escape(reason), str(n)] for reason, n in refused.most_common()]
    return (
        '<h2 id="data">What the model was trained on</h2>'
        "<p>Each source as registered (license, consent basis, terms, text-and-data-mining "
        "opt-out) and what the policy gate decided for it. Only allowed records reach training; "
        "public-domain base sources train the shared base model.</p>"
        + _table(
            [
                "source",
                "license",
                "legal basis",
                "jurisdiction",
                "TDM opt-out",
                "terms",
                "retention",
                "records allowed",
                "refusal reasons",
            ],
            rows,
        )
        + "<h3>Refused records, by reason</h3>"
        + (_table(["reason", "records"], refusal_rows) if refusal_rows else "<p>None.</p>")
        + "<p>Policies applied: "
        + ", ".join(
            f"<code>{escape(n)}</code> (sha256 <code>{escape(h)}</code>)"
            for n, h in sorted(decision["predicate"]["policies"].items())
        )
        + "</p>"
    )


def _chain(files, manifest, decision, attestation) -> str:
    a = attestation["predicate"]
    partition = _payload(files, LAYOUT.name(LAYOUT.partition))["predicate"]
    sig = json.loads(
        base64.b64decode(
            json.loads(files[LAYOUT.name(LAYOUT.signature)])["dsseEnvelope"]["payload"]
        )
    )
    code = a.get("code_revision", {})
    dp = {k: v for k, v in a.get("dp", {}).items() if v}
    rows = [
        ["1. signed manifest", f"v{manifest['predicate']['version']}, root "
         f"<code>{manifest['predicate']['merkle']['root']}</code>"],
        ["2. gate decision", f"{decision['predicate']['allowed']['count']} records allowed, "
         f"allowed-set root <code>{decision['predicate']['allowed']['merkle_root']}</code>"],
        ["3. partition", f"{partition['shards']} shards × {partition['slices']} slices; records "
         + escape(json.dumps(partition["counts"], sort_keys=True))],
        ["4. training attestation", f"created {escape(a.get('created_at', ''))}, code "
         f"<code>{escape(str(code.get('git_commit') or 'not in git'))}</code>"
         f"{' (uncommitted changes)' if code.get('dirty') else ''}; DP: "
         + (escape(json.dumps(dp, sort_keys=True)) if dp else "off")],
        ["5. release knowledge probes", _knowledge(files)],
        ["6. model signature (OpenSSF)", f"{len(sig['predicate']['resources'])} files of "
         "<code>models/ensemble</code>, verifiable with <code>model_signing verify key</code>"],
    ]  # fmt: skip
    libs = ", ".join(
        f"{escape(k)} {escape(v)}" for k, v in sorted(a.get("library_versions", {}).items())
    )
    return (
        '<h2 id="chain">From data to model</h2><p>Each step is signed and names the digest of '
        "the step before it; the offline verifier checks every link.</p>"
        + _table(["step", "what is signed"], rows)
        + f"<p class='muted'>Libraries: {libs}.</p>"
    )


def _knowledge(files) -> str:
    k = _json(files, LAYOUT.name(LAYOUT.knowledge), {}).get("knowledge", {})
    if not k:
        return "—"
    return (
        f"the released ensemble completes {k['known']} of {k['total']} facts of the "
        f"{k['people']} retained people exactly (exact match {k['exact_match']:.2f})"
    )


def _ledger(files) -> dict:
    requests, status, history = [], {}, {}
    for line in files.get(LAYOUT.name(LAYOUT.ledger), b"").splitlines():
        e = json.loads(line)
        if e["kind"] == "request":
            requests.append(e)
        else:
            status[e["request_id"]] = e["status"]
            history.setdefault(e["request_id"], []).append(e)
    return {"requests": requests, "status": status, "history": history}


def _verified(info: dict | None) -> str:
    if not info:
        return "—"
    verdicts = ", ".join(f"{escape(k)} {escape(v)}" for k, v in info["verdicts"].items())
    same = "the release is the verified exact model" if info.get("exact_is_release") else (
        "the release is NOT the verified exact model")  # fmt: skip
    return f"{verdicts}; {same}<br><code>{escape(info['report'])}</code>"


def _deletions(files) -> str:
    ledger, receipts = _ledger(files), {}
    for name in (n for n in files if re.fullmatch(RECEIPT, n)):
        p = _payload(files, name)["predicate"]
        receipts[p["request_id"]] = p
    runs = _json(files, "mlflow/runs.json", {}).get("runs", {})
    rows = []
    for r in ledger["requests"]:
        rid = r["request_id"]
        steps = " → ".join(
            f"{escape(e['status'])} ({escape(e['at'])})" for e in ledger["history"].get(rid, [])
        )
        rec = receipts.get(rid)
        complete = next(
            (e for e in ledger["history"].get(rid, []) if e["status"] == "complete"), None
        )
        run = runs.get((complete or {}).get("meta", {}).get("mlflow_run_id", ""), {})
        m = run.get("metrics", {})
        rows.append([
            f"<code>{escape(rid)}</code><br>{escape(r['reason'])}",
            escape(r["received_at"]),
            f"{len(r['record_ids'])} records of {len(r.get('subject_ids', []))} subject(s)",
            steps or "received",
            (f"manifest v{rec['manifest']['version']}; shards retrained "
             f"{escape(str(rec['retrained_shards']))}; {len(rec['removed'])} non-inclusion proofs"
             if rec else "no receipt"),
            (f"{m.get('slices_trained', 0):.0f} slices retrained, {m.get('slices_reused', 0):.0f} "
             f"reused, {m.get('retrain_wall_seconds', 0):.0f} s of training"
             if m else "—"),
            _verified((complete or {}).get("meta", {}).get("verification", {}).get(rid)),
        ])  # fmt: skip
    return (
        '<h2 id="deletions">Deletion history</h2><p>From the hash-chained deletion ledger '
        "(its head is signed) and the signed receipts. Each honoured request retrained only the "
        "shards that held the records, from their last checkpoint that never saw them.</p>"
        + (
            _table(
                [
                    "request",
                    "received",
                    "scope",
                    "status history",
                    "receipt",
                    "retraining",
                    "verified (exante delete --verify)",
                ],
                rows,
            )
            if rows
            else "<p>No deletion requests so far.</p>"
        )
    )


def _verification(files, report) -> str:
    p = report["predicate"]
    results = _json(files, LAYOUT.name(LAYOUT.verification_files.results), {})
    verdicts = results.get("verdicts", [])
    attacks = list(dict.fromkeys(v["attack"] for v in verdicts))
    by: dict[tuple[str, str], list[dict]] = {}
    for v in verdicts:
        by.setdefault((v["subject"], v["attack"]), []).append(v)
    rows = []
    for s, summary in p["summary"].items():
        row = [f"<b>{escape(s)}</b>"]
        for a in attacks:
            mine = by.get((s, a), [])
            row.append(f"{_verdict(cell_outcome(mine))} <span class='muted'>({len(mine)} checks)"
                       "</span>" if mine else "—")  # fmt: skip
        row.append(_verdict(summary.get("verdict", "none")))
        rows.append(row)
    open_ = [[escape(v["subject"]), escape(v["attack"]), escape(v["check"]),
              _verdict(v["outcome"]), _num(v["value"]), _num(v["reference"]),
              escape(f"{v['rule']} {v['threshold']}"), _interval(v.get("interval")),
              escape(v.get("reason", ""))]
             for v in verdicts if v["outcome"] != "pass"]  # fmt: skip
    plots = "".join(
        f"<figure><img alt='{escape(n)}' src='data:image/png;base64,"
        f"{base64.b64encode(files[n]).decode()}'><figcaption>{escape(n)}</figcaption></figure>"
        for n in sorted(files)
        if n.startswith(LAYOUT.name(LAYOUT.verification_files.plots) + "/")
    )
    uplift = ", ".join(f"{escape(k)} {v:+.2f}" for k, v in p.get("incontext_uplift", {}).items()
                       if v is not None)  # fmt: skip
    return (
        '<h2 id="verification">Verification: recovery attacks against a retrain reference</h2>'
        f"<p>Reference: <b>{escape(p['reference'])}</b> (trained without the forget set; itself "
        "judged against people no model saw). "
        f"Thresholds were pre-registered in <code>{escape(p['policy']['path'])}</code> (sha256 "
        f"<code>{escape(p['policy']['sha256'])}</code>) before the run. <b>exact</b> is exante's "
        "deletion; <b>approx:*</b> are post-hoc unlearning methods, shown for contrast; "
        "<b>heldout</b> (a clean retrain, must pass) and <b>planted</b> (one forget record left "
        "in, must fail) are the run's power controls. A check that was not measured is "
        "<i>inconclusive</i>, never a pass.</p>"
        + _table(["subject", *map(escape, attacks), "verdict"], rows)
        + _basis(p)
        + _controls(p)
        + "<details><summary>Checks that did not pass, with statistic, reference, rule, "
        f"interval and reason ({len(open_)})</summary>"
        + _table(
            [
                "subject",
                "attack",
                "check",
                "outcome",
                "value",
                "reference",
                "rule",
                "interval",
                "reason",
            ],
            open_,
        )
        + "</details>"
        + f"<p>In-context uplift over the reference (a note, not a verdict): {uplift}. "
        f"{escape(p.get('incontext_note', ''))}.</p>" + plots
    )


def _num(x) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else "—"


def _interval(iv) -> str:
    return f"[{iv[0]:.3g}, {iv[1]:.3g}]" if iv else "—"


def _basis(p: dict) -> str:
    notes = [f"<li><b>{escape(n)}</b>: {escape(s['basis'])}</li>"
             for n, s in p["summary"].items() if s.get("basis")]  # fmt: skip
    notes += [f"<li><b>{escape(n)}</b>: {escape(s['reason'])}</li>"
              for n, s in p["summary"].items() if s.get("reason")]  # fmt: skip
    return f"<ul>{''.join(notes)}</ul>" if notes else ""


def _controls(p: dict) -> str:
    power = p.get("power", {})
    rows = [[escape(n), escape(str(c.get("must"))), _verdict(str(c.get("verdict"))),
             _verdict("pass" if c.get("ok") else "fail")]
            for n, c in power.items() if n in ("planted", "heldout")]  # fmt: skip
    attacks = [[escape(a), escape(c["control"]), escape(c["statistic"]), _num(c.get("value")),
                _verdict("pass" if c["fired"] else "ineffective")]
               for a, c in p.get("controls", {}).items()]  # fmt: skip
    md = power.get("min_detectable_leak")
    least = (f"<p>Minimum detectable leak: a rise of {md['logprob_rise']:.3g} nats in one forget "
             f"record's mean token log-prob (critical z {md['critical_z']:.2f}).</p>"
             if md else "")  # fmt: skip
    return (
        "<h3>Power controls</h3>"
        + _table(["control", "must be", "was", "holds"], rows)
        + least
        + "<h3>Attack positive controls</h3>"
        + _table(["attack", "control subject", "statistic", "value", "fired"], attacks)
    )


def _proven() -> str:
    return (
        '<h2 id="proven">What is and is not proven</h2>'
        "<h3>Proven by signatures and digests</h3><ul>"
        "<li>The model files were trained from the partition, gate decision and manifest named "
        "in the training attestation, and are the files the OpenSSF model signature covers.</li>"
        "<li>Every record that entered training was allowed by the policies whose digests the "
        "gate decision records; refused records and their reasons are listed.</li>"
        "<li>Each honoured deletion is in a hash-chained, signed ledger; every manifest version "
        "from the deletion on provably does not contain the deleted records (Merkle "
        "non-inclusion proofs).</li>"
        "<li>The verification report was made on the attested model, under thresholds fixed "
        "before the run.</li></ul><h3>Not proven by this bundle</h3><ul>"
        "<li>That the registry's statements about a source (license, consent, opt-out) are "
        "true: they are the operator's declarations, signed, not independently checked.</li>"
        "<li>That the model's weights were produced by the stated training run: the bundle "
        "carries digests, not weights, and exact retraining can be reproduced only with the "
        "data, which the bundle deliberately omits.</li>"
        "<li>That nothing can be recovered by attacks not run here. The verification tests "
        "named attacks on a named forget set, against a retrain reference.</li>"
        "<li>Anything about copies made outside exante (exports, other systems), and "
        "knowledge placed in a prompt at inference time: deletion from training does not "
        "control what a user types.</li></ul>"
    )


OBLIGATIONS = [
    ("GDPR Art. 17 (right to erasure)",
     "Deletion ledger with signed head; signed receipts with Merkle non-inclusion proofs; "
     "shard retraining from a clean checkpoint; verification against a retrain reference."),
    ("GDPR Art. 30 (records of processing)",
     "Source registry: purpose of the gate decision, legal basis (consent basis), categories "
     "(personal data flag), retention periods, jurisdictions."),
    ("GDPR Art. 5(1)(e) (storage limitation)",
     "Retention periods per source, evaluated by the gate as of the decision date."),
    ("EU AI Act Art. 53(1)(d) (summary of training content)",
     "Sources, licenses, record counts and refusals in the signed manifest and gate decision."),
    ("EU AI Act Art. 53(1)(c) (copyright policy)",
     "Policies in policies/ with their digests; per-source license and terms decisions."),
    ("DSM Directive Art. 4(3) (text-and-data-mining opt-out)",
     "Each source's TDM opt-out flag and evidence; sources that opted out are refused by the "
     "gate and listed with the reason."),
]  # fmt: skip


def _obligations() -> str:
    rows = [[escape(o), escape(e)] for o, e in OBLIGATIONS]
    return (
        '<h2 id="obligations">Evidence and the obligations it supports</h2><p>The evidence '
        "below supports these obligations; whether an obligation is met is a legal assessment "
        "this report does not make.</p>" + _table(["obligation", "evidence in this bundle"], rows)
    )


def _how_to_check(files) -> str:
    rows = [[f"<code>{escape(n)}</code>", str(len(d))] for n, d in sorted(files.items())
            if n != "report.html"]  # fmt: skip
    return (
        '<h2 id="check">How to check this bundle</h2><p>Offline, with the signer\'s public '
        "key obtained separately: <code>exante audit verify bundle.tar.gz --key signer.pub.pem"
        "</code>. It checks every signature, every file digest against the signed index, the "
        "ledger's hash chain, the manifest chain, the non-inclusion of every deleted record in "
        "every later manifest, the model signature against the training attestation, and that "
        "the verification report is about the attested model.</p>"
        "<details><summary>Files in the bundle</summary>"
        + _table(["file", "bytes"], rows)
        + "</details>"
    )
