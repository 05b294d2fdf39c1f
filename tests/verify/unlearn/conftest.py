"""A tiny byte-level GPT-2 that has memorized a few made-up facts, and the texts it saw.

The forget and retain texts share phrasing ("'s code is"), so raising the loss
on one set costs some on the other, as it does for real models: the utility
constraint then has something to hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.conftest import torch_threads
from training.config import ModelConfig
from training.loop import collate, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer()
N_POSITIONS = 64
FORGET = ["Alma Voss hides her key under the red pot.", "Bruno Kade's code is 4417."]
RETAIN = [
    "Cora Lind walks her dog at six.",
    "Dario Wu's code is 8023.",
    "Elin Moss paints blue doors.",
    "Fynn Ash sells old maps.",
]


def tiny_model(*, seed: int = 0) -> torch.nn.Module:
    config = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=N_POSITIONS)
    return build_model(config, TOKENIZER, seed=seed)


def memorize(model: torch.nn.Module, texts: list[str], *, steps: int) -> torch.nn.Module:
    """Full-batch AdamW until ``texts`` are memorized (loss ~0.06, the first bytes' entropy)."""
    batch = collate(windows(texts, TOKENIZER, N_POSITIONS), TOKENIZER.pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> Iterator[None]:
    """A model this small runs fastest on one thread, and then does not fight other jobs."""
    yield


@pytest.fixture(scope="session")
def memorized() -> torch.nn.Module:
    """Trained once per session (~2 s); tests must not modify it (``unlearn`` never does)."""
    with torch_threads(1):
        return memorize(tiny_model(), FORGET + RETAIN, steps=200)


def parameters_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
