"""Models: a tiny GPT-2 built from config (never downloaded), or a local pretrained causal LM.

A pretrained model is any architecture ``AutoModelForCausalLM`` knows (GPT-2,
Llama-family, ...), from a local directory or GGUF file (see
:mod:`training._pretrained`). A LoRA checkpoint (a ``peft`` adapter directory)
loads on top of the base model it was trained from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lineage.errors import ParamsError
from training._hf import transformers as _transformers
from training._pretrained import locate
from training.config import ModelConfig, TrainConfig
from training.tokenizer import Tokenizer

ADAPTER_CONFIG = "adapter_config.json"


def device_of(cfg: TrainConfig) -> torch.device:
    """``train.device`` resolved: ``auto`` is cuda when a GPU is visible, else cpu."""
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ParamsError(
            "train.device is cuda, but torch sees no GPU here (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}): set train.device to auto or cpu, or install a "
            "CUDA build of torch on a GPU machine"
        )
    return torch.device("cuda")


def set_determinism(cfg: TrainConfig, *, threads: int | None = None) -> None:
    """Same seed, same threads, deterministic kernels: the same shard trains to the same bits.

    ``threads`` overrides ``cfg.threads`` for a unit that always trains alone (the base).
    On CUDA, kernels without a deterministic version warn instead of failing: bit-identical
    retraining is claimed (and tested) on CPU only.
    """
    torch.use_deterministic_algorithms(True, warn_only=device_of(cfg).type == "cuda")
    torch.set_num_threads(threads or cfg.threads)


def build_model(cfg: ModelConfig, tokenizer: Tokenizer, *, seed: int) -> torch.nn.Module:
    if cfg.local_path:
        return load_pretrained(cfg, tokenizer)
    torch.manual_seed(seed)
    hf = _transformers()
    config = hf.GPT2Config(
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
    return hf.GPT2LMHeadModel(config)


def load_pretrained(cfg: ModelConfig, tokenizer: Tokenizer) -> torch.nn.Module:
    """``train.model.local_path``'s model, in float32, checked against its tokenizer and window."""
    where = locate(cfg.local_path)
    model = _transformers().AutoModelForCausalLM.from_pretrained(
        where.directory, dtype=torch.float32, **where.kwargs()
    )
    if where.gguf_file:  # dequantized on load: from here on the plain float32 model it now is
        model = _plain(model)
    problems = []
    if model.config.vocab_size < tokenizer.vocab_size:
        problems.append(
            f"vocab_size {model.config.vocab_size} < its tokenizer's {tokenizer.vocab_size}"
        )
    if cfg.n_positions > context_length(model):
        problems.append(
            f"train.model.n_positions {cfg.n_positions} > its context {context_length(model)}"
        )
    if problems:
        raise ParamsError(
            f"train.model.local_path {cfg.local_path}: unusable model", problems=problems
        )
    return model


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """A GGUF-loaded model as an ordinary one: same weights, no quantizer attached.

    transformers marks a model loaded from GGUF as quantized, and refuses to
    ``save_pretrained`` it, though its weights are already dequantized floats;
    the base stage must save it (the checkpoint the adapters and the release use).
    """
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = _transformers().AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    return plain


def context_length(model: torch.nn.Module) -> int:
    """How many positions the model attends to, whatever its architecture calls it."""
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def is_adapter(directory: Path) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def adapter_base(directory: Path) -> Path:
    """The base directory a LoRA adapter was trained on (peft records it in its config)."""
    return Path(
        json.loads((Path(directory) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    )


def load_model(
    directory: Path, *, base: Path | None = None, merge: bool = False
) -> torch.nn.Module:
    """A full checkpoint, or a LoRA adapter on ``base`` (default: the base it names).

    ``merge``: fold the adapter into the base weights (W + BA), as a deployer
    ships it: a plain model that attacks may quantize or fine-tune whole.
    """
    directory = Path(directory)
    if is_adapter(directory):
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(base or adapter_base(directory)), directory)
        if merge:  # peft froze the base; a merged model is trainable, as any loaded one
            model = model.merge_and_unload().requires_grad_(True)
    else:
        model = _transformers().AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True
        )
    model.eval()
    return model
