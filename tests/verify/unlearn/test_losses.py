"""Each method's loss against its formula, computed the slow way, row by row without padding."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.verify.unlearn.conftest import FORGET, N_POSITIONS, RETAIN, TOKENIZER, tiny_model
from training.loop import collate, windows
from verify.unlearn import UNLEARNERS, UnlearnSettings
from verify.unlearn._likelihood import batch_nll, sequence_logprob
from verify.unlearn.npo import npo_loss


def _batch(texts: list[str]) -> dict[str, torch.Tensor]:
    return collate(windows(texts, TOKENIZER, N_POSITIONS), TOKENIZER.pad_id)


def _slow_logprob(model: torch.nn.Module, text: str) -> float:
    """``Σ log p(x_t | x_<t)`` of one unpadded text, one position at a time."""
    ids = TOKENIZER.encode(text)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))


def _moved(model: torch.nn.Module, *, seed: int = 1, scale: float = 0.05) -> torch.nn.Module:
    """A copy of ``model``, every weight nudged: its likelihoods differ from the reference's."""
    gen = torch.Generator().manual_seed(seed)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return moved


@pytest.fixture(scope="module")
def ref() -> torch.nn.Module:
    return tiny_model().eval()


def test_sequence_logprob_ignores_padding(ref):
    texts = ["a", *FORGET, *RETAIN]  # lengths 3 to 44 tokens: most rows are padded
    with torch.no_grad():
        fast = sequence_logprob(ref, _batch(texts))
    slow = torch.tensor([_slow_logprob(ref, t) for t in texts])
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-4)


def test_batch_nll_is_the_training_loss(ref):
    batch = _batch(FORGET + RETAIN)
    with torch.no_grad():
        assert torch.allclose(batch_nll(ref, batch), ref(**batch).loss, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0, 4.0])
def test_npo_at_the_reference_is_two_over_beta_log_two(ref, beta):
    with torch.no_grad():
        loss = npo_loss(ref, ref, _batch(FORGET), beta=beta)
    assert loss.item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_npo_is_two_over_beta_mean_log_one_plus_ratio_to_the_beta(ref, beta):
    model = _moved(ref)
    ratios = [math.exp(_slow_logprob(model, t) - _slow_logprob(ref, t)) for t in FORGET]
    want = 2 / beta * sum(math.log1p(r**beta) for r in ratios) / len(ratios)
    with torch.no_grad():
        got = npo_loss(model, ref, _batch(FORGET), beta=beta)
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_npo_does_not_differentiate_through_the_reference(ref):
    model = _moved(ref)
    frozen = copy.deepcopy(ref)
    npo_loss(model, frozen, _batch(FORGET), beta=0.1).backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in model.parameters())


def _method_loss(name: str, model, ref, **settings) -> float:
    with torch.no_grad():
        loss = UNLEARNERS[name](
            model, _batch(FORGET), _batch(RETAIN), ref, UnlearnSettings(**settings)
        )
    return loss.item()


def test_ga_is_the_negated_forget_nll(ref):
    model = _moved(ref)
    with torch.no_grad():
        want = -batch_nll(model, _batch(FORGET)).item()
    assert _method_loss("ga", model, ref) == pytest.approx(want, rel=1e-6)


def test_gd_adds_the_weighted_retain_nll(ref):
    model = _moved(ref)
    with torch.no_grad():
        forget, retain = (
            batch_nll(model, _batch(FORGET)).item(),
            batch_nll(model, _batch(RETAIN)).item(),
        )
    assert _method_loss("gd", model, ref, retain_weight=0.5) == pytest.approx(
        -forget + 0.5 * retain, rel=1e-6
    )
    assert _method_loss("gd", model, ref, retain_weight=0.0) == pytest.approx(-forget, rel=1e-6)


def test_npo_ignores_the_retain_set_and_npo_rt_adds_it(ref):
    model = _moved(ref)
    with torch.no_grad():
        forget = npo_loss(model, ref, _batch(FORGET), beta=0.1).item()
        retain = batch_nll(model, _batch(RETAIN)).item()
    assert _method_loss("npo", model, ref, retain_weight=2.0) == pytest.approx(forget, rel=1e-6)
    got = _method_loss("npo_rt", model, ref, retain_weight=2.0)
    assert got == pytest.approx(forget + 2.0 * retain, rel=1e-6)
