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

Each writes into a temporary sibling and renames it into place, so an
interrupted run publishes nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json
from lineage.errors import BadInputError
from lineage.ledger import LEDGER
from lineage.stages import ledger_denials
from training import checkpoints
from training.config import TrainConfig
from training.model import load_model, set_determinism
from training.sisa import dp_secret_for, final_checkpoint, train_shard
from training.stages import Paths
from training.tokenizer import ByteTokenizer
from verify.forget import ForgetSet

VERIFY_MODELS = Path("models/verify")


def _publish(tmp: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _fresh(target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _base(root: Path, paths: Paths) -> Path | None:
    base = Path(root) / paths.base / "model"
    return base if base.is_dir() else None


def build_retrain(root: Path, cfg: TrainConfig, fs: ForgetSet, paths: Paths = Paths()) -> dict:
    """Train the forget shard from scratch without the forget set; publish models/verify/retrain."""
    set_determinism(cfg)
    target = Path(root) / VERIFY_MODELS / "retrain"
    tmp = _fresh(target)
    start = time.perf_counter()
    result = train_shard(fs.shard, fs.remaining(), cfg, base=_base(root, paths), out_dir=tmp,
                         dp_secret=dp_secret_for(cfg, Path(root)))  # fmt: skip
    info = _info("retrain", fs, result, time.perf_counter() - start)
    _write_info(tmp, info)
    _publish(tmp, target)
    return info


def build_exact(root: Path, cfg: TrainConfig, fs: ForgetSet, paths: Paths = Paths()) -> dict:
    """Delete the forget set from a scratch copy of the forget shard, as ``exante delete`` does."""
    set_determinism(cfg)
    root = Path(root)
    target = root / VERIFY_MODELS / "exact"
    tmp = _fresh(target)
    src = root / paths.shard_dir(fs.shard) / "ckpt"
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is missing: train the shards (dvc repro) before verifying")
    shutil.copytree(src, tmp / "ckpt")
    # checkpoints that saw a record the ledger denies are never reused, nor kept here
    checkpoints.prune(tmp / "ckpt", ledger_denials(root / LEDGER).records, keep=())
    start = time.perf_counter()
    result = train_shard(fs.shard, fs.remaining(), cfg, base=_base(root, paths), out_dir=tmp,
                         dp_secret=dp_secret_for(cfg, root))  # fmt: skip
    for d in (tmp / "ckpt").iterdir():  # keep the chain the exact model came from, no more
        if d.name not in result.slices:
            shutil.rmtree(d)
    info = _info("exact", fs, result, time.perf_counter() - start)
    _write_info(tmp, info)
    _publish(tmp, target)
    return info


def _info(kind: str, fs: ForgetSet, result, wall: float) -> dict:
    return {
        "kind": kind, "shard": fs.shard, "forget_people": list(fs.forget_people),
        "records": len(fs.remaining()), "trained_slices": result.trained,
        "slices": result.slices, "wall_seconds": wall,
        "tokens": sum(e["tokens"] for e in result.epochs),
    }  # fmt: skip


def build_approx(
    root: Path, cfg: TrainConfig, fs: ForgetSet, method: str, settings, paths: Paths = Paths()
) -> dict:
    """Unlearn the forget set from the released forget-shard model with ``method``."""
    from verify.unlearn import unlearn

    set_determinism(cfg)
    root = Path(root)
    target = root / VERIFY_MODELS / "approx" / method
    tmp = _fresh(target)
    original = load_model(root / paths.ensemble / f"s{fs.shard:02d}")
    start = time.perf_counter()
    model, report = unlearn(
        method, original, [t.text for t in fs.forget],
        [r.text for _, r in fs.remaining()], settings,
        n_positions=cfg.model.n_positions, tokenizer=ByteTokenizer(),
    )  # fmt: skip
    model.save_pretrained(tmp / "model")
    info = {"kind": f"approx:{method}", "shard": fs.shard, "forget_people": list(fs.forget_people),
            "wall_seconds": time.perf_counter() - start, "report": _plain(report)}  # fmt: skip
    _write_info(tmp, info)
    _publish(tmp, target)
    return info


class MethodListError(BadInputError):
    """dvc.yaml's verify_approx stages and ``verify.methods`` disagree."""


def check_method_list(root: Path, methods, dvc_file: str = "dvc.yaml") -> None:
    """One ``verify_approx`` stage per method, or a method would be judged without its model."""
    import yaml

    path = Path(root) / dvc_file
    if not path.is_file():
        return
    stage = (yaml.safe_load(path.read_text()) or {}).get("stages", {}).get("verify_approx", {})
    listed = stage.get("foreach")
    if listed is not None and list(listed) != list(methods):
        raise MethodListError(
            f"{dvc_file}: stage verify_approx lists methods {listed}, but verify.methods is "
            f"{list(methods)}; set its foreach to {list(methods)}"
        )


def _write_info(tmp: Path, info: dict) -> None:
    """``baseline.json`` without its wall time: the verify stage depends on it (models/verify),
    and a time that differs on every run would re-run it for bit-identical models."""
    published = {k: v for k, v in info.items() if k != "wall_seconds"}
    atomic_write(tmp / "baseline.json", canonical_json(published))


def _plain(report) -> dict:
    data = report.__dict__ if hasattr(report, "__dict__") else dict(report)
    return json.loads(json.dumps(data, default=str))


def info_file(root: Path, name: str) -> Path:
    """The ``baseline.json`` a baseline subject was published with."""
    base = Path(root) / VERIFY_MODELS
    if name.startswith("approx:"):
        return base / "approx" / name.split(":", 1)[1] / "baseline.json"
    return base / name / "baseline.json"


def model_dir(root: Path, name: str) -> Path:
    """The forget-shard model of a baseline subject: ``retrain``, ``exact`` or ``approx:<m>``."""
    base = Path(root) / VERIFY_MODELS
    if name.startswith("approx:"):
        return base / "approx" / name.split(":", 1)[1] / "model"
    return final_checkpoint(base / name)
