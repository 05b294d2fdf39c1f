"""Models: a tiny GPT-2 built from config (never downloaded), or a local HF causal-LM directory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from lineage.errors import ParamsError
from training.config import ModelConfig, TrainConfig
from training.tokenizer import ByteTokenizer

hf_logging.disable_progress_bar()  # per-checkpoint bars drown the per-shard progress
hf_logging.set_verbosity_error()  # config chatter (e.g. loss_type=None) is not news to a user


def set_determinism(cfg: TrainConfig, *, threads: int | None = None) -> None:
    """Same seed, same threads, deterministic kernels: the same shard trains to the same bits.

    ``threads`` overrides ``cfg.threads`` for a unit that always trains alone (the base).
    """
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads or cfg.threads)


def build_model(cfg: ModelConfig, tokenizer: ByteTokenizer, *, seed: int) -> torch.nn.Module:
    if cfg.local_path:
        path = Path(cfg.local_path)
        if not (path / "config.json").is_file():
            raise ParamsError(f"train.model.local_path {path} is not a local model directory")
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def load_model(directory: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(Path(directory), local_files_only=True)
    model.eval()
    return model
