"""``exante audit verify``: check a bundle offline, with the bundle and trusted keys alone.

Each check is independent and reports every problem it finds; the bundle
passes only if all of them pass. Nothing here reads the project or the
network: ledger and receipt checks run on a private extraction of the bundle.
"""

from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from lineage._canonical import sha256_hex
from lineage._shape import named, shown
from lineage.errors import EnvelopeFormatError, KeyFileError, LineageError
from lineage.layout import LAYOUT
from lineage.manifest import merkle_root, parse_leaves
from lineage.merkle import LeafIndex
from lineage.signing import (
    _verifies,
    load_trusted_keys,
    pae,
    parse_json,
    parse_statement,
    subjects_of,
    verify_envelope,
)
from verify.audit._files import INDEX, RECEIPT, BundleInputError, read_tar_gz
from verify.audit.bundle import PREDICATE_TYPE
from verify.export import check_exports
from verify.export._facts import (
    ATTESTATION,
    DECISION,
    LEAVES,
    MANIFEST,
    PARTITION,
    RELEASED_DIR,
    REPORT,
)

MODEL_SIG = LAYOUT.name(LAYOUT.signature)
ENSEMBLE = RELEASED_DIR
_TRUSTED = LAYOUT.name(LAYOUT.trusted) + "/"
_HISTORY = LAYOUT.name(LAYOUT.manifest_history) + "/v"


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
    signed_by: tuple[str, ...] = ()  # ids (SHA-256 of the DER public key) that signed the index
    pinned: bool = False  # the trusted keys came from --key, not from the bundle itself

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def verify_bundle(path: Path, *, keys: list[Path] | None = None) -> Result:
    """Run every check on the bundle at ``path``; trust ``keys`` or else the bundle's own."""
    files = read_tar_gz(path)
    if INDEX not in files:
        raise BundleInputError(
            f"{path}: no {INDEX} in the bundle; not an exante audit bundle "
            "(build one with `exante audit bundle`)"
        )
    trusted, origin = _trusted(files, keys)
    with tempfile.TemporaryDirectory(prefix="exante-audit-") as tmp:
        root = Path(tmp)
        for name, data in files.items():  # names were checked by read_tar_gz: none clash
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        ctx = _Context(files, trusted, root)
        checks = [_run(name, fn, ctx) for name, fn in CHECKS]
    return Result(checks, origin, _signers(files[INDEX], trusted), pinned=bool(keys))


def _signers(index: bytes, trusted: Mapping) -> tuple[str, ...]:
    """The trusted keys whose signature on the index verifies (none if it does not parse)."""
    try:
        envelope = parse_json(index, what=INDEX)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signed = pae(envelope["payloadType"], payload)
        return tuple(
            s["keyid"]
            for s in envelope["signatures"]
            if s.get("keyid") in trusted
            and _verifies(trusted[s["keyid"]], base64.b64decode(s["sig"], validate=True), signed)
        )
    except (LineageError, KeyError, TypeError, ValueError, AttributeError):
        return ()


def _trusted(files: Mapping[str, bytes], keys: list[Path] | None) -> tuple[dict, str]:
    if keys:
        with tempfile.TemporaryDirectory() as tmp:
            for n, k in enumerate(keys):
                try:
                    (Path(tmp) / f"k{n}.pub.pem").write_bytes(Path(k).read_bytes())
                except OSError as exc:
                    raise BundleInputError(f"cannot read the public key {k}: {exc}") from None
                meta = Path(k).with_name(Path(k).name.removesuffix(".pub.pem") + ".meta.yaml")
                if meta.is_file():  # its validity period, kept beside it (exante keys rotate)
                    (Path(tmp) / f"k{n}.meta.yaml").write_bytes(meta.read_bytes())
            given = ", ".join(str(k) for k in keys)
            return _load_keys(Path(tmp), f"the key(s) given with --key ({given})"), (
                "the key(s) given with --key"
            )
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if name.startswith(_TRUSTED) and name.endswith((".pub.pem", ".meta.yaml")):
                (Path(tmp) / Path(name).name).write_bytes(data)
        origin = (
            "the keys inside the bundle (policies/trusted_keys/): pass --key with the "
            "signer's public key, obtained separately, to rule out a re-signed bundle"
        )
        return _load_keys(Path(tmp), "the bundle's policies/trusted_keys/"), origin


def _load_keys(directory: Path, where: str) -> dict:
    """The trusted keys, or bad input naming where they came from (not the private copy)."""
    try:
        return load_trusted_keys(directory)
    except (KeyFileError, UnsupportedAlgorithm) as exc:
        why = "none is there" if "no trusted keys" in str(exc) else "one is not an ECDSA P-256 key"
        raise BundleInputError(
            f"{where}: no usable public keys ({why}); pass the signer's PEM public key with --key"
        ) from None


@dataclass
class _Context:
    files: Mapping[str, bytes]
    trusted: dict
    root: Path

    def file(self, name: str) -> bytes:
        if name not in self.files:
            raise EnvelopeFormatError(f"{name}: missing from the bundle")
        return self.files[name]

    def statement(self, name: str) -> dict:
        """A trusted, well-formed in-toto Statement (of whatever predicate type it names)."""
        payload = verify_envelope(self.envelope(name), self.trusted, what=name)
        peek = parse_json(payload, what=f"{name}: payload")
        kind = peek.get("predicateType") if isinstance(peek, dict) else None
        return parse_statement(payload, kind if isinstance(kind, str) else "", what=name)

    def envelope(self, name: str) -> dict:
        envelope = parse_json(self.file(name), what=name)
        if not isinstance(envelope, dict):
            raise EnvelopeFormatError(f"{name}: not a DSSE envelope (a JSON object)")
        return envelope

    def payload_sha256(self, name: str) -> str:
        return sha256_hex(self.payload_bytes(self.envelope(name), name))

    @staticmethod
    def payload_bytes(envelope: dict, name: str) -> bytes:
        """The envelope's payload, decoded but not verified (digests and the model signature)."""
        payload = envelope.get("payload")
        try:
            return base64.b64decode(payload if isinstance(payload, str) else "", validate=True)
        except ValueError:
            raise EnvelopeFormatError(f"{name}: its payload is not base64") from None

    def manifests(self) -> dict[int, str]:
        out = {}
        for name in self.files:
            if name.startswith(_HISTORY) and name.endswith(".dsse.json"):
                out[int(name[len(_HISTORY) : -len(".dsse.json")])] = name
        return dict(sorted(out.items()))


def _run(name: str, fn: Callable[[_Context, Check], None], ctx: _Context) -> Check:
    """Run one check; an error fails it (never passes it), naming the error, not the input."""
    check = Check(name)
    try:
        fn(ctx, check)
    except LineageError as exc:  # paths inside the private extraction, named as in the bundle
        first = str(exc).splitlines()[0].replace(f"{ctx.root}/", "")
        more = "; ".join(p.replace(f"{ctx.root}/", "") for p in exc.problems[:5])
        check.problems.append(f"{type(exc).__name__}: {first} {more}".strip()[:300])
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        check.problems.append(
            f"a signed file has an unexpected shape ({type(exc).__name__}); the check stopped"
        )
    return check


def _dig(value, *keys: str):
    """``value[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _at(value, *keys: str, kind: type = dict, what: str):
    """``value[k1][k2]...``, which must be a ``kind``; else the error naming the field."""
    value = _dig(value, *keys)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        field = ".".join(keys) or "the document"
        raise EnvelopeFormatError(f"{what}: {field} is missing or not a {kind.__name__}")
    return value


# -- the checks -----------------------------------------------------------------------


def check_index(ctx: _Context, c: Check) -> None:
    statement = parse_statement(
        verify_envelope(ctx.envelope(INDEX), ctx.trusted, what="bundle index"),
        PREDICATE_TYPE,
        what="bundle index",
    )
    listed = subjects_of(statement)
    for name, digest in sorted(listed.items()):
        if name not in ctx.files:
            c.problems.append(f"{named(name)}: listed in the index, missing from the bundle")
        elif sha256_hex(ctx.files[name]) != digest:
            c.problems.append(f"{named(name)}: modified (sha256 differs from the signed index)")
    extra = sorted(set(ctx.files) - set(listed) - {INDEX})
    c.problems += [f"{named(name)}: in the bundle but not in the signed index" for name in extra]
    c.notes.append(f"{len(listed)} files, each sha256 matched against the signed index")


def check_signatures(ctx: _Context, c: Check) -> None:
    envelopes = [n for n in ctx.files if n.endswith(".dsse.json") and n != INDEX]
    for name in envelopes:
        try:
            ctx.statement(name)
        except LineageError as exc:
            c.problems.append(str(exc).splitlines()[0][:300])
    sig = _at(ctx.envelope(MODEL_SIG), "dsseEnvelope", what=MODEL_SIG)
    payload = base64.b64decode(_at(sig, "payload", kind=str, what=MODEL_SIG), validate=True)
    signed = pae(_at(sig, "payloadType", kind=str, what=MODEL_SIG), payload)
    ok = any(
        _verifies(key, base64.b64decode(_at(s, "sig", kind=str, what=MODEL_SIG)), signed)
        for s in _at(sig, "signatures", kind=list, what=MODEL_SIG)
        for key in ctx.trusted.values()
    )
    if not ok:
        c.problems.append(f"{MODEL_SIG}: the model signature is not by a trusted key")
    c.notes.append(f"{len(envelopes)} DSSE envelopes and the OpenSSF model signature")


def check_manifest_chain(ctx: _Context, c: Check) -> None:
    versions = ctx.manifests()
    if not versions:
        c.problems.append("no manifest versions in data/manifests/: the history is missing")
    elif list(versions) != list(range(1, len(versions) + 1)):
        c.problems.append(f"manifest versions are not 1..N without gaps: {list(versions)[:20]}")
    previous = None
    for v, name in versions.items():
        pred = ctx.statement(name)["predicate"]
        if pred.get("version") != v:
            c.problems.append(f"{name}: says version {shown(pred.get('version'))}, not {v}")
        if pred.get("previous_manifest_sha256") != previous:
            c.problems.append(f"{name}: does not link its predecessor's payload digest")
        previous = ctx.payload_sha256(name)
        leaves = name.replace(".dsse.json", ".leaves")
        _leaves_match(ctx, leaves, _at(pred, "merkle", "root", kind=str, what=name), c)
    if versions and ctx.file(MANIFEST) != ctx.files[versions[max(versions)]]:
        c.problems.append(f"{MANIFEST} is not the latest version in {_HISTORY[:-1]}")
    current = ctx.statement(MANIFEST)
    if subjects_of(current).get(LEAVES) != sha256_hex(ctx.file(LEAVES)):
        c.problems.append(f"{LEAVES}: not the leaves file the current manifest signed")
    _leaves_match(
        ctx, LEAVES, _at(current["predicate"], "merkle", "root", kind=str, what=MANIFEST), c
    )
    c.notes.append(f"{len(versions)} manifest version(s) examined: links, leaves, Merkle roots")


def _leaves_match(ctx: _Context, name: str, root: str, c: Check) -> None:
    """The leaves file ``name`` exists, parses and hashes to ``root``; else a problem."""
    if name not in ctx.files:
        c.problems.append(f"{name}: missing; the signed Merkle root cannot be checked")
    elif merkle_root(parse_leaves(ctx.files[name], what=name))[0] != root:
        c.problems.append(f"{name}: does not hash to its manifest's signed Merkle root")


def check_ledger(ctx: _Context, c: Check) -> None:
    from lineage.ledger import verify_ledger

    ledger = verify_ledger(ctx.root, ctx.trusted)
    c.notes.append(f"{len(ledger.entries)} entries, hash-chained, signed head")


def check_deletions(ctx: _Context, c: Check) -> None:
    from lineage.ledger import verify_ledger
    from lineage.receipt import verify_receipt

    ledger = verify_ledger(ctx.root, ctx.trusted)
    receipts = {}
    for name in (n for n in ctx.files if re.fullmatch(RECEIPT, n)):
        r = verify_receipt(ctx.root / name, ctx.trusted)
        receipts[r.request_id] = r
    proven, hashes, indexes = 0, {e.sha256 for e in ledger.entries}, {}
    requested = {r.request_id for r in ledger.requests()}
    for rid in sorted(set(receipts) - requested):
        c.problems.append(f"{named(rid)}: a receipt for a request the ledger does not hold")
    for request in ledger.requests():
        rid = request.request_id
        if ledger.status_of(rid) != "complete":
            c.notes.append(f"{named(rid)}: {ledger.status_of(rid)}, not complete (no claim made)")
            continue
        receipt = receipts.get(rid)
        if receipt is None:
            c.problems.append(f"{named(rid)}: complete in the ledger, but its receipt is missing")
            continue
        if receipt.ledger_entry_sha256 not in hashes:
            c.problems.append(
                f"{named(rid)}: the receipt names a ledger entry that is not in the ledger"
            )
        proven += _receipt_versions(ctx, receipt, request.record_ids, c, indexes)
    c.notes.append(
        f"{proven} record × manifest-version absences verified: non-inclusion proofs "
        "at each receipt's version, and leaf lookups (against leaves that hash to the "
        "signed root) at every later one"
    )
    verified = _request_reports(ctx, ledger, c)
    if verified:
        c.notes.append(f"{verified} deletion(s) verified against a retrain reference (signed)")


def _receipt_versions(ctx: _Context, receipt, record_ids, c: Check, indexes: dict) -> int:
    """Prove the records absent from the receipt's manifest version and every later one.

    ``indexes`` keeps each version's verified leaf index across receipts: a
    version's signature and Merkle root are checked once, not once per receipt
    (which made the check grow with receipts × versions in signature checks).
    """
    versions, v0, rid = ctx.manifests(), receipt.manifest_version, named(receipt.request_id)
    if v0 not in versions:
        c.problems.append(f"{rid}: its receipt names manifest v{v0}, which is not in the bundle")
        return 0
    if ctx.payload_sha256(versions[v0]) != receipt.manifest_payload_sha256:
        c.problems.append(f"{rid}: its receipt names a manifest v{v0} other than the bundled one")
    proven = 0
    for v in (v for v in versions if v >= v0):
        if versions[v] not in indexes:
            indexes[versions[v]] = _verified_index(ctx, versions[v], c)
        absent = _absent_from if v == v0 else _not_a_leaf
        proven += absent(versions[v], indexes[versions[v]], record_ids, c)
    return proven


def _not_a_leaf(name: str, verified, record_ids, c: Check) -> int:
    """Absence from a later version, by lookup among its leaves (which hash to its signed root).

    A verifier holding every leaf needs no proof path: a record that is not among
    leaves shown to hash to the signed root is not in that version. The receipt's
    own version is still checked by the non-inclusion proof the receipt stands on.
    """
    if verified is None:
        return 0
    kept = [r for r in record_ids if r in verified[2]]
    c.problems += [f"{named(r)}: deleted, but still a leaf of {name}" for r in kept]
    return len(record_ids) - len(kept)


def _verified_index(ctx: _Context, name: str, c: Check) -> tuple | None:
    """A manifest version's leaf index and signed root, once they agree; None (a problem) else."""
    leaves_name = name.replace(".dsse.json", ".leaves")
    if leaves_name not in ctx.files:
        c.problems.append(f"{name}: its leaves are not in the bundle; absence cannot be proven")
        return None
    index = LeafIndex(parse_leaves(ctx.files[leaves_name], what=leaves_name))
    root = _at(ctx.statement(name)["predicate"], "merkle", "root", kind=str, what=name)
    if index.root.hex() != root:
        c.problems.append(f"{name}: its leaves do not hash to its signed Merkle root")
        return None
    return index, bytes.fromhex(root), frozenset(rid for rid, _ in index.leaves)


def _request_reports(ctx: _Context, ledger, c: Check) -> int:
    """``exante delete --verify``: each report the ledger names is here, signed, unchanged."""
    n = 0
    for entry in ledger.entries:
        meta = getattr(entry, "meta", None) or {}
        reports = _at(meta, "verification", what="ledger meta") if "verification" in meta else {}
        for rid, info in reports.items():
            info = _at(info, what=f"ledger meta verification of {named(rid)}")
            name = info.get("report")
            if not isinstance(name, str) or name not in ctx.files:
                c.problems.append(
                    f"{named(rid)}: its verification report {named(name)} is not in the bundle"
                )
                continue
            statement = ctx.statement(name)
            pred = statement["predicate"]
            if pred.get("request_id") != rid:
                c.problems.append(
                    f"{name}: a report for {shown(pred.get('request_id'))}, not {named(rid)}"
                )
            for file, digest in subjects_of(statement).items():
                if sha256_hex(ctx.files.get(file, b"")) != digest:
                    c.problems.append(
                        f"{named(file)}: not the file {named(rid)}'s verification report signed"
                    )
            exact = _dig(pred, "subjects", "exact", "forget_shard_sha256")
            if exact != info.get("exact_forget_shard_sha256"):
                c.problems.append(
                    f"{named(rid)}: the ledger and the report name different exact models"
                )
            n += 1
    return n


def _absent_from(name: str, verified, record_ids, c: Check) -> int:
    if verified is None:  # its problem was recorded once, when the version was read
        return 0
    index, root, _ = verified
    n = 0
    for record_id in record_ids:
        try:
            index.non_inclusion(record_id).verify(root)
            n += 1
        except KeyError:
            c.problems.append(f"{named(record_id)}: deleted, but still a leaf of {name}")
    return n


def check_model(ctx: _Context, c: Check) -> None:
    attested = subjects_of(ctx.statement(ATTESTATION))
    envelope = _at(ctx.envelope(MODEL_SIG), "dsseEnvelope", what=MODEL_SIG)
    payload = parse_json(ctx.payload_bytes(envelope, MODEL_SIG), what=f"{MODEL_SIG}: payload")
    resources = _at(payload, "predicate", "resources", kind=list, what=MODEL_SIG)
    signed = {
        ENSEMBLE + _at(r, "name", kind=str, what=MODEL_SIG): _at(
            r, "digest", kind=str, what=MODEL_SIG
        )
        for r in resources
    }
    in_attestation = {n: d for n, d in attested.items() if n.startswith(ENSEMBLE)}
    if signed != in_attestation:
        differ = sorted(set(signed.items()) ^ set(in_attestation.items()))
        c.problems.append(
            "the model signature and the training attestation name different model files: "
            + shown(", ".join(sorted({n for n, _ in differ})), 300)
        )
    if attested.get(MODEL_SIG) != sha256_hex(ctx.file(MODEL_SIG)):
        c.problems.append(f"{MODEL_SIG} is not the signature the training attestation names")
    c.notes.append(f"{len(signed)} model files: model signature = training attestation")


def check_lineage(ctx: _Context, c: Check) -> None:
    pred = ctx.statement(ATTESTATION)["predicate"]
    expect = {
        "manifest_payload_sha256": ctx.payload_sha256(MANIFEST),
        "decision_payload_sha256": ctx.payload_sha256(DECISION),
        "partition_payload_sha256": ctx.payload_sha256(PARTITION),
    }
    for key, digest in expect.items():
        if pred.get(key) != digest:
            c.problems.append(f"the training attestation's {key} is not the bundled one's")
    partition = ctx.statement(PARTITION)["predicate"]
    for key in ("manifest_payload_sha256", "decision_payload_sha256"):
        if partition.get(key) != expect[key]:
            c.problems.append(f"the partition's {key} is not the bundled one's")
    decision = ctx.statement(DECISION)["predicate"]
    version = _at(ctx.statement(MANIFEST)["predicate"], "version", kind=int, what=MANIFEST)
    if decision.get("manifest_version") != version:
        c.problems.append(
            f"the gate decision is for manifest v{shown(decision.get('manifest_version'))}, "
            f"not v{version}"
        )
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
    lineage = _at(pred, "lineage", what=REPORT)
    if lineage.get("attestation_sha256") != sha256_hex(ctx.file(ATTESTATION)):
        c.problems.append("the verification report names a different training attestation")
    policy = _at(pred, "policy", what=REPORT)
    path = policy.get("path")
    if not isinstance(path, str) or sha256_hex(ctx.files.get(path, b"")) != policy.get("sha256"):
        c.problems.append("the pre-registered policy differs from the one the report names")
    for name, digest in subjects.items():
        if not name.startswith(ENSEMBLE) and sha256_hex(ctx.files.get(name, b"")) != digest:
            c.problems.append(f"{named(name)}: not the file the verification report signed")
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
