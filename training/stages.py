"""The training stages of the pipeline: partition, base, one shard, attest.

Each stage admits its records through :func:`lineage.admission.verify_training_input`
before it reads them, so a record that is not exactly signed and allowed never
reaches a model. Stages write metrics files for the evidence layer to log;
this package never talks to MLflow.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lineage._canonical import atomic_write, file_sha256, sha256_hex
from lineage.admission import verify_training_input
from lineage.errors import ArtifactDigestError, BadInputError, LineageError, ParamsError
from lineage.layout import LAYOUT, Layout, shard_name
from lineage.records import read_all
from lineage.signing import (
    Signer,
    load_trusted_keys,
    make_statement,
    parse_statement,
    read_envelope,
    sign_envelope,
    subjects_of,
    verify_envelope,
    write_envelope,
)
from training import checkpoints
from training.attest import attest_training, sign_model_dir
from training.config import TrainConfig
from training.partition import (
    assign,
    held_out,
    read_shard,
    shard_file,
    write_placed,
    write_shards,
)

PARTITION_TYPE = "https://exante.dev/attestations/partition/v1"


# The project layout; ``Paths`` is its former name here, kept for callers and tests.
Paths = Layout


class ShardIndexError(BadInputError):
    """A shard number outside ``0..shards-1``."""


# -- partition -----------------------------------------------------------------


def check_stage_list(root: Path, cfg: TrainConfig, dvc_file: Path = LAYOUT.dvc_file) -> None:
    """dvc.yaml must have one ``train`` stage per shard; a mismatch would leave shards untrained."""
    import yaml

    path = Path(root) / dvc_file
    if not path.is_file():
        return
    stage = (yaml.safe_load(path.read_text()) or {}).get("stages", {}).get("train", {})
    listed = stage.get("foreach")  # one stage per shard (older renderings)
    if listed is None and stage.get("outs"):  # one stage for all: an out per shard directory
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        listed = [int(Path(o).name[1:]) for o in outs]
    if listed is not None and list(listed) != list(range(cfg.shards)):
        raise ParamsError(
            f"{dvc_file}: stage train lists shards {listed}, but train.shards is {cfg.shards}; "
            f"run `exante pipeline` to render it for shards {list(range(cfg.shards))}"
        )


def run_partition(root: Path, cfg: TrainConfig, signer: Signer, paths: Layout = LAYOUT) -> dict:
    """Split the admitted records into the base corpus and S shards × R slices; sign it."""
    root = Path(root)
    check_stage_list(root, cfg)
    records = read_all(root / paths.records)
    admitted = verify_training_input(records, root=root, complete=True, skip_refused=True)
    allowed = set(admitted.record_ids)
    usable = [r for r in records if r.record_id in allowed]
    held = held_out(usable, admitted.holdout, seed=cfg.seed)
    base = [r for r in usable if r.record_id not in held and r.source_id in admitted.base_sources]
    rest = [
        r for r in usable if r.record_id not in held and r.source_id not in admitted.base_sources
    ]
    placements = assign(rest, shards=cfg.shards, slices=cfg.slices, seed=cfg.seed)
    counts = write_shards(rest, placements, shards=cfg.shards, out_dir=root / paths.shards)
    write_placed(root / paths.base_file(), [(0, r) for r in sorted(base)])
    write_placed(root / paths.holdout_file(), [(0, r) for r in usable if r.record_id in held])
    files = [paths.base_file(), paths.holdout_file()]
    files += [shard_file(paths.shards, s) for s in range(cfg.shards)]
    subjects = {f.as_posix(): file_sha256(root / f) for f in files}
    predicate = {
        "schema_version": 1,
        "seed": cfg.seed,
        "shards": cfg.shards,
        "slices": cfg.slices,
        "manifest_payload_sha256": admitted.manifest_payload_sha256,
        "decision_payload_sha256": admitted.decision_payload_sha256,
        # per source, the records (and their UTF-8 bytes) held out: allowed, never trained
        "held_out": _held_out_sizes(r for r in usable if r.record_id in held),
        "base_sources": list(admitted.base_sources),
        "counts": {
            "base": len(base),
            "holdout": len(held),
            **{shard_name(s): n for s, n in counts.items()},
        },
    }
    envelope = sign_envelope(make_statement(subjects, PARTITION_TYPE, predicate), signer)
    write_envelope(root / paths.partition, envelope)
    return predicate


def _held_out_sizes(records) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        entry = out.setdefault(r.source_id, {"records": 0, "bytes": 0})
        entry["records"] += 1
        entry["bytes"] += len(r.text.encode("utf-8"))
    return dict(sorted(out.items()))


def load_partition(root: Path, paths: Layout = LAYOUT) -> tuple[dict, dict[str, str], str]:
    """Verified partition: predicate, signed file digests, payload digest."""
    trusted = load_trusted_keys(Path(root) / paths.trusted)
    payload = verify_envelope(
        read_envelope(Path(root) / paths.partition, what="partition"), trusted
    )
    statement = parse_statement(payload, PARTITION_TYPE, what="partition")
    return statement["predicate"], subjects_of(statement), sha256_hex(payload)


def _admitted_file(root: Path, name: Path, paths: Layout):
    """A shard (or base) file whose digest the partition signed, with every record admitted.

    Returns the placed records and the admission (which carries the policy's DP budget).
    """
    _, subjects, _ = load_partition(root, paths)
    if subjects.get(name.as_posix()) != file_sha256(Path(root) / name):
        raise ArtifactDigestError(
            f"{name} differs from the signed partition; run `exante partition`"
        )
    placed = read_shard(Path(root) / name)
    admitted = verify_training_input([r for _, r in placed], root=Path(root))
    return placed, admitted


def check_privacy_config(cfg: TrainConfig, max_epsilon: float | None, unit: str) -> None:
    """Refuse to start a run the policy's DP requirement would reject anyway."""
    if max_epsilon is None:  # before importing training.dp: Opacus takes seconds to import
        return
    from training.dp import PrivacyBudgetError

    need = f"{unit}: the policy requires DP-SGD with epsilon ≤ {max_epsilon} for its sources"
    if not cfg.dp.enabled or not cfg.dp.poisson_sampling:
        raise PrivacyBudgetError(
            f"{need}; set train.dp.enabled: true and train.dp.poisson_sampling: true"
        )
    if cfg.dp.target_epsilon > max_epsilon:
        raise PrivacyBudgetError(
            f"{need}, but train.dp.target_epsilon is {cfg.dp.target_epsilon}; lower it"
        )


def check_privacy_spent(spent: dict | None, max_epsilon: float | None, unit: str) -> None:
    """After training: the composed epsilon of the whole shard must meet the policy."""
    if max_epsilon is None:
        return
    from training.dp import PrivacyBudgetError

    if not spent or spent.get("epsilon") is None or not spent["epsilon"] <= max_epsilon:
        got = "no epsilon" if not spent or spent.get("epsilon") is None else spent["epsilon"]
        raise PrivacyBudgetError(
            f"{unit}: the policy requires epsilon ≤ {max_epsilon}, the run spent {got}; "
            "the model is not released (lower train.dp.target_epsilon and retrain)"
        )


# -- training --------------------------------------------------------------------


def _write_metrics(path: Path, metrics: dict) -> None:
    atomic_write(path, json.dumps(metrics, indent=2, sort_keys=True).encode())


def _write_unit(root: Path, paths: Layout, out_dir: Path, unit: str, facts: dict, timings: dict):
    """The model's facts beside its weights; with the run's, in ``models/metrics/<unit>.json``.

    Wall-clock times change on every run, and which slices a run trained depends
    on the checkpoints it found: kept in the output directory, they would change
    its DVC hash and re-run every stage downstream of bit-identical weights.
    """
    _write_metrics(root / out_dir / "metrics.json", facts)
    _write_metrics(root / paths.unit_metrics(unit), facts | timings)
    return facts | timings


class UnadmittedModelError(BadInputError):
    """``train.model.local_path`` is not a pretrained model the signed gate decision admitted."""


def check_pretrained(cfg: TrainConfig, admitted) -> str | None:
    """The registry id of the admitted model ``train.model.local_path`` is, byte for byte.

    A pretrained model is a source like any other: registered under ``models:``
    with its license, terms and digest, judged by the gate, and trained on only
    when the signed decision admitted exactly these bytes. None: no pretrained model.
    """
    if not cfg.model.local_path:
        return None
    found = _pretrained_sha256(cfg.model.local_path)
    same = {mid: m for mid, m in admitted.models.items() if m.get("sha256") == found}
    for mid, m in sorted(same.items()):
        if m.get("allowed"):
            return mid
    if same:
        mid, m = sorted(same.items())[0]
        raise UnadmittedModelError(
            f"train.model.local_path {cfg.model.local_path} is the registered model {mid}, "
            "which the gate refused:", problems=list(m.get("reasons", ())) or ["no reason given"],
        )  # fmt: skip
    raise UnadmittedModelError(
        f"train.model.local_path {cfg.model.local_path} (sha256 {found}) is not a model the "
        f"gate admitted. Register it under `models:` in {LAYOUT.registry} (description, "
        f"location, license, terms, acquired, sha256: {found}) and run the gate again "
        "(`dvc repro`): a pretrained model passes the policy like any source"
    )


def run_train_base(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT, *, on_epoch=None) -> dict:
    root = Path(root)
    placed, admitted = _admitted_file(root, paths.base_file(), paths)
    check_pretrained(cfg, admitted)
    from training.sisa import train_base  # torch and transformers: the training stages alone

    start = time.perf_counter()
    ckpt = train_base([r for _, r in placed], cfg, root / paths.base / "model", on_epoch=on_epoch)
    epochs = ckpt.meta["epochs"]
    wall = time.perf_counter() - start
    trained = len(placed) if epochs else 0  # max_epochs 0 keeps the model as built
    facts = {"kind": "base", "records": trained, "epochs": epochs, "dp": None}
    return _write_unit(root, paths, paths.base, "base", facts, _timings(epochs, wall))


def _timings(epochs: list[dict], wall: float) -> dict:
    return {"wall_seconds": wall,
            "tokens_per_second": sum(e["tokens"] for e in epochs) / max(wall, 1e-9)}  # fmt: skip


def run_train_shard(
    root: Path, cfg: TrainConfig, shard: int, paths: Layout = LAYOUT, *, on_epoch=None
) -> dict:
    root = Path(root)
    if not 0 <= shard < cfg.shards:
        raise ShardIndexError(f"shard {shard} is outside 0..{cfg.shards - 1} (train.shards)")
    placed, admitted = _admitted_file(root, shard_file(paths.shards, shard), paths)
    max_epsilon = admitted.max_epsilon(r.source_id for _, r in placed)
    check_privacy_config(cfg, max_epsilon, f"shard {shard}")
    base = root / paths.base / "model"
    from training.sisa import dp_secret_for, train_shard  # torch and transformers

    secret = dp_secret_for(cfg, root)  # before any work: a missing secret is exit 3
    start = time.perf_counter()
    result = train_shard(shard, placed, cfg, base=base if base.is_dir() else None,
                         out_dir=root / paths.shard_dir(shard), dp_secret=secret,
                         on_epoch=on_epoch)  # fmt: skip
    wall = time.perf_counter() - start
    check_privacy_spent(result.dp, max_epsilon, f"shard {shard}")
    facts = {"kind": "shard", "shard": shard, "records": len(placed), "slices": result.slices,
             "dp": result.dp, "dp_noise": result.dp_noise}  # fmt: skip
    # what this run did depends on the checkpoints it found, not only on its inputs
    run = {
        "trained_slices": result.trained,
        "reused_slices": [r for r in range(cfg.slices) if r not in result.trained],
        "epochs": result.epochs,
        "slice_seconds": {str(r): sec for r, sec in sorted(result.seconds.items())},
    }
    return _write_unit(root, paths, paths.shard_dir(shard), shard_name(shard), facts,
                       _timings(result.epochs, wall) | run)  # fmt: skip


def shards_to_train(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT) -> list[int]:
    """The shards that would train a slice now; the others find every checkpoint.

    A shard whose file cannot be read counts as one to train: its own run then
    reports the problem (a digest mismatch, a malformed line). Imports torch (a
    checkpoint's address binds the device).
    """
    from training.sisa import dp_secret_for, missing_slices

    root = Path(root)
    base = root / paths.base / "model"
    try:
        secret = dp_secret_for(cfg, root)
    except LineageError:
        return list(range(cfg.shards))  # each shard's run says what is missing
    start = checkpoints.dir_digest(base) if base.is_dir() else "init"
    out = []
    for s in range(cfg.shards):
        try:
            placed = read_shard(root / shard_file(paths.shards, s))
        except (OSError, LineageError, ValueError, KeyError, TypeError):
            out.append(s)
            continue
        if missing_slices(placed, cfg, base=base if base.is_dir() else None, start=start,
                          out_dir=root / paths.shard_dir(s), dp_secret=secret):  # fmt: skip
            out.append(s)
    return out


def shard_pool(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT) -> dict:
    """How ``exante train shards`` runs its units (:func:`training.executor.run_units`).

    ``train.workers`` processes, except where at most one shard has a slice to
    train (after a deletion, usually): then this process, which spares the
    pool's start and every worker's imports. Ray runs as asked.
    """
    from training.executor import pool_of

    pool = pool_of(cfg)
    local = pool["executor"] == "local" and pool["workers"] > 1
    if local and len(shards_to_train(root, cfg, paths)) <= 1:
        pool["workers"] = 1
    return pool


# -- ensemble and attestation -------------------------------------------------------


def slice_dirs(root: Path, shard: int, paths: Layout = LAYOUT) -> list[Path]:
    """The checkpoint of every slice of a shard's current model, first to last."""
    shard_dir = Path(root) / paths.shard_dir(shard)
    slices = json.loads((shard_dir / checkpoints.SLICES_FILE).read_text())["slices"]
    return [shard_dir / "ckpt" / address for address in slices]


def final_dirs(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT) -> list[Path]:
    return [slice_dirs(root, s, paths)[-1] for s in range(cfg.shards)]


def released_dirs(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT) -> list[Path]:
    """The released shard models (``models/ensemble``), once the attestation verifies.

    Serving reads the release, not the shard directories: while a deletion
    retrains, the shard directories move on, but the previous signed release
    stays what is served until the attest stage replaces it. A release whose
    files do not match the signed attestation is refused.
    """
    from training.attest import verify_training_attestation

    root = Path(root)
    verify_training_attestation(
        root / paths.attestation, root=root, trusted=load_trusted_keys(root / paths.trusted)
    )
    return [root / paths.ensemble / shard_name(s) for s in range(cfg.shards)]


def released_ensemble(
    root: Path, cfg: TrainConfig, paths: Layout = LAYOUT, *, rule: str | None = None
):
    """The verified release as an :class:`~training.ensemble.Ensemble`, adapters on the base."""
    from training.ensemble import Ensemble
    from training.tokenizer import tokenizer_for

    dirs = released_dirs(root, cfg, paths)
    return Ensemble.from_dirs(dirs, rule=rule or cfg.ensemble, tokenizer=tokenizer_for(cfg.model),
                              base=Path(root) / paths.base / "model")  # fmt: skip


def build_ensemble_dir(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT) -> Path:
    """The released model: each shard's final weights and the aggregation rule, nothing else.

    With LoRA shards the frozen base is part of the release (``base/``, a copy, not
    a link, so nothing written to one can change the other): the adapters mean
    nothing without it, so the model signature covers both.
    """
    root, target = Path(root), Path(root) / paths.ensemble
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for s, src in enumerate(final_dirs(root, cfg, paths)):
        (tmp / shard_name(s)).mkdir(parents=True)
        for name in ("config.json", "generation_config.json", "model.safetensors",
                     "adapter_config.json", "adapter_model.safetensors"):  # fmt: skip
            if (src / name).exists():
                shutil.copy2(src / name, tmp / shard_name(s) / name)
    spec = {"schema_version": 1, "rule": cfg.ensemble, "shards": cfg.shards,
            "tokenizer": cfg.model.local_path or "bytes"}  # fmt: skip
    if cfg.shard.kind == "lora":
        base = root / paths.base / "model"
        shutil.copytree(base, tmp / "base")
        spec["base"] = "base"
    atomic_write(tmp / "ensemble.json", json.dumps(spec, indent=2, sort_keys=True).encode())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def run_attest(
    root: Path,
    cfg: TrainConfig,
    signer: Signer,
    *,
    key_path: Path,
    params: dict,
    paths: Layout = LAYOUT,
) -> dict:
    """Release the ensemble: sign it (OpenSSF model signing) and attest what it was trained on."""
    root = Path(root)
    partition, _, partition_sha = load_partition(root, paths)
    ensemble = build_ensemble_dir(root, cfg, paths)
    sign_model_dir(ensemble, private_key=signer, signature=root / paths.signature)
    files = {p.relative_to(root).as_posix(): p for p in checkpoints.model_files(ensemble)}
    files[paths.signature.as_posix()] = root / paths.signature
    base = root / paths.base / "model"
    files |= {p.relative_to(root).as_posix(): p for p in checkpoints.model_files(base)}
    for s in range(cfg.shards):
        for d in slice_dirs(root, s, paths):
            files |= {p.relative_to(root).as_posix(): p for p in checkpoints.model_files(d)}
    dp, noise = {}, {}
    for s in range(cfg.shards):
        metrics = json.loads((root / paths.shard_dir(s) / "metrics.json").read_text())
        dp[shard_name(s)] = metrics.get("dp")
        noise[shard_name(s)] = metrics.get("dp_noise")
    return attest_training(
        files, root=root, signer=signer, out=root / paths.attestation,
        manifest_sha256=partition["manifest_payload_sha256"],
        decision_sha256=partition["decision_payload_sha256"],
        partition_sha256=partition_sha, params=params, dp=dp,
        dp_noise=noise if cfg.dp.enabled else None,
        pretrained=pretrained_digest(cfg.model.local_path) if cfg.model.local_path else None,
    )  # fmt: skip


def _pretrained_sha256(local_path: str) -> str:
    """What the registry pins: the GGUF file's SHA-256, or the directory's digest."""
    from lineage.sources import model_digest
    from training._pretrained import locate

    where = locate(local_path)
    return model_digest(where.directory / where.gguf_file if where.gguf_file else where.directory)


def pretrained_digest(local_path: str) -> dict[str, str]:
    """The pretrained model's bytes as training found them: a GGUF file's sha256, or a
    checkpoint directory's digest (every file, by relative path)."""
    from lineage._canonical import file_sha256
    from training._pretrained import locate

    where = locate(local_path)
    if where.gguf_file:
        return {"path": local_path, "file_sha256": file_sha256(where.directory / where.gguf_file)}
    return {"path": local_path, "dir_digest": checkpoints.dir_digest(where.directory)}


# -- report: what the released ensemble knows ------------------------------------


def locate(root: Path, record_id: str, cfg: TrainConfig, paths: Layout = LAYOUT) -> dict | None:
    """Where a record sits in the signed partition: base, or shard and slice, and its models.

    Returns None when the record is in no partition file (refused, or not partitioned yet).
    """
    root = Path(root)
    if not (root / paths.partition).exists():
        return None
    _, subjects, _ = load_partition(root, paths)
    for name in subjects:
        for r, record in read_shard(root / name):
            if record.record_id != record_id:
                continue
            if name == paths.base_file().as_posix():
                return {"unit": "base", "slice": None, "models": [paths.base.as_posix()]}
            shard = int(Path(name).stem[1:])
            dirs = _slice_dirs_or_none(root, shard, paths)
            models = [d.relative_to(root).as_posix() for d in dirs]
            return {"unit": shard_name(shard), "shard": shard, "slice": r, "models": models[r:]}
    return None


def _slice_dirs_or_none(root: Path, shard: int, paths: Layout) -> list[Path]:
    try:
        return slice_dirs(root, shard, paths)
    except FileNotFoundError:
        return []


def run_report(root: Path, cfg: TrainConfig, paths: Layout = LAYOUT, *, samples: int = 3,
               probes: Path | None = None) -> dict:  # fmt: skip
    """Knowledge of the retained people (ensemble and each shard), sample generations,
    training cost, and the attestation's verdict; written to ``models/report.json``.

    Knowledge needs a probes file (``verify.probes``); without one it is ``None``
    (not measured, and the report says so).
    """
    from training.attest import verify_training_attestation
    from training.ensemble import Ensemble
    from training.knowledge import (
        ensemble_scorer,
        exact_match,
        model_scorer,
        probes_of,
        read_probes,
    )
    from training.tokenizer import tokenizer_for

    root = Path(root)
    tok, base = tokenizer_for(cfg.model), root / paths.base / "model"
    verify_training_attestation(
        root / paths.attestation, root=root, trusted=load_trusted_keys(root / paths.trusted)
    )
    names = ["base"] + [shard_name(s) for s in range(cfg.shards)]
    metrics = [json.loads((root / paths.unit_metrics(n)).read_text()) for n in names]
    report: dict = {
        "schema_version": 1,
        "rule": cfg.ensemble,
        "attestation": {"verified": True, "path": paths.attestation.as_posix()},
        "cost": {
            "wall_seconds": sum(m["wall_seconds"] for m in metrics),
            "tokens": sum(e["tokens"] for m in metrics for e in m["epochs"]),
            "epochs": {n: len(m["epochs"]) for n, m in zip(names, metrics, strict=True)},
        },
        "dp": {f"s{m['shard']:02d}": m["dp"] for m in metrics if m["kind"] == "shard"},
        "knowledge": None,
        "samples": [],
    }
    if probes is not None:
        placed = {s: read_shard(root / shard_file(paths.shards, s)) for s in range(cfg.shards)}
        dirs = final_dirs(root, cfg, paths)
        ensemble = Ensemble.from_dirs(dirs, rule=cfg.ensemble, tokenizer=tok, base=base)
        shard_of = {r.record_id: s for s, rows in placed.items() for _, r in rows}
        subject_shard = {x: s for s, rows in placed.items() for _, r in rows for x in r.subject_ids}
        every = read_probes(root / probes)
        # retained knowledge: probes cut from trained records, and record-less probes of
        # trained people
        probes = probes_of(every, records=shard_of, subjects=subject_shard)
        known = exact_match(ensemble_scorer(ensemble), probes, tokenizer=tok)
        per_shard = {}
        for s, model in enumerate(ensemble.models):  # the ensemble's own, loaded from dirs
            own = [p for p in probes
                   if shard_of.get(p.of, subject_shard.get(p.subject_id)) == s]  # fmt: skip
            scorer = model_scorer(model)
            per_shard[shard_name(s)] = exact_match(scorer, own, tokenizer=tok).exact_match
        report["knowledge"] = known.summary() | {"people": len({p.subject_id for p in probes}),
                                                 "shards_own_people": per_shard}  # fmt: skip
        for probe in _sample_probes(probes, samples):
            n = len(tok.encode(probe.answer, bos=False, eos=False)) + 8
            out = ensemble.generate(probe.prompt, max_new_tokens=n)
            report["samples"].append({"prompt": probe.prompt, "generated": out,
                                      "expected": probe.answer,
                                      "exact": out.startswith(probe.answer)})  # fmt: skip
    _write_metrics(root / paths.report, report)
    return report


def _sample_probes(probes, n: int):
    """One probe of each of the first ``n`` facts, from different people, deterministically."""
    chosen, facts, people = [], set(), set()
    for probe in sorted(probes, key=lambda p: p.record_id):
        if probe.fact not in facts and probe.subject_id not in people and len(chosen) < n:
            chosen.append(probe)
            facts.add(probe.fact)
            people.add(probe.subject_id)
    return chosen
