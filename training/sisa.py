"""Training one SISA shard slice by slice, and the shared base model beneath the shards.

Slice ``r`` continues from the checkpoint of slice ``r-1`` and trains on the
union of slices ``1..r`` until it converges (Bourtoule et al., S&P 2021); with
``shard.replay`` set, it trains its own records plus a per-epoch sample of the
earlier slices' windows instead (see :class:`training.config.Schedule`). Each
slice is seeded from ``(seed, shard, r)`` alone (with DP-SGD, its noise from
``(DP secret, shard, r)``; see :mod:`training.dp_secret`), so a slice's result
depends only on its start checkpoint and its data: retraining from the last
clean slice gives exactly the weights that training from scratch would.

The base model is trained once on the base corpus (public-domain sources that
hold no personal data); shards fine-tune from it. Records in the base are not
deletable by shard retraining, which is why only such sources may go there.

With ``train.shard.kind: lora`` the base is frozen and each shard trains one
LoRA adapter on it; a slice checkpoint is that adapter alone, addressed exactly
as a full one (the start digest is the base's). A deletion retrains the adapter
from its clean slice; the base, and whatever a pretrained model learned before
exante saw it, is untouched.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lineage._canonical import atomic_write, canonical_json, sha256_hex
from lineage.errors import ParamsError
from lineage.records import Record
from training import checkpoints
from training.config import Schedule, TrainConfig
from training.dp_secret import DPSecret, DPSecretError, dp_secret_path, load_dp_secret
from training.loop import EpochStats, make_optimizer, steps_per_epoch, train, windows
from training.model import build_model, device_of, load_model, set_determinism
from training.tokenizer import tokenizer_for

SLICES_FILE = checkpoints.SLICES_FILE
final_checkpoint = checkpoints.final_checkpoint


def config_digest(cfg: TrainConfig, schedule: Schedule, *, dp_commitment: str | None = None) -> str:
    """What a checkpoint's address binds besides its data: config and, with DP, the secret.

    ``dp_commitment`` (the DP secret's commitment) keeps a checkpoint trained
    under one secret from being reused under another. ``secure_mode`` enters
    only when on, so the addresses of existing checkpoints stay what they were.
    """
    # min_steps enters only when set, so the addresses of existing checkpoints stay what they were
    drop = {"min_steps"} if schedule.min_steps is None else set()
    keep = {"seed": cfg.seed, "model": cfg.model.model_dump(),
            "schedule": schedule.model_dump(exclude=drop)}  # fmt: skip
    keep["dp"] = cfg.dp.model_dump(exclude=set() if cfg.dp.secure_mode else {"secure_mode"})
    device = device_of(cfg).type
    if device != "cpu":  # other kernels, other bits; CPU addresses stay as they were
        keep["device"] = device
    if dp_commitment is not None:
        keep["dp_secret_commitment"] = dp_commitment
    return sha256_hex(canonical_json(keep))


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class ShardResult:
    shard: int
    slices: list[str]  # checkpoint address per slice
    trained: list[int] = field(default_factory=list)  # slices trained now (others reused)
    epochs: list[dict] = field(default_factory=list)
    seconds: dict[int, float] = field(default_factory=dict)  # wall time of each slice trained now
    dp: dict | None = None  # privacy spent by the whole chain of slices, when DP is on
    dp_noise: dict | None = None  # where the DP noise came from (a commitment, never the secret)

    @property
    def final(self) -> str:
        return self.slices[-1]


def train_base(
    records: Sequence[Record], cfg: TrainConfig, out_dir: Path, *, on_epoch=None
) -> checkpoints.Checkpoint:
    """The shared base model, trained on the base corpus (or left at its seeded init).

    ``base.max_epochs: 0`` trains nothing: the base is the model as built (a
    pretrained model's own weights), and its metadata says it saw no records.
    It trains alone, so on every core the shard workers would share (threads x workers).
    """
    if cfg.base.max_epochs == 0:
        records = []
    set_determinism(cfg, threads=cfg.threads * cfg.workers)
    tok = tokenizer_for(cfg.model)
    model = build_model(cfg.model, tok, seed=cfg.seed).to(device_of(cfg))
    optimizer = make_optimizer(model, cfg.base)
    examples = windows([r.text for r in sorted(records)], tok, cfg.model.n_positions)
    stats = []
    if examples:
        stats = train(model, optimizer, examples, cfg.base, seed=_seed(cfg.seed, "base"),
                      pad_id=tok.pad_id, on_epoch=on_epoch)  # fmt: skip
    meta = {
        "kind": "base",
        "config_digest": config_digest(cfg, cfg.base),
        "records_digest": sha256_hex(
            canonical_json(sorted((r.record_id, r.sha256) for r in records))
        ),
        "seed": cfg.seed,
        "epochs": [s.__dict__ for s in stats],
    }
    return checkpoints.save(Path(out_dir), model, optimizer, meta)


def train_shard(
    shard: int,
    placed: Sequence[tuple[int, Record]],
    cfg: TrainConfig,
    *,
    base: Path | None,
    out_dir: Path,
    dp_secret: DPSecret | None = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> ShardResult:
    """Train (or reuse) every slice checkpoint of one shard; return their addresses.

    With DP on (and not ``secure_mode``), ``dp_secret`` keys the noise; see
    :func:`dp_secret_for`.
    """
    set_determinism(cfg)
    tok = tokenizer_for(cfg.model)
    if cfg.shard.kind == "lora" and base is None:
        raise ParamsError(
            "train.shard.kind lora trains adapters on the base model: train the base first"
        )
    keyed = cfg.dp.enabled and not cfg.dp.secure_mode
    if keyed and dp_secret is None:
        raise DPSecretError(
            f"shard {shard}: DP-SGD needs the DP secret, which keys its noise and sampling; "
            "create it with `exante keys init --if-missing` (or point $EXANTE_DP_SECRET at yours)"
        )
    result = ShardResult(shard, [], dp_noise=dp_noise_entry(cfg, dp_secret))
    previous: checkpoints.Checkpoint | None = None
    for r, address in enumerate(slice_addresses(placed, cfg, base=base, dp_secret=dp_secret)):
        ckpt = checkpoints.Checkpoint(Path(out_dir) / "ckpt" / address[:32])
        if not ckpt.exists():
            _train_slice(
                shard, r, placed, cfg, tok, previous, base, ckpt, address, result, on_epoch,
                dp_secret,
            )  # fmt: skip
        result.slices.append(ckpt.path.name)
        previous = ckpt
    if cfg.dp.enabled:
        result.dp = compose_privacy(
            [checkpoints.Checkpoint(Path(out_dir) / "ckpt" / a).meta["dp"] for a in result.slices],
            delta=cfg.dp.delta,
        )
    atomic_write(
        Path(out_dir) / SLICES_FILE, canonical_json({"shard": shard, "slices": result.slices})
    )
    return result


def slice_addresses(
    placed: Sequence[tuple[int, Record]],
    cfg: TrainConfig,
    *,
    base: Path | None,
    dp_secret: DPSecret | None = None,
    start: str | None = None,
) -> list[str]:
    """The content address of each slice's checkpoint: what it saw, its config, its start.

    ``start``: the base's digest where the caller has it (it is the same for every shard).
    """
    keyed = cfg.dp.enabled and not cfg.dp.secure_mode
    commitment = dp_secret.commitment() if keyed and dp_secret is not None else None
    cdigest = config_digest(cfg, cfg.shard, dp_commitment=commitment)
    start = start or (checkpoints.dir_digest(base) if base else "init")
    seen = [[(s, rec.record_id, rec.sha256) for s, rec in placed if s <= r]
            for r in range(cfg.slices)]  # fmt: skip
    return [checkpoints.seen_digest(x, config_digest=cdigest, start_digest=start) for x in seen]


def missing_slices(
    placed: Sequence[tuple[int, Record]],
    cfg: TrainConfig,
    *,
    base: Path | None,
    out_dir: Path,
    dp_secret: DPSecret | None = None,
    start: str | None = None,
) -> list[int]:
    """The slices :func:`train_shard` would train now: those whose checkpoint is not there.

    Without the DP secret that keyed DP-SGD needs, every slice (training then
    stops with the secret's own message).
    """
    if cfg.dp.enabled and not cfg.dp.secure_mode and dp_secret is None:
        return list(range(cfg.slices))
    addresses = slice_addresses(placed, cfg, base=base, dp_secret=dp_secret, start=start)
    return [r for r, a in enumerate(addresses)
            if not checkpoints.Checkpoint(Path(out_dir) / "ckpt" / a[:32]).exists()]  # fmt: skip


def _train_slice(
    shard, r, placed, cfg, tok, previous, base, ckpt, address, result, on_epoch, dp_secret
):
    start, seen = time.perf_counter(), _records(placed, range(r + 1))
    model = _start_model(shard, cfg, tok, previous, base).to(device_of(cfg))
    fresh, earlier = _slice_data(placed, r, cfg, tok)
    n = len(fresh) + round((cfg.shard.replay or 0.0) * len(earlier))
    schedule = slice_schedule(cfg, r, steps_per_epoch(n, cfg.shard.batch_size))
    optimizer = make_optimizer(model, schedule)
    if previous is not None:
        checkpoints.load_optimizer_state(previous, optimizer)
    seed, hook = (
        _seed(cfg.seed, "shard", shard, r),
        (lambda s: on_epoch(r, s)) if on_epoch else None,
    )
    spent = None
    if cfg.dp.enabled:
        stats, spent = _train_private_slice(
            model, optimizer, fresh, cfg, schedule, seed, tok, hook,
            secret=dp_secret, shard=shard, slice_=r,
        )  # fmt: skip
    else:
        stats = train(model, optimizer, fresh, schedule, seed=seed, pad_id=tok.pad_id,
                      replay=earlier, on_epoch=hook)  # fmt: skip
    epochs = [{"slice": r, **s.__dict__} for s in stats]
    checkpoints.save(ckpt.path, model, optimizer, {
        "kind": "slice", "shard": shard, "slice": r, "address": address,
        "records": [x.record_id for x in seen],
        "data_digest": sha256_hex(canonical_json([(x.record_id, x.sha256) for x in seen])),
        "seed": cfg.seed, "config": cfg.model_dump(), "epochs": epochs,
        "dp": None if spent is None else spent.__dict__,
    })  # fmt: skip
    result.trained.append(r)
    result.epochs += epochs
    result.seconds[r] = time.perf_counter() - start


def _start_model(shard, cfg: TrainConfig, tok, previous, base) -> torch.nn.Module:
    """What a slice trains from: the previous slice, else the base (or a seeded init).

    With LoRA, the previous slice's adapter on the base, or a fresh adapter
    whose random half is seeded by ``(seed, shard)``, as a full shard's init is.
    """
    if cfg.shard.kind == "lora":
        from peft import PeftModel, get_peft_model

        if previous is not None:
            return PeftModel.from_pretrained(load_model(base), previous.path, is_trainable=True)
        torch.manual_seed(_seed(cfg.seed, "init", shard))
        model = get_peft_model(load_model(base), lora_config(cfg, base))
        return model
    if previous is not None:
        return load_model(previous.path)  # its optimizer state restores the generator
    if base is not None:
        # dropout draws from torch's global generator: seeded here, as an init is, so the
        # first slice's bits do not depend on what this process (a pool worker) ran before
        torch.manual_seed(_seed(cfg.seed, "init", shard))
        return load_model(base)
    return build_model(cfg.model, tok, seed=_seed(cfg.seed, "init", shard))


def lora_config(cfg: TrainConfig, base: Path):
    """peft's LoraConfig for ``train.shard.lora``; the adapter names its base directory."""
    from peft import LoraConfig

    lora = cfg.shard.lora
    targets = list(lora.target_modules) if lora.target_modules else None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, base_model_name_or_path=str(base),
                      task_type="CAUSAL_LM")  # fmt: skip


def _records(placed, slices) -> list[Record]:
    wanted = set(slices)
    return sorted((rec for s, rec in placed if s in wanted), key=lambda x: x.record_id)


def _slice_data(placed, r: int, cfg: TrainConfig, tok) -> tuple[list, list]:
    """Slice r's training windows and its replay pool.

    Without replay: every record of slices 0..r, nothing to replay. With it: the
    records of slice r alone, and the earlier slices' windows to sample from.
    """
    block = cfg.model.n_positions
    if cfg.shard.replay is None:
        return windows([x.text for x in _records(placed, range(r + 1))], tok, block), []
    fresh = windows([x.text for x in _records(placed, [r])], tok, block)
    return fresh, windows([x.text for x in _records(placed, range(r))], tok, block)


def slice_schedule(cfg: TrainConfig, r: int, steps_per_epoch: int | None = None) -> Schedule:
    """The shard schedule, with a fixed ``slice_epochs`` for every slice but the last.

    With ``replay`` every slice trains its fresh records to convergence: the full schedule.
    With ``slice_work: equal`` slice r may train :func:`slice_epochs_equal` epochs.
    Given the slice's ``steps_per_epoch``, a cap that allows fewer than
    ``shard.min_steps`` steps is raised to allow them (not for fixed-epoch
    slices; DP-SGD, whose epochs are its privacy budget, refuses the setting).
    """
    fixed = cfg.shard.slice_epochs
    if cfg.shard.slice_work == "equal":
        schedule = cfg.shard.model_copy(update={"max_epochs": slice_epochs_equal(cfg, r)})
    elif fixed is None or r == cfg.slices - 1:
        schedule = cfg.shard
    else:
        return cfg.shard.model_copy(update={"max_epochs": fixed, "min_epochs": fixed})
    floor = cfg.shard.min_steps
    if floor is None or steps_per_epoch is None or cfg.dp.enabled:
        return schedule
    epochs = -(-floor // max(steps_per_epoch, 1))
    if epochs <= schedule.max_epochs:
        return schedule
    return schedule.model_copy(update={"max_epochs": epochs})


def slice_epochs_equal(cfg: TrainConfig, r: int) -> int:
    """``max_epochs × R / (r + 1)``, rounded: slice r's epochs for equal work per slice."""
    return max(1, round(cfg.shard.max_epochs * cfg.slices / (r + 1)))


def _train_private_slice(model, optimizer, examples, cfg: TrainConfig, schedule, seed, tok, hook,
                         *, secret, shard, slice_):  # fmt: skip
    """DP-SGD for one slice run, with 1/R of the shard's budget.

    Slice r trains on slices 1..r, so a record of the first slice takes part in
    all R runs; giving each run ``target_epsilon / R`` keeps the composition
    within the target (and :func:`compose_privacy` reports the tighter RDP sum).
    """
    from training.dp import train_private

    dp = cfg.dp.model_copy(update={"target_epsilon": cfg.dp.target_epsilon / cfg.slices})
    return train_private(model, optimizer, examples, schedule, dp=dp, seed=seed, pad_id=tok.pad_id,
                         secret=secret, shard=shard, slice_=slice_, on_epoch=hook)  # fmt: skip


def dp_secret_for(cfg: TrainConfig, root: Path) -> DPSecret | None:
    """The project's DP secret when DP-SGD needs one (on, not secure mode), else None.

    Loaded before any training starts, so a missing secret is a bad input (exit 3)
    that tells the operator to run `exante keys init`, not a failure mid-shard.
    """
    if not cfg.dp.enabled or cfg.dp.secure_mode:
        return None
    return load_dp_secret(dp_secret_path(root))


def dp_noise_entry(cfg: TrainConfig, secret: DPSecret | None) -> dict | None:
    """What the attestation says about the noise: its generator and the secret's commitment."""
    if not cfg.dp.enabled:
        return None
    if cfg.dp.secure_mode:
        return {"generator": "opacus-secure-mode-csprng", "replayable": False}
    return {
        "generator": "torch-keyed-hmac-sha256",
        "replayable": True,
        "secret_commitment": secret.commitment(),
    }


def compose_privacy(spent: Sequence[dict | None], *, delta: float) -> dict | None:
    """The (epsilon, delta) of the whole chain of slice runs, by the accountant's composition."""
    from opacus.accountants import create_accountant

    if not spent or any(s is None or s["epsilon"] is None for s in spent):
        return None  # a run without a guarantee voids the chain's guarantee
    accountant = create_accountant(spent[0]["accountant"])
    accountant.history = [(s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in spent]
    return {
        "epsilon": float(accountant.get_epsilon(delta)),
        "delta": delta,
        "accountant": spent[0]["accountant"],
    }
