"""The ``exante`` command: parse, call one function, format, map errors to exit codes.

Exit codes: 0 ok; 1 verification or policy failure; 2 usage; 3 bad input;
70 an internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import NoReturn

from lineage.errors import LineageError
from lineage.layout import LAYOUT, shard_name

EXIT_INTERNAL = 70


def _signer(args):
    from lineage.keyring import assert_may_sign
    from lineage.signing import TRUSTED_KEYS_DIR, load_signer, signing_key_path

    signer = load_signer(signing_key_path(args.key))
    assert_may_sign(signer, TRUSTED_KEYS_DIR)
    return signer


_BAR = "!" * 72


def _new_passphrase(args, path) -> bytes | None:
    """None for --dev/--unencrypted; else $EXANTE_KEY_PASSPHRASE or a prompt asked twice."""
    from lineage.errors import KeyFileError
    from lineage.signing import PASSPHRASE_ENV, ask_passphrase

    if args.dev or args.unencrypted:
        return None
    passphrase = ask_passphrase(path, confirm=True)
    if not passphrase:
        raise KeyFileError(
            f"no passphrase for the new key {path}: set ${PASSPHRASE_ENV}, run on a terminal "
            "to be asked, or pass --unencrypted (a development key, stored in the clear)"
        )
    return passphrase


def cmd_keys_init(args) -> int:
    from lineage.signing import (
        TRUSTED_KEYS_DIR,
        generate_key,
        is_encrypted,
        load_signer,
        signing_key_path,
    )

    path = signing_key_path(args.key)
    if isinstance(path, str):  # a pkcs11: URI: the key lives on the token; trust its public key
        _trust_token_key(path, args.name or "token")
        _init_dp_secret()
        return 0
    if path.exists() and args.if_missing:
        if is_encrypted(path.read_bytes()):  # its id needs the passphrase: not asked here
            print(f"signing key: {path} (encrypted)")
        else:
            print(f"signing key: {path} (UNENCRYPTED, key id {load_signer(path).keyid[:16]})")
        _init_dp_secret()
        return 0
    name = args.name or f"dev-{socket.gethostname()}"
    passphrase = _new_passphrase(args, path)
    keyid = generate_key(path, TRUSTED_KEYS_DIR, name=name, passphrase=passphrase)
    public = f"{TRUSTED_KEYS_DIR}/{name}.pub.pem (key id {keyid[:16]})"
    if args.dev:
        print(f"{_BAR}\n  DEVELOPMENT SIGNING KEY CREATED: {path} (mode 0600, not committed)")
        print(f"  Trusted public key: {public}")
        print("  It is NOT encrypted. Signatures made with it prove nothing to anyone else.")
        print("  For real use, create an encrypted key (`exante keys init`, asked for a")
        print("  passphrase) or a token key, and point $EXANTE_SIGNING_KEY at it.\n" + _BAR)
    elif passphrase is None:
        print(f"{_BAR}\n  UNENCRYPTED SIGNING KEY CREATED: {path} (mode 0600)")
        print(f"  Anyone who can read the file can sign as you. Public key: {public}\n{_BAR}")
    else:
        print(f"created {path} (encrypted, key id {keyid}); public key {public}")
    _init_dp_secret()
    return 0


def _trust_token_key(uri: str, name: str) -> None:
    from lineage.signing import TRUSTED_KEYS_DIR, load_signer, trust_public_key

    signer = load_signer(uri)
    path = trust_public_key(signer.public_key, TRUSTED_KEYS_DIR, name=name)
    print(f"trusted the token key {signer.keyid[:16]}: {path}")


def cmd_keys_rotate(args) -> int:
    from lineage.keyring import rotate
    from lineage.signing import TRUSTED_KEYS_DIR, signing_key_path

    path = signing_key_path(args.key)
    r = rotate(path, TRUSTED_KEYS_DIR, name=args.name or f"key-{_stamp()}",
               new_passphrase=lambda: _new_passphrase(args, path))  # fmt: skip
    print(f"rotated at {r.at.isoformat()}: key {r.old_keyid[:16]} signs no more; "
          f"it still verifies what it signed before")  # fmt: skip
    print(f"new signing key {path} (key id {r.new_keyid[:16]}), public key {r.new_public}")
    print(f"the old private key is at {r.retired_private}: destroy it once you no longer need it")
    return 0


def _stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def cmd_keys_revoke(args) -> int:
    from lineage.keyring import revoke
    from lineage.signing import TRUSTED_KEYS_DIR

    keyid, path = revoke(TRUSTED_KEYS_DIR, args.keyid, reason=args.reason,
                         compromised=args.compromised)  # fmt: skip
    effect = ("every signature by it now fails (compromised)" if args.compromised
              else "signatures made before now keep verifying; later ones fail")  # fmt: skip
    print(f"revoked {keyid[:16]} ({path}): {effect}")
    return 0


def cmd_keys_list(args) -> int:
    from lineage.keyring import describe
    from lineage.signing import TRUSTED_KEYS_DIR

    for row in describe(TRUSTED_KEYS_DIR):
        v = row.validity
        span = "" if v is None else "  ".join(
            f"{k}={getattr(v, k).isoformat()}" for k in ("not_before", "not_after", "revoked_at")
            if getattr(v, k) is not None
        )  # fmt: skip
        print(f"{row.keyid}  {row.fingerprint}  {row.name}")
        print(f"    {row.status}" + (f"  {span}" if span else "")
              + (f"  reason: {v.reason}" if v is not None and v.reason else ""))  # fmt: skip
    return 0


def _init_dp_secret() -> None:
    """The DP secret that keys DP-SGD noise: created once beside the key, never overwritten."""
    from training.dp_secret import create_dp_secret, dp_secret_path

    path = dp_secret_path()
    state = "created, mode 0600" if create_dp_secret(path) else "exists, kept"
    print(f"DP secret: {path} ({state}); back it up with the signing key, never publish it")


def cmd_init(args) -> int:
    from exante.init import create_project

    root = create_project(args.dir, example=args.example)
    print(f"created {'the ' + args.example + ' example' if args.example else 'a project'} "
          f"in {root}: git + dvc initialized, DVC remote {LAYOUT.dvc_remote}/")  # fmt: skip
    if args.dev_key:
        os.chdir(root)
        keys = argparse.Namespace(key=args.key, name=None, dev=True, unencrypted=False,
                                  if_missing=True)  # fmt: skip
        cmd_keys_init(keys)
    first = "dvc repro" if args.example else f"register a source in {root / LAYOUT.registry}"
    print(f"next: {first}" + ("" if args.dev_key else " (sign with `exante keys init` first)"))
    return 0


def cmd_pipeline(args) -> int:
    from exante.pipeline import check_pipeline, write_pipeline

    if args.only_check:
        check_pipeline(Path("."))
        print(f"{LAYOUT.dvc_file} matches {LAYOUT.params} and {LAYOUT.registry}")
    else:
        print(f"rendered {write_pipeline(Path('.'))} from {LAYOUT.registry} and {LAYOUT.params}")
    return 0


def cmd_corpus(args) -> int:
    from exante.params import load_params
    from lineage.corpus import generate
    from lineage.erasure import denials

    counts = generate(load_params().corpus.spec(), Path(args.out), denials=denials(Path(".")))
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


def _train_cfg():
    from exante.params import load_params

    return load_params().train


def cmd_partition(args) -> int:
    from exante.pipeline import check_pipeline
    from training.stages import run_partition

    check_pipeline(Path("."))
    p = run_partition(Path("."), _train_cfg(), _signer(args))
    counts = ", ".join(f"{k} {v}" for k, v in p["counts"].items())
    print(f"partition: {p['shards']} shards × {p['slices']} slices; records: {counts}")
    print(f"base corpus (not deletable by shard retraining): {', '.join(p['base_sources']) or '-'}")
    return 0


def _progress_on(args) -> bool:
    """Progress lines on stderr: on a terminal, with ``--progress``, or when a parent asks."""
    from exante._stream import PROGRESS_ENV

    return bool(getattr(args, "progress", False) or os.environ.get(PROGRESS_ENV) == "1"
                or sys.stderr.isatty())  # fmt: skip


def _say_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _progress(name: str, plan, *, lines: bool):
    """One line per epoch (slice, loss, time left) on stderr; returns (on_epoch, close).

    ``lines``: plain lines (a log, or a parent streaming them); otherwise a bar on a terminal.
    """
    from tqdm import tqdm

    from exante._progress import EpochProgress

    eta = EpochProgress(name, plan)
    if lines:
        return (lambda *event: _say_progress(eta.line(*event))), (lambda: None)
    bar = tqdm(desc=name, unit="epoch", disable=None, leave=False, file=sys.stderr)

    def on_epoch(*event) -> None:
        bar.set_postfix_str(eta.line(*event).split(": ", 1)[1], refresh=False)
        bar.update()

    return on_epoch, bar.close


def _shard_plan(cfg, shard: int):
    from exante._progress import per_slice, slice_plan
    from training.partition import read_shard

    try:
        placed = read_shard(LAYOUT.shard_file(shard))
    except (FileNotFoundError, LineageError):
        placed = []  # the stage itself reports it
    return slice_plan(cfg, *per_slice(placed, cfg.slices))


def cmd_train(args) -> int:
    from training.stages import run_train_base, run_train_shard

    cfg = _train_cfg()
    lines = _progress_on(args) and not sys.stderr.isatty()  # a terminal gets the bar
    if args.unit == "base":
        name = "base"
        on_epoch, close = _progress("train base", [(cfg.base.max_epochs, 1.0)], lines=lines)
        try:
            m = run_train_base(Path("."), cfg, on_epoch=on_epoch)
        finally:
            close()
    elif args.unit == "shard":
        name = f"shard {args.shard}"
        on_epoch, close = _progress(f"train {name}", _shard_plan(cfg, args.shard), lines=lines)
        try:
            m = run_train_shard(Path("."), cfg, args.shard, on_epoch=on_epoch)
        finally:
            close()
    else:  # every shard, train.workers at a time; unchanged ones find their checkpoints
        from exante import _units
        from training.executor import run_units
        from training.stages import shard_pool

        shards = list(range(cfg.shards))
        show = _progress_on(args)
        jobs = [(str(Path(".").resolve()), cfg.model_dump(mode="json"), s, show) for s in shards]
        done = run_units(_units.train_shard, jobs, names=[f"shard {s}" for s in shards],
                         **shard_pool(Path("."), cfg))  # fmt: skip
        for s, m in zip(shards, done, strict=True):
            _say_trained(f"shard {s}", m)
        return 0
    _say_trained(name, m)
    return 0


def _say_trained(name: str, m: dict) -> None:
    if m["kind"] == "shard":
        print(f"{name}: slices trained {m['trained_slices']}, reused {m['reused_slices']}")
        if m["dp"]:
            print(f"{name}: DP epsilon {m['dp']['epsilon']:.3f} (delta {m['dp']['delta']:g})")
    if not m["epochs"]:  # nothing trained now: reused (the line above says so), or built as is
        if not m.get("reused_slices"):
            print(f"{name}: not trained (the model as built: train.base.max_epochs 0, or no "
                  f"records), saved in {m['wall_seconds']:.1f} s")  # fmt: skip
        return
    last = m["epochs"][-1]["loss"]
    print(
        f"{name}: {m['records']} records, {len(m['epochs'])} epochs, final loss {last:.4f}, "
        f"{m['wall_seconds']:.1f} s, {m['tokens_per_second']:.0f} tokens/s"
    )


def cmd_attest(args) -> int:
    from exante.params import load_params
    from lineage.signing import signing_key_path
    from training.stages import run_attest

    params = load_params()
    key = signing_key_path(args.key)
    p = run_attest(Path("."), params.train, _signer(args), key_path=key,
                   params=params.train.model_dump(mode="json"))  # fmt: skip
    print(f"attested {len(p['checkpoints'])} checkpoint files → {LAYOUT.attestation}")
    print(f"signed the released ensemble (OpenSSF model signing) → {LAYOUT.signature}")
    return 0


def cmd_report(args) -> int:
    """Measure the released ensemble, log the training to MLflow, print one screen."""
    from exante.params import load_params
    from lineage._canonical import file_sha256
    from training.stages import load_partition, run_report
    from verify.evidence import log_training, tracking_uri

    root, paths, params = Path("."), LAYOUT, load_params()
    cfg = params.train
    probes = Path(params.verify.probes) if params.verify.probes else None
    report = run_report(root, cfg, paths, probes=probes)
    partition, _, partition_sha = load_partition(root, paths)
    units = {"base": paths.unit_metrics("base")} | {
        f"shard-{s:02d}": paths.unit_metrics(shard_name(s)) for s in range(cfg.shards)
    }
    digests = {
        "manifest_payload_sha256": partition["manifest_payload_sha256"],
        "decision_payload_sha256": partition["decision_payload_sha256"],
        "partition_payload_sha256": partition_sha,
        "attestation_sha256": file_sha256(paths.attestation),
    }
    knowledge = report["knowledge"] or {}
    scalars = {"cost_wall_seconds": report["cost"]["wall_seconds"]}
    if knowledge:
        scalars["exact_match"] = knowledge["exact_match"]
    parent = log_training(root, params=cfg.model_dump(mode="json"), digests=digests,
                          units=units, metrics=scalars)  # fmt: skip
    evidence = {"tracking_uri": tracking_uri(root), "experiment": "exante-training",
                "parent_run_id": parent, **digests}  # fmt: skip
    paths.evidence.write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    _print_summary(report, evidence, cfg)
    return 0


def _print_summary(report: dict, evidence: dict, cfg) -> None:
    cost = report["cost"]
    print("─" * 72)
    print(f"exante training summary: {cfg.shards} shards × {cfg.slices} slices, "
          f"ensemble rule {report['rule']}")  # fmt: skip
    epochs = ", ".join(f"{k} {v}" for k, v in cost["epochs"].items())
    print(f"  cost       {cost['wall_seconds']:.0f} s, {cost['tokens']:,} tokens; epochs: {epochs}")
    k = report["knowledge"]
    if k:
        print(f"  knowledge  exact match {k['exact_match']:.2f} ({k['known']}/{k['total']} facts "
              f"of {k['people']} retained people)")  # fmt: skip
        facts = ", ".join(f"{f} {v['known']}/{v['total']}" for f, v in k["by_fact"].items())
        print(f"             by fact: {facts}")
        own = ", ".join(f"{s} {v:.2f}" for s, v in k["shards_own_people"].items())
        print(f"             each shard on its own people: {own}")
    for sample in report["samples"]:
        mark = "✓" if sample["exact"] else "✗"
        print(f"  sample {mark}   {sample['prompt']}⟨{sample['generated']}⟩")
    if any(report["dp"].values()):
        eps = ", ".join(f"{s} ε={d['epsilon']:.2f}" for s, d in report["dp"].items() if d)
        print(f"  privacy    DP-SGD: {eps}")
    print(f"  attested   {report['attestation']['path']} — verified")
    print(f"  evidence   MLflow {evidence['tracking_uri']}, run {evidence['parent_run_id']}")
    print("─" * 72)


def cmd_generate(args) -> int:
    from training.stages import released_ensemble

    ensemble = released_ensemble(Path("."), _train_cfg(), rule=args.rule)
    print(args.prompt + ensemble.generate(args.prompt, max_new_tokens=args.max_new_tokens))
    return 0


def cmd_score(args) -> int:
    from training.stages import released_ensemble

    ensemble = released_ensemble(Path("."), _train_cfg(), rule=args.rule)
    logp = ensemble.sequence_logprob(args.text, prompt=args.prompt)
    n = len(ensemble.tokenizer.encode(args.text, bos=False))
    print(f"log p = {logp:.4f} nats over {n} tokens ({-logp / n / 0.6931:.4f} bits/token)")
    return 0


def cmd_trace(args) -> int:
    from lineage.stages import trace

    t = trace(Path("."), args.record_id)
    if args.json:
        out = _trace_dict(t) | {"training": _placement(args.record_id)}
        print(json.dumps(out, indent=2, sort_keys=True))
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
    placed = _placement(args.record_id)
    if placed:
        where = "base model" if placed["unit"] == "base" else (
            f"shard {placed['shard']}, slice {placed['slice']}")  # fmt: skip
        print(f"trained  {where}; in checkpoints: {', '.join(placed['models']) or '-'}")
        if placed.get("attested"):
            print(f"         attested in {placed['attested']}; released in models/ensemble")
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


def _placement(record_id: str) -> dict | None:
    """The record's shard and slice, and the attested models holding it (None if untrained)."""
    from exante.params import load_params
    from training.stages import locate

    placed = locate(Path("."), record_id, load_params().train)
    if placed and LAYOUT.attestation.exists():
        from lineage.signing import load_trusted_keys
        from training.attest import verify_training_attestation

        verify_training_attestation(LAYOUT.attestation, root=Path("."),
                                    trusted=load_trusted_keys(LAYOUT.trusted))  # fmt: skip
        placed["attested"] = LAYOUT.attestation.as_posix()
    return placed


def _deletion_context(args):
    from exante.deletion import Context
    from lineage.signing import load_trusted_keys
    from lineage.stages import TRUSTED

    progress = _say_progress if _progress_on(args) else None
    return Context(Path("."), _train_cfg(), _signer(args), load_trusted_keys(TRUSTED),
                   verify=bool(getattr(args, "verify", False)), progress=progress)  # fmt: skip


def _period():
    from exante.params import load_params
    from exante.queue import Period

    d = load_params().deletion
    return Period(d.deadline_months, d.deadline_days)


def cmd_delete(args) -> int:
    from exante.deletion import RequestSpec, delete, plan, read_request_file, resolve, resume
    from lineage.ledger import verify_ledger
    from lineage.records import read_all
    from lineage.signing import load_trusted_keys
    from lineage.stages import RECORDS, TRUSTED

    if args.resume:
        receipts = resume(_deletion_context(args))
    elif args.flush:
        from exante.queue import flush

        receipts = flush(_deletion_context(args))
    else:
        if args.from_file:
            specs = read_request_file(args.from_file)
        else:
            extra = {"request_id": args.request_id} if args.request_id else {}
            specs = [RequestSpec(args.reason, tuple(args.record), tuple(args.subject), **extra)]
        if args.plan:
            ledger = verify_ledger(Path("."), load_trusted_keys(TRUSTED))
            resolved = resolve(specs, read_all(RECORDS), ledger)
            _print_plan(plan(Path("."), _train_cfg(), [i for h in resolved for i in h]))
            return 0
        if args.enqueue:
            from exante.queue import enqueue

            enqueue(_deletion_context(args), specs, _period())
            return 0
        receipts = delete(_deletion_context(args), specs)
    for path in receipts:
        print(f"receipt: {path}  (check it with `exante receipt verify {path}`)")
    return 0


def _print_plan(p: dict) -> None:
    print(f"plan (dry run, nothing written): {len(p['records'])} records")
    for rid in p["records"]:
        print(f"  {rid}")
    for s, v in p["shards"].items():
        print(f"shard {s}: retrain from slice {v['first_slice']}, reuse slices "
              f"{v['reused_slices'] or '-'}; {len(v['records'])} records")  # fmt: skip
    if p["base_records"]:
        print(f"base corpus: {len(p['base_records'])} records: the base and every shard retrain")
    if p["untrained_records"]:
        print(f"not in any shard (refused by the gate): {len(p['untrained_records'])} records; "
              "removed from the record files, nothing to retrain")  # fmt: skip
    c = p["cost"]
    print(f"estimated retrain cost: {c['retrain']:,} of {c['full']:,} {c['unit']} "
          f"= {c['ratio']:.3f} of a full retrain of the shards")  # fmt: skip


def cmd_receipt_verify(args) -> int:
    from lineage.receipt import verify_receipt
    from lineage.signing import load_trusted_keys

    r = verify_receipt(args.path, load_trusted_keys(args.trusted))
    print(f"receipt {args.path}: signature and {len(r.removed)} non-inclusion proofs verified")
    print(f"  request   {r.request_id} (ledger entry {r.ledger_entry_sha256[:16]}…)")
    print(f"  manifest  v{r.manifest_version}, Merkle root {r.merkle_root[:16]}…, "
          f"{r.tree_size} leaves")  # fmt: skip
    for x in r.removed:
        print(f"  removed   {x.record_id} (sha256 {x.sha256[:16]}…)")
    print(f"  retrained shards {list(r.retrained_shards) or '-'}; issued {r.issued_at}")
    return 0


def cmd_ledger_verify(args) -> int:
    from lineage.ledger import verify_ledger
    from lineage.signing import load_trusted_keys
    from lineage.stages import TRUSTED

    ledger = verify_ledger(Path("."), load_trusted_keys(TRUSTED))
    print(f"ledger: {len(ledger.entries)} entries, chain and signed head verified")
    for q in ledger.requests():
        print(f"  {q.request_id:24s} {ledger.statuses[q.request_id]:10s} "
              f"{len(q.record_ids)} records, received {q.received_at}")  # fmt: skip
    return 0


def cmd_verify_register(args) -> int:
    """Sign the verification plan (policy, verify params, seeds) before any baseline is built."""
    from exante.params import load_params
    from exante.pipeline import check_pipeline
    from verify.policy import load_policy
    from verify.provenance import REGISTRATION, register

    check_pipeline(Path("."))
    policy = load_policy(Path("."))
    got, written = register(Path("."), load_params(), policy, _signer(args))
    print(f"verification {'registered' if written else 'already registered'}: {REGISTRATION}")
    print(f"  {policy.path} sha256 {policy.sha256[:16]}…, verify params sha256 "
          f"{got['verify_params_sha256'][:16]}…")  # fmt: skip
    print(f"  calibration seeds {got['calibration_seeds']}, held-out seed {got['heldout_seed']}")
    return 0


def _baseline_names(kind: str, method: str | None, params, policy) -> list[str]:
    from verify import baselines

    if kind == "approx":
        if method not in params.verify.methods:
            raise BaselineMethodError(
                f"--method {method!r} is not in verify.methods {list(params.verify.methods)}"
            )
        return [f"approx:{method}"]
    if kind == "calib":
        return baselines.calibration_names(params, policy)
    return [kind]


def cmd_ledger_status(args) -> int:
    """Pending requests against their deadline; exit 1 when one is overdue (for a CI alert)."""
    from exante.queue import now, pending
    from lineage.ledger import verify_ledger
    from lineage.signing import load_trusted_keys
    from lineage.stages import TRUSTED

    as_of = args.as_of or now()
    rows = pending(verify_ledger(Path("."), load_trusted_keys(TRUSTED)), _period())
    print(f"pending deletion requests as of {as_of.isoformat()}: {len(rows)}")
    for q in rows:
        left = q.deadline - as_of
        due = f"OVERDUE by {_days(-left)}" if q.overdue(as_of) else f"{_days(left)} left"
        print(f"  {q.request_id:24s} {q.status:10s} received {q.received_at.isoformat()} "
              f"(age {_days(q.age(as_of))}); due {q.deadline.isoformat()}: {due}")  # fmt: skip
    late = [q.request_id for q in rows if q.overdue(as_of)]
    if late:
        print(f"exante: {len(late)} deletion requests overdue: {', '.join(late)}; "
              "run `exante delete --flush`", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _days(t) -> str:
    return f"{t.total_seconds() / 86400:.1f} d"


def _as_of(text: str):
    """``--as-of``: a date (its midnight, UTC) or an ISO 8601 time (naive means UTC)."""
    from datetime import UTC, datetime

    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or ISO 8601 time"
        ) from None
    return t.replace(tzinfo=UTC) if t.utcoffset() is None else t.astimezone(UTC)


def cmd_verify_baseline(args) -> int:
    """Build one baseline the verification compares against (a cached DVC stage each)."""
    from exante.params import load_params
    from verify.forget import forget_set
    from verify.policy import load_policy

    params, policy = load_params(), load_policy(Path("."))
    fs = forget_set(Path("."), params.verify)
    if args.kind == "all":
        _build_baselines(params, policy, fs, rebuild=False)
        return 0
    for name in _baseline_names(args.kind, args.method, params, policy):
        _build_baseline(name, params, policy, fs)
    return 0


def _build_baselines(params, policy, fs, *, rebuild: bool) -> None:
    """Every required baseline that is missing or stale (all with ``rebuild``), train.workers
    at a time; a fresh one is kept as built (its provenance stamp says so)."""
    from exante import _units
    from training.executor import pool_of, run_units
    from verify import baselines

    root = Path(".")
    todo = {}
    for name in baselines.required(params, policy):
        why = ["--rebuild"] if rebuild else baselines.stale(root, name, params, fs)
        if why:
            todo[name] = why
        else:
            print(f"baseline {name}: fresh, kept")
    for name, why in todo.items():
        print(f"building baseline {name}: {'; '.join(why)}")
    jobs = [(str(root.resolve()), name) for name in todo]
    built = run_units(_units.build_baseline, jobs, names=list(todo), **pool_of(params.train))
    people = ", ".join(fs.forget_people)
    for info in built:
        print(f"{info['kind']}: shard {fs.shard} without {len(fs.forget)} records of {people} "
              f"in {info['seconds']:.0f} s")  # fmt: skip


def _build_baseline(name: str, params, policy, fs) -> None:
    """Build and describe one baseline; the time is printed, never recorded (not reproducible)."""
    import time

    from verify import baselines

    start = time.perf_counter()
    info = baselines.build(Path("."), name, params, policy, fs)
    people = ", ".join(fs.forget_people)
    print(f"{info['kind']}: shard {fs.shard} without {len(fs.forget)} records of {people} "
          f"in {time.perf_counter() - start:.0f} s")  # fmt: skip
    if "planted_record" in info:
        print(f"  planted leak: {info['planted_record']} left in")
    if "trained_slices" in info:
        print(f"  trained slices {info['trained_slices']} of {len(info['slices'])}")
    if "report" in info:
        r = info["report"]
        print(
            f"  {r['steps']} steps kept of {r['steps_run']}, stopped by {r['stopped_because']}; "
            f"forget loss {r['forget_loss_before']:.3f} → {r['forget_loss_after']:.3f}, "
            f"retain loss {r['retain_loss_before']:.3f} → {r['retain_loss_after']:.3f}, "
            f"largest weight change {r['max_weight_change']:.2e}"
        )


def cmd_verify_run(args) -> int:
    """Measure every subject under every attack, judge, sign, log; print the table."""
    from exante.params import load_params
    from verify.stage import OUT, run_verify

    results = run_verify(Path("."), load_params(), _signer(args),
                         progress=(lambda s: None) if args.quiet else print)  # fmt: skip
    _print_verification(results, OUT)
    return 0


def _print_verification(results: dict, out: Path) -> None:
    from verify.stage import applicability, cell_statistic, legend, required_outcomes, table

    print("─" * 72)
    print(f"exante verification: {cell_statistic(results)} per subject × attack")
    print(f"  {legend()}")
    for line in table(results) + applicability(results):
        print("  " + line)
    for name, s in results["summary"].items():
        for why in filter(None, (s.get("basis"), s.get("reason"))):
            print(f"  {name}: {why}")
    cal, power = results["calibration"], results["power"]
    print(f"  calibration: {cal['references']} retrain reference(s), α {cal['alpha']} "
          f"({cal['correction']} over {cal['judged_checks']} checks), "
          f"{cal['bootstrap']} bootstrap resamples of the people")  # fmt: skip
    for name in ("planted", "heldout"):
        p = power[name]
        print(f"  power control {name}: must {p['must']}, was {p.get('verdict')} "
              f"({'holds' if p['ok'] else 'DOES NOT HOLD'})")  # fmt: skip
    if md := power.get("min_detectable_leak"):
        print(f"  minimum detectable leak: +{md['logprob_rise']:.3f} nats mean token log-prob "
              f"on one record (z > {md['critical_z']:.2f})")  # fmt: skip
    dead = [a for a, c in results["controls"].items() if not c["fired"]]
    if dead:
        print(f"  attacks whose positive control did not fire (not evidence): {', '.join(dead)}")
    up = ", ".join(f"{k} {v:+.2f}" for k, v in results["incontext_uplift"].items()
                   if v is not None)  # fmt: skip
    print(f"  in-context uplift over the retrain reference (a note, not a verdict): {up}")
    print("  facts put back in a prompt are read by any model, exactly deleted or not:")
    print("  in-context knowledge needs inference-time controls.")
    for miss in required_outcomes(results):
        print(f"  NOT SHOWN: {miss}")
    ev = results["evidence"]
    print(f"  report {out}/report.dsse.json (check it: exante verify check)")
    print(f"  MLflow run {ev['parent_run_id']} in experiment {ev['experiment']}")


def cmd_verify_subject(args) -> int:
    """Judge a model directory of one's own for the forget shard, against the same reference."""
    from exante.params import load_params
    from verify.stage import SUBJECTS, run_verify, subject_model, subject_name

    name, model = subject_name(args.name), subject_model(args.path)
    out = SUBJECTS / args.name
    results = run_verify(Path("."), load_params(), _signer(args), extra={name: model},
                         out=out, progress=(lambda s: None) if args.quiet else print)  # fmt: skip
    _print_verification(results, out)
    verdict = results["summary"][name]["verdict"]
    print(f"{name}: {verdict}")
    return 0 if verdict == "pass" else 1


def cmd_verify_check(args) -> int:
    from lineage.signing import load_trusted_keys
    from verify.report import check_policy_on_disk, verify_report
    from verify.stage import required_outcomes

    p = verify_report(args.path, root=Path("."), trusted=load_trusted_keys(args.trusted))
    check_policy_on_disk(p, root=Path("."))
    verdicts = ", ".join(f"{k} {v['verdict']}" for k, v in p["summary"].items())
    print(f"verification report OK: signed, every subject's digest matches, the policy on disk "
          f"is the one it names ({verdicts})")  # fmt: skip
    misses = required_outcomes(p)
    for miss in misses:
        print(f"NOT SHOWN: {miss}")
    return 1 if misses else 0


def cmd_verify(args) -> int:
    """Standalone: register, build whichever baselines are missing or stale, then run."""
    from exante.params import load_params
    from verify.forget import forget_set
    from verify.policy import load_policy
    from verify.provenance import REGISTRATION, check_registration, register

    root, params = Path("."), load_params()
    policy = load_policy(root)
    if (root / REGISTRATION).is_file() and not args.register:
        # a changed policy or verify params is a new plan: never re-registered silently
        check_registration(root, policy, params=params)
    elif register(root, params, policy, _signer(args))[1]:
        print(f"registered the verification plan: {REGISTRATION} (policy sha256 "
              f"{policy.sha256[:16]}…); baselines built under another are rebuilt")  # fmt: skip
    fs = forget_set(root, params.verify)
    _build_baselines(params, policy, fs, rebuild=args.rebuild)
    return cmd_verify_run(args)


def cmd_audit_bundle(args) -> int:
    from verify.audit import build_bundle

    index = build_bundle(Path("."), signer=_signer(args), out=args.out, html_out=args.html)
    print(f"audit bundle {args.out}: {index['files']} files, signed index "
          f"(manifest v{index['manifest']['version']}); no record content")  # fmt: skip
    if args.html:
        print(f"audit report {args.html} (also inside the bundle as report.html)")
    print(f"check it offline: exante audit verify {args.out} --key <signer's public key>")
    return 0


def cmd_audit_verify(args) -> int:
    from verify.audit import verify_bundle

    result = verify_bundle(args.path, keys=args.public_keys)
    print(f"audit bundle {_printable(str(args.path))}")
    print(f"  trusted keys: {result.trusted}")
    for keyid in result.signed_by or ("none of the trusted keys",):
        print(f"  index signed by: {keyid} (key id = SHA-256 of the public key's DER)")
    if not result.pinned:
        print("  NOT PINNED: the bundle names its own keys, so a re-signed bundle passes too; "
              "compare the key id above with the signer's, or pass --key")  # fmt: skip
    width = max(len(c.name) for c in result.checks)
    for c in result.checks:  # notes say what a passing check examined; a failure, what is wrong
        notes = "; ".join(c.notes) if c.ok else ""
        print(_printable(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:{width}s}  {notes}".rstrip()))
        for problem in c.problems:
            print(f"          - {_printable(problem)}")
    failed = sum(not c.ok for c in result.checks)
    print(f"{len(result.checks) - failed} of {len(result.checks)} checks passed")
    return 0 if result.ok else 1


def _printable(text: str) -> str:
    """``text`` with every non-printable character escaped: input cannot redraw the terminal."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )


def cmd_export(args) -> int:
    from verify.export import build_exports, write_exports

    files = build_exports(Path("."), signer=_signer(args), formats=(args.format,))
    for path in write_exports(args.out, files):
        print(path)
    return 0


class BaselineMethodError(LineageError):
    exit_code = 3


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
        "--key",
        help="signing key file or pkcs11: URI (default: $EXANTE_SIGNING_KEY or .exante/keys)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(
        dest="keys", required=True
    )
    init = keys.add_parser(
        "init", help="create an ECDSA P-256 signing key and trust its public key"
    )
    init.add_argument("--name", help="public key file name under policies/trusted_keys/")
    init.add_argument("--dev", action="store_true",
                      help="an unencrypted development key (says so loudly)")  # fmt: skip
    init.add_argument(
        "--unencrypted",
        action="store_true",
        help="store the key in the clear (default: encrypted with a passphrase)",
    )
    init.add_argument("--if-missing", action="store_true", help="do nothing if the key exists")
    init.set_defaults(func=cmd_keys_init)
    rot = keys.add_parser("rotate", help="retire the signing key now; create its successor")
    rot.add_argument("--name", help="public key file name of the new key")
    rot.add_argument("--dev", action="store_true", help=argparse.SUPPRESS)
    rot.add_argument("--unencrypted", action="store_true", help="store the new key in the clear")
    rot.set_defaults(func=cmd_keys_rotate)
    rev = keys.add_parser("revoke", help="revoke a trusted key from now on (or wholly)")
    rev.add_argument("keyid", help="key id, or 8+ leading characters of it")
    rev.add_argument("--reason", required=True)
    rev.add_argument(
        "--compromised",
        action="store_true",
        help="void every signature by the key, whenever it claims to be made",
    )
    rev.set_defaults(func=cmd_keys_revoke)
    keys.add_parser("list", help="trusted keys: ids, fingerprints, validity, revocation"
                    ).set_defaults(func=cmd_keys_list)  # fmt: skip

    from exante.init import EXAMPLES

    ini = sub.add_parser("init", help="make a new project: registry, policies, params, dvc.yaml")
    ini.add_argument("dir", type=Path, help="the new project's directory")
    ini.add_argument(
        "--example",
        choices=EXAMPLES,
        help="the embedded demo instead of an empty registry; smollm2: the demo with "
        "SmolLM2-135M-Instruct and LoRA shards (profiles/smollm2.yaml)",
    )
    ini.add_argument("--dev-key", action="store_true",
                     help="also create an unencrypted dev key (keys init --dev)")  # fmt: skip
    ini.set_defaults(func=cmd_init)
    pl = sub.add_parser("pipeline", help="render dvc.yaml from the registry and params")
    pl.add_argument("--check", action="store_true", dest="only_check",
                    help="only check that dvc.yaml matches them (exit 3 if not)")  # fmt: skip
    pl.set_defaults(func=cmd_pipeline)
    c = sub.add_parser("corpus", help="generate the embedded default corpus's raw files")
    c.add_argument("--out", default=LAYOUT.name(LAYOUT.raw))
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
    sub.add_parser(
        "partition", help="split admitted records into base + SISA shards/slices"
    ).set_defaults(func=cmd_partition)
    tr = sub.add_parser(
        "train", help="train the base model, one SISA shard, or every shard (train.workers at once)"
    )
    tr.add_argument("unit", choices=["base", "shard", "shards"])
    tr.add_argument("--shard", type=int, default=0)
    tr.add_argument(
        "--progress",
        action="store_true",
        help="one line per epoch on stderr (slice, loss, time left), for logs",
    )
    tr.set_defaults(func=cmd_train)
    sub.add_parser("attest", help="sign the ensemble and attest its training").set_defaults(
        func=cmd_attest
    )
    sub.add_parser(
        "report", help="measure the ensemble, log training to MLflow, print a summary"
    ).set_defaults(func=cmd_report)
    g = sub.add_parser("generate", help="greedy continuation by the shard ensemble")
    g.add_argument("prompt")
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--rule", choices=["bma", "mean"])
    g.set_defaults(func=cmd_generate)
    sc = sub.add_parser("score", help="log-probability of a text under the shard ensemble")
    sc.add_argument("text")
    sc.add_argument("--prompt", default="")
    sc.add_argument("--rule", choices=["bma", "mean"])
    sc.set_defaults(func=cmd_score)
    t = sub.add_parser("trace", help="a record's source, terms, gate decision and Merkle proof")
    t.add_argument("record_id")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_trace)
    d = sub.add_parser("delete", help="delete records or subjects exactly; sign a receipt")
    d.add_argument("--record", nargs="+", default=[], metavar="ID", help="record ids")
    d.add_argument("--subject", nargs="+", default=[], metavar="ID", help="every record of these")
    d.add_argument("--reason", help="a reference for the request (a ticket id, not prose)")
    d.add_argument("--request-id", help="the request's id (default: a new random one)")
    d.add_argument("--from-file", type=Path, help="a batch: one JSON request a line")
    d.add_argument("--plan", action="store_true", help="dry run: records, shards, cost")
    d.add_argument("--resume", action="store_true", help="finish pending requests")
    d.add_argument("--enqueue", action="store_true",
                   help="acknowledge the requests now (signed, with their receipt deadline); "
                   "process them with the next --flush")  # fmt: skip
    d.add_argument("--flush", action="store_true",
                   help="process every queued or pending request together, one retrain per "
                   "affected shard; then a receipt each")  # fmt: skip
    d.add_argument(
        "--progress",
        action="store_true",
        help="progress lines on stderr even when it is not a terminal (for logs)",
    )
    d.add_argument("--verify", action="store_true",
                   help="first verify each request against a retrain reference under the "
                   "recovery attacks (a signed report beside the receipts)")  # fmt: skip
    d.set_defaults(func=cmd_delete, check=_check_delete_args)
    rc = sub.add_parser("receipt", help="deletion receipts").add_subparsers(
        dest="receipt", required=True
    )
    rv = rc.add_parser("verify", help="check a receipt offline with the trusted public keys")
    rv.add_argument("path", type=Path)
    rv.add_argument("--trusted", type=Path, default=LAYOUT.trusted)
    rv.set_defaults(func=cmd_receipt_verify)
    lg = sub.add_parser("ledger", help="the deletion ledger").add_subparsers(
        dest="ledger", required=True
    )
    lg.add_parser("verify", help="check the chain and the signed head").set_defaults(
        func=cmd_ledger_verify
    )
    ls = lg.add_parser("status", help="pending requests against their deadline; 1 if overdue")
    ls.add_argument("--as-of", type=_as_of, metavar="DATE",
                    help="judge the deadlines at this date or time (default: now)")  # fmt: skip
    ls.set_defaults(func=cmd_ledger_status)
    v = sub.add_parser("verify", help="recovery attacks against a retrain reference; signed report")
    v.add_argument("--rebuild", action="store_true",
                   help="rebuild every baseline (missing and stale ones always are)")  # fmt: skip
    v.add_argument("--quiet", action="store_true", help="no per-subject progress lines")
    v.add_argument("--register", action="store_true",
                   help="register a changed plan (policy, verify params) anew; without it a "
                   "changed plan is refused")  # fmt: skip
    v.set_defaults(func=cmd_verify)
    vs = v.add_subparsers(dest="verify", metavar="STEP")
    vg = vs.add_parser("register", help="sign the policy and verify params before any baseline")
    vg.set_defaults(func=cmd_verify_register)
    vb = vs.add_parser("baseline", help="build one baseline (retrain, exact, approx --method M, "
                       "calib: every calibration reference, heldout, planted) or all: every "
                       "missing or stale one, train.workers at a time")  # fmt: skip
    vb.add_argument("kind", choices=["all", "retrain", "exact", "approx", "calib", "heldout",
                                     "planted"])  # fmt: skip
    vb.add_argument("--method", help="approx only: an unlearning method of verify.methods")
    vb.set_defaults(func=cmd_verify_baseline, check=_check_baseline_args)
    vr = vs.add_parser("run", help="measure, judge, sign and log (the dvc verify stage)")
    vr.add_argument("--quiet", action="store_true")
    vr.set_defaults(func=cmd_verify_run)
    vc = vs.add_parser("check", help="check a signed verification report against the files")
    vc.add_argument("path", type=Path, nargs="?", default=LAYOUT.verification_files.report)
    vc.add_argument("--trusted", type=Path, default=LAYOUT.trusted)
    vc.set_defaults(func=cmd_verify_check)
    vj = vs.add_parser("subject", help="judge a model directory of your own for the forget shard")
    vj.add_argument("path", type=Path, help="a model directory (config + model.safetensors)")
    vj.add_argument("--name", required=True, help="how the report names it (letters, digits, -_.)")
    vj.add_argument("--quiet", action="store_true")
    vj.set_defaults(func=cmd_verify_subject)
    au = sub.add_parser("audit", help="signed audit bundles, verified offline").add_subparsers(
        dest="audit", required=True
    )
    ab = au.add_parser("bundle", help="write the signed, deterministic audit bundle + report")
    ab.add_argument("--out", type=Path, default=LAYOUT.audit_bundle)
    ab.add_argument("--html", type=Path, default=LAYOUT.audit_html,
                    help="the standalone copy of the HTML report")  # fmt: skip
    ab.set_defaults(func=cmd_audit_bundle)
    av = au.add_parser("verify", help="check a bundle offline: signatures, digests, chains")
    av.add_argument("path", type=Path)
    av.add_argument("--key", dest="public_keys", type=Path, action="append",
                    help="a trusted public key (PEM); repeat for several. Default: the "
                    "bundle's own policies/trusted_keys (say so, then pin the key)")  # fmt: skip
    av.set_defaults(func=cmd_audit_verify)
    ex = sub.add_parser("export", help="EU training-content summary, CycloneDX or SPDX; signed")
    ex.add_argument("format", choices=["eu-summary", "cyclonedx", "spdx"])
    ex.add_argument("--out", type=Path, default=LAYOUT.audit_exports,
                    help="directory for the files and their signed envelope")  # fmt: skip
    ex.set_defaults(func=cmd_export)
    return p


def _check_baseline_args(p: argparse.ArgumentParser, args) -> None:
    if (args.kind == "approx") != bool(args.method):
        p.error("verify baseline: --method goes with approx, and approx needs it")


def _check_delete_args(p: argparse.ArgumentParser, args) -> None:
    named = bool(args.record or args.subject)
    if args.flush and (named or args.from_file or args.plan or args.resume or args.enqueue
                       or args.verify):  # fmt: skip
        p.error("delete --flush takes no records, subjects, --from-file, --plan, --resume, "
                "--enqueue or --verify: it processes what the ledger holds")  # fmt: skip
    if args.flush:
        return
    if args.enqueue and (args.plan or args.resume or args.verify):
        p.error("delete --enqueue takes no --plan, --resume or --verify")
    if args.resume and (named or args.from_file or args.plan):
        p.error("delete --resume takes no records, subjects, --from-file or --plan")
    if args.verify and (args.resume or args.plan):
        p.error("delete --verify verifies new requests (their text is gone after a deletion), "
                "not --resume or --plan")  # fmt: skip
    if not args.resume and named == bool(args.from_file):
        p.error(
            "delete needs --record/--subject or --from-file (one of them), or --resume or --flush"
        )
    if named and not args.reason:
        p.error("delete --record/--subject needs --reason")


def entry(argv: list[str] | None = None) -> NoReturn:
    """The ``exante`` command: :func:`main`, then an exit that skips the interpreter's teardown.

    Tearing down the modules a stage loaded (torch, transformers, MLflow, Great
    Expectations) took 0.9-1.8 s after its work was done, in every stage
    process of a pipeline and a deletion. The exit handlers a normal exit runs
    (MLflow's, logging's, temporary directories' finalizers) run first and the
    output is flushed; only the module teardown is skipped. While a library's
    non-daemon thread is still running, the exit is the normal one, which
    waits for it; so it is under a profiler or a debugger (``python -m cProfile``
    writes its output after the script returns). An exception out of
    :func:`main` exits normally too.
    """
    code = main(argv)
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if watched or any(t.is_alive() and not t.daemon for t in threading.enumerate()
                      if t is not threading.main_thread()):  # fmt: skip
        sys.exit(code)
    from exante.warm import flush_streams

    atexit._run_exitfuncs()
    flush_streams()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "check", None):
        args.check(parser, args)
    if args.project:
        os.chdir(args.project)
    try:
        return args.func(args)
    except LineageError as exc:
        kind = "verification failed" if exc.exit_code == 1 else "bad input"
        lines = (_printable(line) for line in str(exc).splitlines())  # names from input files
        print(f"exante: {kind}: {type(exc).__name__}: " + "\n".join(lines), file=sys.stderr)
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
