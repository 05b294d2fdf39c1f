"""``exante audit bundle``: the project's evidence in one signed, deterministic ``.tar.gz``.

The bundle carries the signed artifacts as the pipeline wrote them (under their
project paths), the environment, the MLflow runs those artifacts name, a
self-contained HTML report, and a signed index: an in-toto Statement whose
subjects are every other file and its sha256. Nothing in it is record
content: before anything is written, every file is searched for the text of
every record and every planted secret, and a hit refuses the bundle.

Same inputs, same bytes: members are sorted, mtimes and owners fixed, gzip
carries no timestamp, and signatures use RFC 6979 nonces.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json, sha256_hex
from lineage._keymeta import parse_utc, utc_text
from lineage.layout import LAYOUT
from lineage.signing import (
    TRUSTED_KEYS_DIR,
    Signer,
    load_trusted_keys,
    make_statement,
    sign_envelope,
    signing_time,
)
from verify.audit._files import (
    INDEX,
    REPORT,
    AuditError,
    BundleInputError,
    project_files,
    write_tar_gz,
)

PREDICATE_TYPE = "https://exante.dev/attestations/audit-bundle/v1"
SCHEMA_VERSION = 1
DEFAULT_OUT = LAYOUT.audit_bundle
DEFAULT_HTML = LAYOUT.audit_html

__all__ = ["AuditError", "BundleInputError", "BundleLeakError", "build_bundle"]


class BundleLeakError(AuditError):
    """A file meant for the bundle holds record content; nothing was written."""


def build_bundle(root: Path, *, signer: Signer, out: Path, html_out: Path | None) -> dict:
    """Collect, check for content, render, index, sign and write; return the index predicate."""
    from verify.audit.html import render
    from verify.export import build_exports, write_exports

    root = Path(root)
    files = project_files(root)
    at = bundle_signed_at(root, files, signer)  # the exports' and the index's signing time
    exports = build_exports(root, signer=signer, signed_at=at)  # also written beside the bundle
    files.update({f"exports/{name}": data for name, data in exports.items()})
    files[LAYOUT.name(LAYOUT.knowledge)] = knowledge_summary(root)
    files.update(environment())
    files["mlflow/runs.json"] = canonical_json(mlflow_runs(root, files)) + b"\n"
    files[REPORT] = render(files).encode("utf-8")
    leaks = content_leaks(files, record_needles(root))
    if leaks:
        raise BundleLeakError(
            "refusing to write the audit bundle: these files hold record content "
            "(a bundle carries digests, counts and metadata only):",
            problems=leaks,
        )
    predicate = index_predicate(files)
    subjects = {name: sha256_hex(data) for name, data in files.items()}
    envelope = sign_envelope(
        make_statement(subjects, PREDICATE_TYPE, predicate, signed_at=at), signer
    )
    files[INDEX] = json.dumps(envelope, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(Path(out), write_tar_gz(Path(out), files))
    write_exports(Path(out).parent / "exports", exports)
    if html_out is not None:
        atomic_write(Path(html_out), files[REPORT])
    return predicate


def bundle_signed_at(root: Path, files: dict[str, bytes], signer) -> str:
    """The index's signing time, derived from its inputs so a rebuild gives the same bytes.

    ``$SOURCE_DATE_EPOCH`` if set; else the latest time any signed file in the
    bundle claims, but not before the signer's key became valid (a bundle of
    old evidence re-signed with a rotated-in key).
    """
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return signing_time()
    times = [t for name, data in files.items() if name.endswith(".dsse.json")
             for t in [_claimed_time(data)] if t is not None]  # fmt: skip
    validity = load_trusted_keys(Path(root) / TRUSTED_KEYS_DIR).validity.get(signer.keyid)
    if validity is not None and validity.not_before is not None:
        times.append(validity.not_before)
    if not times:
        raise BundleInputError("no signed file in the project claims a time; run the pipeline")
    return utc_text(max(times))


def _claimed_time(envelope_bytes: bytes):
    try:
        predicate = _payload(envelope_bytes).get("predicate")
    except (ValueError, RecursionError, AttributeError, KeyError, TypeError):
        return None
    if not isinstance(predicate, dict):
        return None
    claimed = [parse_utc(predicate.get(k)) for k in ("signed_at", "created_at", "issued_at")]
    return max((t for t in claimed if t is not None), default=None)


def index_predicate(files: dict[str, bytes]) -> dict:
    manifest = _payload(files[LAYOUT.name(LAYOUT.manifest)])["predicate"]
    return {
        "schema_version": SCHEMA_VERSION,
        "content": "digests, counts and metadata only: no record text, no model weights",
        "manifest": {"version": manifest["version"], "merkle_root": manifest["merkle"]["root"]},
        "policies": {
            n: sha256_hex(d)
            for n, d in files.items()
            if n.startswith(LAYOUT.name(LAYOUT.policies) + "/")
        },
        "files": len(files),
    }


def _payload(envelope_bytes: bytes) -> dict:
    import base64

    return json.loads(base64.b64decode(json.loads(envelope_bytes)["payload"]))


def knowledge_summary(root: Path) -> bytes:
    """``models/report.json`` without its samples: they quote people's facts."""
    path = Path(root) / LAYOUT.report
    if not path.is_file():
        raise BundleInputError(f"{path} is missing; run `dvc repro` (or `make run`) first")
    report = json.loads(path.read_text())
    report.pop("samples", None)
    return canonical_json(report) + b"\n"


# -- environment and MLflow -----------------------------------------------------------


def environment() -> dict[str, bytes]:
    """What ran the pipeline: installed packages (``pip freeze``) and the platform."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    info = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "pip_freeze_exit_code": freeze.returncode,
    }
    return {
        "environment/pip-freeze.txt": freeze.stdout.encode(),
        "environment/platform.json": canonical_json(info) + b"\n",
    }


def mlflow_runs(root: Path, files: dict[str, bytes]) -> dict:
    """The MLflow runs the bundled evidence names (training, verification, deletions), exported."""
    from verify.evidence import client, runs_of

    parents = {
        "training": json.loads(files[LAYOUT.name(LAYOUT.evidence)])["parent_run_id"],
        "verification": json.loads(files[LAYOUT.name(LAYOUT.verification_files.evidence)])[
            "parent_run_id"
        ],
    }
    deletions = _deletion_runs(files.get(LAYOUT.name(LAYOUT.ledger), b""))
    c, out = client(root), {"parents": parents, "deletions": deletions, "runs": {}}
    for run_id in [*parents.values(), *deletions.values()]:
        out["runs"][run_id] = _export(c.get_run(run_id))
    for run_id in parents.values():
        for child in runs_of(root, run_id):
            out["runs"][child.info.run_id] = _export(child)
    return out


def _deletion_runs(ledger: bytes) -> dict[str, str]:
    runs = {}
    for line in ledger.splitlines():
        entry = json.loads(line)
        if entry.get("status") == "complete" and entry.get("meta", {}).get("mlflow_run_id"):
            runs[entry["request_id"]] = entry["meta"]["mlflow_run_id"]
    return runs


def _export(run) -> dict:
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("exante.")}
    return {
        "name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
        "metrics": dict(sorted(run.data.metrics.items())),
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(tags.items())),
    }


# -- no record content ----------------------------------------------------------------


def record_needles(root: Path) -> list[bytes]:
    """What must never be in a bundle: every record's text, the people's facts and secrets.

    Texts come from the ingested records (refused and held-out ones too) and the
    raw files; facts are any raw row's ``value`` or probe ``answer`` (probes' prompts
    are texts too). A short number alone (a birth year) is not a needle: it would
    match counts and sizes; a planted secret is.
    """
    needles: set[str] = set()
    for path in [
        *(Path(root) / LAYOUT.records).glob("*.jsonl"),
        *(Path(root) / LAYOUT.raw).glob("*.jsonl"),
    ]:
        for line in path.read_bytes().splitlines():
            row = json.loads(line)
            needles.update(str(row.get(k) or "") for k in ("text", "prompt"))
            for key in ("value", "answer"):
                value = row.get(key)
                if isinstance(value, str) and _distinctive(value, row.get("fact")):
                    needles.add(value)
    return sorted(n.encode("utf-8") for n in needles if n.strip())


def _distinctive(value: str, fact: str | None) -> bool:
    return fact == "canary" or (len(value) >= 6 and not value.isdigit())


def content_leaks(files: dict[str, bytes], needles: list[bytes]) -> list[str]:
    """``name: needle`` for each file that holds a needle (a digit secret must stand alone)."""
    leaks = []
    for name, data in files.items():
        for needle in needles:
            if _contains(data, needle):
                leaks.append(f"{name}: {needle[:40]!r}")
    return leaks


def _contains(data: bytes, needle: bytes) -> bool:
    if needle.isdigit():  # a secret of digits: a token of its own, not part of a digest
        return re.search(rb"(?<![0-9A-Za-z])" + needle + rb"(?![0-9A-Za-z])", data) is not None
    return needle in data
