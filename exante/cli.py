"""The ``exante`` command: parse, call one function, format, map errors to exit codes.

Exit codes: 0 ok; 1 verification or policy failure; 2 usage; 3 bad input;
70 an internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from lineage.errors import LineageError

EXIT_INTERNAL = 70


def _signer(args):
    from lineage.signing import load_signer, signing_key_path

    return load_signer(signing_key_path(args.key))


def cmd_keys_init(args) -> int:
    from lineage.signing import TRUSTED_KEYS_DIR, generate_key, load_signer, signing_key_path

    path = signing_key_path(args.key)
    if path.exists() and args.if_missing:
        print(f"signing key: {path} (key id {load_signer(path).keyid[:16]})")
        return 0
    name = args.name or f"dev-{socket.gethostname()}"
    keyid = generate_key(path, TRUSTED_KEYS_DIR, name=name)
    if args.dev:
        bar = "!" * 72
        print(f"{bar}\n  DEVELOPMENT SIGNING KEY CREATED: {path} (mode 0600, not committed)")
        print(f"  Trusted public key: {TRUSTED_KEYS_DIR}/{name}.pub.pem (key id {keyid[:16]})")
        print("  Signatures made with it prove nothing to anyone else. For real use,")
        print("  create a key you protect and point $EXANTE_SIGNING_KEY at it.\n" + bar)
    else:
        print(f"created {path} (key id {keyid}); public key {TRUSTED_KEYS_DIR}/{name}.pub.pem")
    return 0


def cmd_corpus(args) -> int:
    from exante.params import load_params
    from lineage.corpus import generate

    counts = generate(load_params().corpus.spec(), Path(args.out))
    for name, n in counts.items():
        print(f"{n:6d}  {args.out}/{name}")
    return 0


def cmd_ingest(args) -> int:
    from lineage.stages import run_ingest

    for source, n in run_ingest(Path("."), source=args.source).items():
        print(f"ingested {n:6d} records from {source}")
    return 0


def cmd_validate(args) -> int:
    from lineage.stages import VALIDATION_REPORT, run_validate

    report = run_validate(Path("."))
    print(report.summary())
    print(f"report: {VALIDATION_REPORT}")
    return 0


def cmd_manifest(args) -> int:
    from lineage.stages import run_manifest

    p = run_manifest(Path("."), _signer(args))
    print(
        f"manifest v{p['version']}: {p['record_count']} records, "
        f"Merkle root {p['merkle']['root'][:16]}…, signed → data/manifest.dsse.json"
    )
    return 0


def cmd_gate(args) -> int:
    from exante.params import load_params
    from lineage.stages import run_gate

    gate = load_params().gate
    _, p = run_gate(Path("."), _signer(args), purpose=gate.purpose, as_of=gate.as_of_date())
    print(f"gate (purpose: {p['purpose']}, as of {p['as_of']}):")
    for sid, s in p["sources"].items():
        verdict = "allowed" if s["allowed"] else "REFUSED"
        print(f"  {sid:16s} {verdict:8s} {s['allowed']:5d}/{s['records']:<5d}")
        for reason in s["reasons"]:
            print(f"      - {reason}")
    print(f"allowed {p['allowed']['count']} records; signed → data/gate/decision.dsse.json")
    return 0


def cmd_check(args) -> int:
    from lineage.stages import run_check

    a = run_check(Path("."))
    print(
        f"ok: every record matches signed manifest v{a.manifest_version} "
        f"(root {a.manifest_root[:16]}…); the signed gate decision admits "
        f"{len(a.record_ids)} of them for training"
    )
    return 0


def cmd_trace(args) -> int:
    from lineage.stages import trace

    t = trace(Path("."), args.record_id)
    if args.json:
        print(json.dumps(_trace_dict(t), indent=2, sort_keys=True))
        return 0
    print(f"record   {args.record_id}")
    if t.record:
        print(f"source   {t.record.source_id}: {t.source['description'] if t.source else '?'}")
        if t.source:
            terms = t.source["terms"]
            print(f"license  {t.source['license']}; consent basis {t.source['consent_basis']}")
            print(
                f"terms    {terms['summary']} (permits ML training: {terms['permits_ml_training']})"
            )
        print(f"subjects {', '.join(t.record.subject_ids) or '-'}")
        print(f"sha256   {t.record.sha256}")
    if t.decision:
        verdict = "allowed" if t.decision["allowed"] else "refused"
        print(f"gate     {verdict}" + "".join(f"\n         - {r}" for r in t.decision["reasons"]))
    if t.inclusion:
        p = t.inclusion
        print(
            f"proof    included in manifest v{t.manifest_version} (root {t.manifest_root[:16]}…) "
            f"at leaf {p.leaf_index}/{p.tree_size}, {len(p.hashes)} hashes — verified"
        )
    else:
        print(
            f"proof    NOT in manifest v{t.manifest_version} (root {t.manifest_root[:16]}…); "
            "non-inclusion proof by adjacent leaves — verified"
        )
    return 0


def _trace_dict(t) -> dict:
    return {
        "record": None
        if t.record is None
        else {k: getattr(t.record, k) for k in ("record_id", "source_id", "sha256")}
        | {"subject_ids": list(t.record.subject_ids)},
        "source": t.source,
        "manifest": {"version": t.manifest_version, "merkle_root": t.manifest_root},
        "gate": t.decision,
        "inclusion_proof": t.inclusion.to_dict() if t.inclusion else None,
        "non_inclusion_proof": t.non_inclusion.to_dict() if t.non_inclusion else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exante", description=__doc__.splitlines()[0])
    p.add_argument("-C", dest="project", type=Path, help="run in this project directory")
    p.add_argument(
        "--key", type=Path, help="signing key (default: $EXANTE_SIGNING_KEY or .exante/keys)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="keys", required=True
    )
    init = keys.add_parser(
        "init", help="create an ECDSA P-256 signing key and trust its public key"
    )
    init.add_argument("--name", help="public key file name under policies/trusted_keys/")
    init.add_argument("--dev", action="store_true", help="a development key (says so loudly)")
    init.add_argument("--if-missing", action="store_true", help="do nothing if the key exists")
    init.set_defaults(func=cmd_keys_init)

    c = sub.add_parser("corpus", help="generate the embedded default corpus's raw files")
    c.add_argument("--out", default="data/raw")
    c.set_defaults(func=cmd_corpus)
    i = sub.add_parser("ingest", help="turn registered sources into records")
    i.add_argument("--source", help="only this source id")
    i.set_defaults(func=cmd_ingest)
    sub.add_parser("validate", help="run the Great Expectations suite").set_defaults(
        func=cmd_validate
    )
    sub.add_parser("manifest", help="hash, Merkle-root and sign the records").set_defaults(
        func=cmd_manifest
    )
    sub.add_parser("gate", help="evaluate policies and sign the decision").set_defaults(
        func=cmd_gate
    )
    sub.add_parser(
        "check", help="verify records, manifest and decision as training will"
    ).set_defaults(func=cmd_check)
    t = sub.add_parser("trace", help="a record's source, terms, gate decision and Merkle proof")
    t.add_argument("record_id")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_trace)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.project:
        os.chdir(args.project)
    try:
        return args.func(args)
    except LineageError as exc:
        kind = "verification failed" if exc.exit_code == 1 else "bad input"
        print(f"exante: {kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:  # a bug, not bad input: show everything
        import traceback

        traceback.print_exc()
        print("exante: internal error; please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print(
            "exante: interrupted; outputs are written atomically, nothing half-written",
            file=sys.stderr,
        )
        return 130
