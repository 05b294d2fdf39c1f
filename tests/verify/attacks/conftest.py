"""A tiny GPT-2 built from config (never downloaded) and a batch of token ids for it."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(*, seed: int = 0, init_std: float = 0.02) -> GPT2LMHeadModel:
    """``init_std`` above GPT-2's 0.02 gives weights as spread as a trained model's blocks."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_positions=32,
        vocab_size=260,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=init_std,
    )
    return GPT2LMHeadModel(config).eval()


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def parameters_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


@pytest.fixture
def model() -> GPT2LMHeadModel:
    return tiny_gpt2()


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 260, (3, 24), generator=torch.Generator().manual_seed(1))
