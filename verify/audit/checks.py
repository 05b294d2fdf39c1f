"""``exante audit verify``: check a bundle offline, with the bundle and trusted keys alone.

Each check is independent and reports every problem it finds; the bundle
passes only if all of them pass. Nothing here reads the project or the
network: ledger and receipt checks run on a private extraction of the bundle.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lineage._canonical import sha256_hex
from lineage.errors import LineageError
from lineage.manifest import merkle_root, parse_leaves
from lineage.merkle import LeafIndex
from lineage.signing import (
    _verifies,
    load_trusted_keys,
    pae,
    parse_statement,
    subjects_of,
    verify_envelope,
)
from verify.audit._files import INDEX, BundleInputError, read_tar_gz
from verify.audit.bundle import PREDICATE_TYPE
from verify.export import check_exports

MANIFEST = "data/manifest.dsse.json"
ATTESTATION = "models/attestation.dsse.json"
MODEL_SIG = "models/ensemble.sig"
REPORT = "data/verification/report.dsse.json"
ENSEMBLE = "models/ensemble/"


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Result:
    checks: list[Check]
    trusted: str  # where the trusted keys came from

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def verify_bundle(path: Path, *, keys: list[Path] | None = None) -> Result:
    """Run every check on the bundle at ``path``; trust ``keys`` or else the bundle's own."""
    files = read_tar_gz(path)
    trusted, origin = _trusted(files, keys)
    with tempfile.TemporaryDirectory(prefix="exante-audit-") as tmp:
        root = Path(tmp)
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        ctx = _Context(files, trusted, root)
        checks = [_run(name, fn, ctx) for name, fn in CHECKS]
    return Result(checks, origin)


def _trusted(files: Mapping[str, bytes], keys: list[Path] | None) -> tuple[dict, str]:
    if keys:
        with tempfile.TemporaryDirectory() as tmp:
            for n, k in enumerate(keys):
                try:
                    (Path(tmp) / f"k{n}.pub.pem").write_bytes(Path(k).read_bytes())
                except OSError as exc:
                    raise BundleInputError(f"cannot read the public key {k}: {exc}") from None
            return load_trusted_keys(Path(tmp)), "the key(s) given with --key"
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if name.startswith("policies/trusted_keys/") and name.endswith(".pub.pem"):
                (Path(tmp) / Path(name).name).write_bytes(data)
        origin = (
            "the keys inside the bundle (policies/trusted_keys/): pass --key with the "
            "signer's public key, obtained separately, to rule out a re-signed bundle"
        )
        return load_trusted_keys(Path(tmp)), origin


@dataclass
class _Context:
    files: Mapping[str, bytes]
    trusted: dict
    root: Path

    def statement(self, name: str) -> dict:
        payload = verify_envelope(json.loads(self.files[name]), self.trusted, what=name)
        return json.loads(payload)

    def payload_sha256(self, name: str) -> str:
        return sha256_hex(base64.b64decode(json.loads(self.files[name])["payload"]))

    def manifests(self) -> dict[int, str]:
        out = {}
        for name in self.files:
            if name.startswith("data/manifests/v") and name.endswith(".dsse.json"):
                out[int(name[len("data/manifests/v") : -len(".dsse.json")])] = name
        return dict(sorted(out.items()))


def _run(name: str, fn: Callable[[_Context, Check], None], ctx: _Context) -> Check:
    check = Check(name)
    try:
        fn(ctx, check)
    except (LineageError, KeyError, ValueError, TypeError) as exc:
        check.problems.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    return check


# -- the checks -----------------------------------------------------------------------


def check_index(ctx: _Context, c: Check) -> None:
    statement = parse_statement(
        verify_envelope(json.loads(ctx.files[INDEX]), ctx.trusted, what="bundle index"),
        PREDICATE_TYPE,
        what="bundle index",
    )
    listed = subjects_of(statement)
    for name, digest in sorted(listed.items()):
        if name not in ctx.files:
            c.problems.append(f"{name}: listed in the index, missing from the bundle")
        elif sha256_hex(ctx.files[name]) != digest:
            c.problems.append(f"{name}: modified (sha256 differs from the signed index)")
    extra = sorted(set(ctx.files) - set(listed) - {INDEX})
    c.problems += [f"{name}: in the bundle but not in the signed index" for name in extra]
    c.notes.append(f"{len(listed)} files, each sha256 matched against the signed index")


def check_signatures(ctx: _Context, c: Check) -> None:
    envelopes = [n for n in ctx.files if n.endswith(".dsse.json") and n != INDEX]
    for name in envelopes:
        try:
            ctx.statement(name)
        except LineageError as exc:
            c.problems.append(str(exc).splitlines()[0])
    sig = json.loads(ctx.files[MODEL_SIG])["dsseEnvelope"]
    payload = base64.b64decode(sig["payload"])
    signed = pae(sig["payloadType"], payload)
    ok = any(
        _verifies(key, base64.b64decode(s["sig"]), signed)
        for s in sig["signatures"]
        for key in ctx.trusted.values()
    )
    if not ok:
        c.problems.append(f"{MODEL_SIG}: the model signature is not by a trusted key")
    c.notes.append(f"{len(envelopes)} DSSE envelopes and the OpenSSF model signature")


def check_manifest_chain(ctx: _Context, c: Check) -> None:
    versions = ctx.manifests()
    if list(versions) != list(range(1, len(versions) + 1)):
        c.problems.append(f"manifest versions are not 1..N without gaps: {list(versions)}")
    previous = None
    for v, name in versions.items():
        pred = ctx.statement(name)["predicate"]
        if pred.get("version") != v:
            c.problems.append(f"{name}: says version {pred.get('version')}, not {v}")
        if pred.get("previous_manifest_sha256") != previous:
            c.problems.append(f"{name}: does not link its predecessor's payload digest")
        previous = ctx.payload_sha256(name)
        leaves = ctx.files.get(name.replace(".dsse.json", ".leaves"))
        if (
            leaves is not None
            and merkle_root(parse_leaves(leaves, what=name))[0] != (pred["merkle"]["root"])
        ):
            c.problems.append(f"{name}: its kept leaves do not hash to its signed Merkle root")
    if versions and ctx.files[MANIFEST] != ctx.files[versions[max(versions)]]:
        c.problems.append(f"{MANIFEST} is not the latest version in data/manifests/")
    c.notes.append(f"versions 1..{len(versions)}, each linked to its predecessor")


def check_ledger(ctx: _Context, c: Check) -> None:
    from lineage.ledger import verify_ledger

    ledger = verify_ledger(ctx.root, ctx.trusted)
    c.notes.append(f"{len(ledger.entries)} entries, hash-chained, signed head")


def check_deletions(ctx: _Context, c: Check) -> None:
    from lineage.ledger import verify_ledger
    from lineage.receipt import verify_receipt

    ledger = verify_ledger(ctx.root, ctx.trusted)
    receipts = {}
    for name in (n for n in ctx.files if re.fullmatch(r"data/receipts/[^/]+\.dsse\.json", n)):
        r = verify_receipt(ctx.root / name, ctx.trusted)
        receipts[r.request_id] = r
    versions, proven = ctx.manifests(), 0
    for request in ledger.requests():
        rid = request.request_id
        if ledger.status_of(rid) != "complete":
            c.notes.append(f"{rid}: {ledger.status_of(rid)}, not complete (no claim made)")
            continue
        receipt = receipts.get(rid)
        if receipt is None:
            c.problems.append(f"{rid}: complete in the ledger, but its receipt is missing")
            continue
        if receipt.ledger_entry_sha256 not in {e.sha256 for e in ledger.entries}:
            c.problems.append(f"{rid}: the receipt names a ledger entry that is not in the ledger")
        for v in (v for v in versions if v >= receipt.manifest_version):
            proven += _absent_from(ctx, versions[v], request.record_ids, c)
    c.notes.append(f"{proven} record × manifest-version non-inclusion proofs verified")
    verified = _request_reports(ctx, ledger, c)
    if verified:
        c.notes.append(f"{verified} deletion(s) verified against a retrain reference (signed)")


def _request_reports(ctx: _Context, ledger, c: Check) -> int:
    """``exante delete --verify``: each report the ledger names is here, signed, unchanged."""
    n = 0
    for entry in ledger.entries:
        for rid, info in (getattr(entry, "meta", None) or {}).get("verification", {}).items():
            name = info.get("report", "")
            if name not in ctx.files:
                c.problems.append(f"{rid}: its verification report {name} is not in the bundle")
                continue
            statement = ctx.statement(name)
            pred = statement["predicate"]
            if pred.get("request_id") != rid:
                c.problems.append(f"{name}: a report for {pred.get('request_id')!r}, not {rid}")
            for file, digest in subjects_of(statement).items():
                if sha256_hex(ctx.files.get(file, b"")) != digest:
                    c.problems.append(f"{file}: not the file {rid}'s verification report signed")
            exact = pred.get("subjects", {}).get("exact", {}).get("forget_shard_sha256")
            if exact != info.get("exact_forget_shard_sha256"):
                c.problems.append(f"{rid}: the ledger and the report name different exact models")
            n += 1
    return n


def _absent_from(ctx: _Context, name: str, record_ids, c: Check) -> int:
    leaves_bytes = ctx.files.get(name.replace(".dsse.json", ".leaves"))
    if leaves_bytes is None:
        c.problems.append(f"{name}: its leaves are not in the bundle; absence cannot be proven")
        return 0
    index = LeafIndex(parse_leaves(leaves_bytes, what=name))
    root = ctx.statement(name)["predicate"]["merkle"]["root"]
    if index.root.hex() != root:
        c.problems.append(f"{name}: its leaves do not hash to its signed Merkle root")
        return 0
    n = 0
    for record_id in record_ids:
        try:
            index.non_inclusion(record_id).verify(bytes.fromhex(root))
            n += 1
        except KeyError:
            c.problems.append(f"{record_id}: deleted, but still a leaf of {name}")
    return n


def check_model(ctx: _Context, c: Check) -> None:
    attested = subjects_of(ctx.statement(ATTESTATION))
    resources = json.loads(
        base64.b64decode(json.loads(ctx.files[MODEL_SIG])["dsseEnvelope"]["payload"])
    )["predicate"]["resources"]
    signed = {ENSEMBLE + r["name"]: r["digest"] for r in resources}
    in_attestation = {n: d for n, d in attested.items() if n.startswith(ENSEMBLE)}
    if signed != in_attestation:
        differ = sorted(set(signed.items()) ^ set(in_attestation.items()))
        c.problems.append(
            "the model signature and the training attestation name different model files: "
            + ", ".join(sorted({n for n, _ in differ}))[:300]
        )
    if attested.get(MODEL_SIG) != sha256_hex(ctx.files[MODEL_SIG]):
        c.problems.append(f"{MODEL_SIG} is not the signature the training attestation names")
    c.notes.append(f"{len(signed)} model files: model signature = training attestation")


def check_lineage(ctx: _Context, c: Check) -> None:
    pred = ctx.statement(ATTESTATION)["predicate"]
    expect = {
        "manifest_payload_sha256": ctx.payload_sha256(MANIFEST),
        "decision_payload_sha256": ctx.payload_sha256("data/gate/decision.dsse.json"),
        "partition_payload_sha256": ctx.payload_sha256("data/shards/partition.dsse.json"),
    }
    for key, digest in expect.items():
        if pred.get(key) != digest:
            c.problems.append(f"the training attestation's {key} is not the bundled one's")
    partition = ctx.statement("data/shards/partition.dsse.json")["predicate"]
    for key in ("manifest_payload_sha256", "decision_payload_sha256"):
        if partition.get(key) != expect[key]:
            c.problems.append(f"the partition's {key} is not the bundled one's")
    decision = ctx.statement("data/gate/decision.dsse.json")["predicate"]
    version = ctx.statement(MANIFEST)["predicate"]["version"]
    if decision.get("manifest_version") != version:
        c.problems.append(f"the gate decision is for manifest v{decision.get('manifest_version')}")
    c.notes.append(f"manifest v{version} → gate decision → partition → training attestation")


def check_verification(ctx: _Context, c: Check) -> None:
    statement = ctx.statement(REPORT)
    pred, subjects = statement["predicate"], subjects_of(statement)
    attested = subjects_of(ctx.statement(ATTESTATION))
    tested = {n: d for n, d in subjects.items() if n.startswith(ENSEMBLE)}
    if not tested or any(attested.get(n) != d for n, d in tested.items()):
        c.problems.append(
            "the verification report tested model files the attestation does not name"
        )
    if pred["lineage"].get("attestation_sha256") != sha256_hex(ctx.files[ATTESTATION]):
        c.problems.append("the verification report names a different training attestation")
    policy = pred.get("policy", {})
    if sha256_hex(ctx.files.get(policy.get("path", ""), b"")) != policy.get("sha256"):
        c.problems.append("the pre-registered policy differs from the one the report names")
    for name, digest in subjects.items():
        if not name.startswith(ENSEMBLE) and sha256_hex(ctx.files.get(name, b"")) != digest:
            c.problems.append(f"{name}: not the file the verification report signed")
    c.notes.append(f"report on the attested model ({len(tested)} files); policy digest matches")


CHECKS: list[tuple[str, Callable[[_Context, Check], None]]] = [
    ("index: signed, every file's sha256", check_index),
    ("signatures: every envelope, model signature", check_signatures),
    ("manifest chain: versions, links, roots", check_manifest_chain),
    ("deletion ledger: hash chain, signed head", check_ledger),
    ("deletions: receipts, non-inclusion in every later manifest", check_deletions),
    ("model: attested checkpoints = model signature", check_model),
    ("lineage: manifest → gate → partition → training", check_lineage),
    ("verification report: refers to the attested model", check_verification),
    ("exports: numbers and digests agree with the manifest and attestation", check_exports),
]
