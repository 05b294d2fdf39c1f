"""The reference and contrast models a verification compares the release against.

- ``retrain``: the forget shard trained from scratch (from the shared base) on
  its records without the forget set: the gold standard. The other shards
  never saw the forget set, and training is deterministic, so retraining them
  would give the same bits; they are taken as released.
- ``exact``: the deletion code path (``training.sisa.train_shard`` with the
  release's checkpoints) run in a scratch copy of the shard's checkpoint
  directory: it reuses every slice that never saw a forgotten record and
  retrains from the first that did, exactly as ``exante delete`` does, while
  the production model is never touched.
- ``approx/<method>``: the released forget-shard model, post-hoc unlearned on
  the forget set with a utility constraint (:mod:`verify.unlearn`).

- ``calib:<seed>``: ``retrain`` with another training seed (the shared base
  stays the released one): with the reference, the null envelope of a clean
  retrain (``calibration.references`` in the policy, seeds from
  :mod:`verify.seeds`).
- ``heldout``: ``retrain`` with a seed calibration never saw: a clean model
  the power control requires to pass.
- ``planted``: ``retrain`` with exactly one forget record left in (chosen by a
  key, ``verify.seed``): a leak the power control requires to fail.

Each writes into a temporary sibling and renames it into place, so an
interrupted run publishes nothing. :func:`build` is the front door: it checks
the registration first and stamps ``baseline.json`` with the params, code and
inputs (:mod:`verify.provenance`); :func:`check_fresh` refuses a baseline
whose stamp differs from the current one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json, file_sha256, sha256_hex
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout
from lineage.ledger import LEDGER
from lineage.stages import ledger_denials
from training import checkpoints
from training.config import TrainConfig
from training.partition import shard_file
from training.tokenizer import tokenizer_for
from verify import provenance
from verify.forget import ForgetSet
from verify.seeds import calibration_seeds, heldout_seed, keyed_choice

VERIFY_MODELS = LAYOUT.verify_models


class BaselineNameError(BadInputError):
    """Not a baseline name: retrain, exact, approx:<m>, calib:<seed>, heldout or planted."""


def _publish(tmp: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _fresh(target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _base(root: Path, paths: Layout) -> Path | None:
    base = Path(root) / paths.base / "model"
    return base if base.is_dir() else None


def _finish(tmp: Path, target: Path, info: dict, stamp: dict | None) -> dict:
    info = info | ({"provenance": stamp} if stamp else {})
    atomic_write(tmp / "baseline.json", canonical_json(info))
    _publish(tmp, target)
    return info


def _train(root: Path, name: str, cfg: TrainConfig, fs: ForgetSet, placed, paths: Layout,
           stamp: dict | None, **extra) -> dict:  # fmt: skip
    """Train the forget shard from the shared base on ``placed``; publish it as ``name``."""
    from training.model import set_determinism
    from training.sisa import dp_secret_for, train_shard

    set_determinism(cfg)
    target = _dir(root, name)
    tmp = _fresh(target)
    result = train_shard(fs.shard, placed, cfg, base=_base(root, paths), out_dir=tmp,
                         dp_secret=dp_secret_for(cfg, Path(root)))  # fmt: skip
    info = _info(name, fs, result, len(placed)) | {"train_seed": cfg.seed, **extra}
    return _finish(tmp, target, info, stamp)


def build_retrain(root: Path, cfg: TrainConfig, fs: ForgetSet, paths: Layout = LAYOUT, *,
                  stamp: dict | None = None) -> dict:  # fmt: skip
    """Train the forget shard from scratch without the forget set; publish models/verify/retrain."""
    return _train(root, "retrain", cfg, fs, fs.remaining(), paths, stamp)


def build_calib(root: Path, cfg: TrainConfig, fs: ForgetSet, seed: int, paths: Layout = LAYOUT,
                *, stamp: dict | None = None) -> dict:  # fmt: skip
    """``retrain`` with training seed ``seed``: one more draw of a clean retrain."""
    cfg = cfg.model_copy(update={"seed": seed})
    return _train(root, f"calib:{seed}", cfg, fs, fs.remaining(), paths, stamp)


def build_heldout(root: Path, cfg: TrainConfig, fs: ForgetSet, paths: Layout = LAYOUT, *,
                  stamp: dict | None = None) -> dict:  # fmt: skip
    """``retrain`` with the held-out seed, which calibration never uses."""
    cfg = cfg.model_copy(update={"seed": heldout_seed(cfg.seed)})
    return _train(root, "heldout", cfg, fs, fs.remaining(), paths, stamp)


def planted_record(fs: ForgetSet, key: int) -> str:
    """The forget record the planted leak keeps: keyed by ``key``, one with a probed fact if any."""
    probed = sorted({p.of for p in fs.forget_probes if p.of in fs.forget_record_ids})
    return keyed_choice(key, probed or sorted(fs.forget_record_ids))


def planted_set(fs: ForgetSet, record_id: str) -> list:
    """What a retrain sees, plus ``record_id`` in the slice it was placed in."""
    gone = fs.forget_record_ids - {record_id}
    return [(s, r) for s, r in fs.placed if r.record_id not in gone]


def build_planted(root: Path, cfg: TrainConfig, fs: ForgetSet, key: int, paths: Layout = LAYOUT,
                  *, stamp: dict | None = None) -> dict:  # fmt: skip
    """``retrain`` with one forget record left in: a single-record leak that must be caught."""
    record = planted_record(fs, key)
    return _train(root, "planted", cfg, fs, planted_set(fs, record), paths, stamp,
                  planted_record=record)  # fmt: skip


def build_exact(root: Path, cfg: TrainConfig, fs: ForgetSet, paths: Layout = LAYOUT, *,
                stamp: dict | None = None) -> dict:  # fmt: skip
    """Delete the forget set from a scratch copy of the forget shard, as ``exante delete`` does."""
    from training.model import set_determinism
    from training.sisa import dp_secret_for, train_shard

    set_determinism(cfg)
    root = Path(root)
    target = _dir(root, "exact")
    tmp = _fresh(target)
    src = root / paths.shard_dir(fs.shard) / "ckpt"
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is missing: train the shards (dvc repro) before verifying")
    shutil.copytree(src, tmp / "ckpt")
    # checkpoints that saw a record the ledger denies are never reused, nor kept here
    checkpoints.prune(tmp / "ckpt", ledger_denials(root / LEDGER).records, keep=())
    result = train_shard(fs.shard, fs.remaining(), cfg, base=_base(root, paths), out_dir=tmp,
                         dp_secret=dp_secret_for(cfg, root))  # fmt: skip
    for d in (tmp / "ckpt").iterdir():  # keep the chain the exact model came from, no more
        if d.name not in result.slices:
            shutil.rmtree(d)
    return _finish(tmp, target, _info("exact", fs, result, len(fs.remaining())), stamp)


def _info(kind: str, fs: ForgetSet, result, records: int) -> dict:
    """What was built; no wall-clock time, so rebuilding it gives the same bytes."""
    return {
        "kind": kind, "shard": fs.shard, "forget_people": list(fs.forget_people),
        "records": records, "trained_slices": result.trained, "slices": result.slices,
        "tokens": sum(e["tokens"] for e in result.epochs),
    }  # fmt: skip


def build_approx(
    root: Path, cfg: TrainConfig, fs: ForgetSet, method: str, settings, paths: Layout = LAYOUT,
    *, stamp: dict | None = None,
) -> dict:  # fmt: skip
    """Unlearn the forget set from the released forget-shard model with ``method``."""
    from training.model import load_model, set_determinism
    from verify.unlearn import unlearn

    set_determinism(cfg)
    root = Path(root)
    target = _dir(root, f"approx:{method}")
    tmp = _fresh(target)
    original = load_model(root / paths.ensemble / f"s{fs.shard:02d}", merge=True)
    model, report = unlearn(
        method, original, [t.text for t in fs.forget],
        [r.text for _, r in fs.remaining()], settings,
        n_positions=cfg.model.n_positions, tokenizer=tokenizer_for(cfg.model),
    )  # fmt: skip
    model.save_pretrained(tmp / "model")
    info = {"kind": f"approx:{method}", "shard": fs.shard, "forget_people": list(fs.forget_people),
            "report": _plain(report)}  # fmt: skip
    return _finish(tmp, target, info, stamp)


class MethodListError(BadInputError):
    """dvc.yaml's approx baselines and ``verify.methods`` disagree."""


def check_method_list(root: Path, methods, dvc_file: Path = LAYOUT.dvc_file) -> None:
    """One approx baseline per method, or a method would be judged without its model."""
    import yaml

    path = Path(root) / dvc_file
    if not path.is_file():
        return
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    listed = stages.get("verify_approx", {}).get("foreach")  # older renderings: a stage each
    if "verify_baselines" in stages:
        outs = [next(iter(o)) if isinstance(o, dict) else o
                for o in stages["verify_baselines"].get("outs", [])]  # fmt: skip
        listed = [o.split("/approx/", 1)[1] for o in outs if "/approx/" in o]
    if listed is not None and list(listed) != list(methods):
        raise MethodListError(
            f"{dvc_file}: the baselines stage lists methods {listed}, but verify.methods is "
            f"{list(methods)}; run `exante pipeline` to render it for these methods"
        )


def _plain(report) -> dict:
    data = report.__dict__ if hasattr(report, "__dict__") else dict(report)
    return json.loads(json.dumps(data, default=str))


# -- names, directories and what the params and policy require ------------------------

_FIXED = ("retrain", "exact", "heldout", "planted")


def _parse(name: str) -> tuple[str, str | None]:
    """``(kind, argument)`` of a baseline name; an unknown name is bad input."""
    kind, _, arg = name.partition(":")
    ok = (kind in _FIXED and not arg) or (kind == "approx" and arg) or (
        kind == "calib" and arg.isdigit())  # fmt: skip
    if not ok:
        raise BaselineNameError(
            f"{name!r} is not a baseline: retrain, exact, approx:<method>, calib:<seed>, "
            "heldout or planted"
        )
    return kind, arg or None


def _dir(root: Path, name: str) -> Path:
    kind, arg = _parse(name)
    return Path(root) / VERIFY_MODELS / kind / arg if arg else Path(root) / VERIFY_MODELS / kind


def info_file(root: Path, name: str) -> Path:
    """The ``baseline.json`` a baseline subject was published with."""
    return _dir(root, name) / "baseline.json"


def model_dir(root: Path, name: str) -> Path:
    """The forget-shard model of a baseline subject (any name :func:`required` lists)."""
    if _parse(name)[0] == "approx":
        return _dir(root, name) / "model"
    return checkpoints.final_checkpoint(_dir(root, name))


def calibration_names(params, policy) -> list[str]:
    k = getattr(policy, "policy", policy).calibration.references
    return [f"calib:{s}" for s in calibration_seeds(params.train.seed, k)]


def required(params, policy) -> list[str]:
    """Every baseline a verification under ``params`` and ``policy`` (or its LoadedPolicy) loads."""
    return ["retrain", "exact", *(f"approx:{m}" for m in params.verify.methods),
            *calibration_names(params, policy), "heldout", "planted"]  # fmt: skip


# -- provenance: build stamped, refuse stale -----------------------------------------


def inputs_of(root: Path, name: str, fs: ForgetSet, paths: Layout = LAYOUT) -> dict[str, str]:
    """The digests of the files a baseline is built from (and of the forget set's ids)."""
    root = Path(root)
    base = _base(root, paths)
    out = {
        "shard_records": file_sha256(root / shard_file(paths.shards, fs.shard)),
        "base_model": checkpoints.dir_digest(base) if base else "none",
        "forget_set": sha256_hex(canonical_json(fs.digest_inputs())),
    }
    kind = _parse(name)[0]
    if kind == "exact":
        out["released_checkpoint"] = checkpoints.dir_digest(
            checkpoints.final_checkpoint(root / paths.shard_dir(fs.shard)))  # fmt: skip
    elif kind == "approx":
        out["released_model"] = checkpoints.dir_digest(root / paths.ensemble / f"s{fs.shard:02d}")
    return out


def build(root: Path, name: str, params, policy, fs: ForgetSet, paths: Layout = LAYOUT) -> dict:
    """Build one baseline under the signed registration and stamp what it was built from."""
    provenance.check_registration(root, policy, params=params)
    stamp = provenance.stamp(root, params, inputs_of(root, name, fs, paths))
    kind, arg = _parse(name)
    cfg, v = params.train, params.verify
    if kind == "approx":
        return build_approx(root, cfg, fs, arg, v.unlearn, paths, stamp=stamp)
    if kind == "calib":
        return build_calib(root, cfg, fs, int(arg), paths, stamp=stamp)
    if kind == "planted":
        return build_planted(root, cfg, fs, v.seed, paths, stamp=stamp)
    builders = {"retrain": build_retrain, "exact": build_exact, "heldout": build_heldout}
    return builders[kind](root, cfg, fs, paths, stamp=stamp)


def stale(root: Path, name: str, params, fs: ForgetSet, paths: Layout = LAYOUT) -> list[str]:
    """Why ``name`` cannot be judged as built (missing, or what differs); empty when fresh."""
    path = info_file(root, name)
    if not path.is_file():
        return [f"{path.parent} is missing"]
    try:
        recorded = json.loads(path.read_text()).get("provenance")
    except (ValueError, AttributeError):
        return [f"{path} is not a baseline record (not a JSON object)"]
    if not (Path(root) / provenance.REGISTRATION).is_file():
        return [f"{provenance.REGISTRATION} is missing"]
    current = provenance.stamp(root, params, inputs_of(root, name, fs, paths))
    return provenance.differences(recorded, current)


def check_fresh(root: Path, name: str, params, policy, fs: ForgetSet,
                paths: Layout = LAYOUT) -> None:  # fmt: skip
    """Refuse (exit 3) a baseline built under other params, code, inputs or registration.

    The registration itself is checked first: a policy edited since it was
    registered makes every baseline unusable, fresh or not.
    """
    provenance.check_registration(root, policy, params=params)
    if name not in required(params, policy):
        raise BaselineNameError(f"{name} is not a baseline these params and policy require")
    why = stale(root, name, params, fs, paths)
    if why:
        raise provenance.StaleBaselineError(
            f"baseline {name} ({info_file(root, name).parent}) is stale: it was not built from "
            "the current params, code, inputs and registration. Rebuild it: `dvc repro`, or "
            "`exante verify`, which rebuilds stale baselines:",
            problems=[f"{name}: {w}" for w in why],
        )
