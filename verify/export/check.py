"""The ``exante audit verify`` check of the compliance exports in a bundle.

For each format: its envelope is signed by a trusted key, its subjects are the
bundled files with their digests, it describes the bundled manifest, gate
decision, training attestation and verification report, and rendering the
facts computed again from those artifacts gives the same documents. So a
number edited in an export and re-signed fails here: records per source,
totals, refusals, roots, DP epsilons and model digests are all recomputed.

Byte sizes need record texts, which a bundle never holds: they are taken from
the signed EU summary, so the check shows that the three exports agree on
them, not that they match the records (``exante export`` measures them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lineage._canonical import sha256_hex
from lineage.signing import parse_statement, subjects_of, verify_envelope
from verify.export import _facts
from verify.export._build import DIR, FORMATS, PREDICATE_TYPE, SCHEMA_VERSION, envelope_name
from verify.export.eu_summary import JSON_NAME

MAX_DIFFS = 5


def check_exports(ctx, c) -> None:
    """``ctx.files`` (bundle members) and ``ctx.trusted``; problems and notes go on ``c``."""
    signed = {fmt: _signed(ctx.files, ctx.trusted, fmt, c) for fmt in FORMATS}
    facts = _facts.compute(ctx.files, ctx.trusted, sizes=_sizes(ctx.files, signed, c))
    for fmt, subjects in signed.items():
        if subjects is not None:
            _same_documents(ctx.files, fmt, subjects, facts, c)
    if all(s is not None for s in signed.values()):
        c.notes.append(
            f"{len(FORMATS)} signed exports; records, refusals, roots, DP and model digests "
            "recomputed from the manifest, gate and attestation; bytes as the EU summary signed"
        )


def _signed(files: Mapping[str, bytes], trusted, fmt: str, c) -> dict | None:
    """The export's subjects, if its envelope verifies and describes this format."""
    name = f"{DIR}/{envelope_name(fmt)}"
    if name not in files:
        c.problems.append(f"{name}: missing; the bundle carries no {fmt} export")
        return None
    try:
        envelope = json.loads(files[name])
    except (ValueError, RecursionError):
        c.problems.append(f"{name}: not JSON")
        return None
    statement = parse_statement(verify_envelope(envelope, trusted, what=name), PREDICATE_TYPE,
                                what=name)  # fmt: skip
    if statement["predicate"].get("format") != fmt:
        c.problems.append(f"{name}: signed as {statement['predicate'].get('format')!r}")
        return None
    version = statement["predicate"].get("schema_version")
    if version != SCHEMA_VERSION:
        c.problems.append(
            f"{name}: export schema {version}, and this exante recomputes schema "
            f"{SCHEMA_VERSION} (held-out records counted apart from trained ones); check "
            "the bundle with the exante that wrote it, or rebuild its exports from the "
            "same signed inputs with `exante audit bundle`"
        )
        return None
    statement_describes = statement["predicate"].get("describes")
    subjects = subjects_of(statement)
    for file, digest in sorted(subjects.items()):
        if sha256_hex(files.get(f"{DIR}/{file}", b"")) != digest or f"{DIR}/{file}" not in files:
            c.problems.append(f"{DIR}/{file}: missing or not the file {name} signed")
            return None
    return {"subjects": subjects, "describes": statement_describes}


def _sizes(files: Mapping[str, bytes], signed: dict, c) -> dict:
    """Per-source byte sizes as the signed EU summary states them ({} if it cannot say)."""
    eu = signed.get("eu-summary")
    if eu is None or JSON_NAME not in eu["subjects"]:
        return {}
    try:
        sizes = json.loads(files[f"{DIR}/{JSON_NAME}"]).get("record_sizes")
    except (ValueError, RecursionError, AttributeError):
        sizes = None
    ok = isinstance(sizes, dict) and all(
        isinstance(v, dict) and all(type(v.get(k)) is int for k in ("bytes", "bytes_allowed"))
        for v in sizes.values()
    )
    if not ok:
        c.problems.append(f"{DIR}/{JSON_NAME}: record_sizes is missing or malformed")
        return {}
    return sizes


def _same_documents(files: Mapping[str, bytes], fmt: str, signed: dict, facts: dict, c) -> None:
    if signed["describes"] != facts["describes"]:
        differ = _diff(signed["describes"], facts["describes"])
        c.problems.append(f"{fmt}: describes other artifacts than the bundled ones: {differ}")
    expected = FORMATS[fmt](facts)
    if set(expected) != set(signed["subjects"]):
        c.problems.append(f"{fmt}: signed files {sorted(signed['subjects'])}, "
                          f"expected {sorted(expected)}")  # fmt: skip
    for name, data in sorted(expected.items()):
        bundled = files.get(f"{DIR}/{name}")
        if bundled is not None and bundled != data:
            c.problems.append(f"{DIR}/{name}: differs from the facts: {_diff_bytes(bundled, data)}")


def _diff_bytes(bundled: bytes, expected: bytes) -> str:
    try:
        return _diff(json.loads(bundled), json.loads(expected))
    except (ValueError, RecursionError):
        pairs = zip(bundled.splitlines(), expected.splitlines(), strict=False)
        lines = [n for n, (a, b) in enumerate(pairs, 1) if a != b]
        return f"lines {lines[:MAX_DIFFS]}" if lines else "length differs"


def _diff(a, b, path: str = "") -> str:
    found: list[str] = []
    _walk(a, b, path, found)
    more = f" (+{len(found) - MAX_DIFFS} more)" if len(found) > MAX_DIFFS else ""
    return ", ".join(found[:MAX_DIFFS]) + more if found else "formatting only"


def _walk(a, b, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _walk(a.get(k), b.get(k), f"{path}.{k}", found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{n}]", found)
    elif a != b:
        found.append(f"{path or '.'}: {_short(a)} ≠ {_short(b)} (recomputed)")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True)
    return text if len(text) <= 100 else text[:97] + "..."
