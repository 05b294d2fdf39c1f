"""Benchmark: exante's shard training against a plain ``torch.compile``d loop of the same model.

Side by side in one run, on the same windows of the same synthetic text:

(a) exante: ``training.sisa.train_shard`` (one slice, a fixed number of epochs),
    with its deterministic set-up, bf16 autocast on CUDA, checkpointing and
    content addressing: what a shard costs in the pipeline;
(b) the baseline: the model as ``build_model`` makes it, ``torch.compile``d
    (``--backend``, default inductor), trained by a bare loop (AdamW, the same
    batches, bf16 autocast on CUDA), timed after a warm-up step that pays the
    compilation (reported apart).

It prints tokens/s of each and the ratio (a)/(b). ``--device cuda`` is the
measurement the issue asks for (GPT-2 124M-sized: ``--n-layer 12 --n-embd 768
--n-head 12``); on CPU, ``--tiny`` runs it at test size (the default suite does,
with ``--backend aot_eager``: compiling C++ kernels would take a minute).

    python bench/bench_shard_throughput.py --device cuda --n-layer 12 --n-head 12 --n-embd 768
    python bench/bench_shard_throughput.py --tiny --backend aot_eager
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from lineage.records import Record
from training.config import ModelConfig, Schedule, TrainConfig
from training.loop import autocast, batches, collate, make_optimizer, windows
from training.model import build_model, device_of, set_determinism
from training.sisa import train_shard
from training.tokenizer import tokenizer_for

WORDS = [
    "harbour",
    "lantern",
    "copper",
    "kettle",
    "walnut",
    "saddle",
    "ember",
    "quill",
    "thistle",
    "marble",
]


def records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    return [
        Record.make(
            f"bench/r{i:05d}",
            "bench",
            [f"p{i:05d}"],
            " ".join(rng.choice(WORDS) for _ in range(40)) + ".",
        )
        for i in range(n)
    ]


def config(args) -> TrainConfig:
    model = ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                        n_positions=args.seq_len)  # fmt: skip
    schedule = Schedule(lr=1e-3, batch_size=args.batch_size, max_epochs=args.epochs,
                        min_epochs=args.epochs, target_loss=0.0)  # fmt: skip
    return TrainConfig(shards=1, slices=1, threads=args.threads, device=args.device, model=model,
                       base=schedule, shard=schedule)  # fmt: skip


def exante_run(cfg: TrainConfig, recs: list[Record], out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    result = train_shard(0, [(0, r) for r in recs], cfg, base=None, out_dir=out)
    seconds = time.perf_counter() - start
    assert result.trained == [0], result
    return seconds, sum(e["tokens"] for e in result.epochs)


def compiled_run(cfg: TrainConfig, recs: list[Record], backend: str) -> tuple[float, int, float]:
    """(seconds after warm-up, tokens trained after warm-up, warm-up seconds)."""
    set_determinism(cfg)
    tok = tokenizer_for(cfg.model)
    device = device_of(cfg)
    model = build_model(cfg.model, tok, seed=cfg.seed).to(device)
    model.train()
    optimizer = make_optimizer(model, cfg.shard)
    step = torch.compile(model, backend=backend)
    examples = windows([r.text for r in sorted(recs)], tok, cfg.model.n_positions)

    def one(batch) -> int:
        with autocast(device):
            loss = step(**{k: t.to(device) for k, t in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int((batch["labels"][:, 1:] != -100).sum())

    gen = torch.Generator().manual_seed(0)
    size = cfg.shard.batch_size
    plan = [collate([examples[j] for j in g], tok.pad_id)
            for _ in range(cfg.shard.max_epochs) for g in batches(examples, size, gen)]  # fmt: skip
    start = time.perf_counter()
    one(plan[0])  # compiles
    _sync(device)
    warm = time.perf_counter() - start
    start, tokens = time.perf_counter(), 0
    for batch in plan[1:]:
        tokens += one(batch)
    _sync(device)
    return time.perf_counter() - start, tokens, warm


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of the baseline")
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="test size: 24 records, 2 epochs, 1 layer")
    args = ap.parse_args(argv)
    if args.tiny:
        args.records, args.epochs, args.batch_size, args.seq_len = 24, 2, 4, 32
        args.n_layer, args.n_head, args.n_embd, args.threads = 1, 2, 32, 1
    cfg = config(args)
    recs = records(args.records)
    print(f"device {device_of(cfg)}, model {args.n_layer}x{args.n_embd}, {args.records} records, "
          f"{args.epochs} epochs, batch {args.batch_size} x {args.seq_len}, "
          f"baseline backend {args.backend}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        a_s, a_tok = exante_run(cfg, recs, Path(tmp) / "shard")
    b_s, b_tok, warm = compiled_run(cfg, recs, args.backend)
    a_rate, b_rate = a_tok / a_s, b_tok / b_s
    print(f"(a) exante train_shard   {a_rate:12,.0f} tokens/s ({a_tok:,} tokens, {a_s:.2f} s, "
          "set-up and checkpoint included)")  # fmt: skip
    print(f"(b) torch.compile loop   {b_rate:12,.0f} tokens/s ({b_tok:,} tokens, {b_s:.2f} s, "
          f"after a {warm:.2f} s warm-up step)")  # fmt: skip
    print(f"ratio (a)/(b): {a_rate / b_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
