"""The shared loop on a model that memorized its texts: forget rises, utility holds, inputs stay."""

from __future__ import annotations

import pytest
import torch

from tests.verify.unlearn.conftest import (
    FORGET,
    N_POSITIONS,
    RETAIN,
    TOKENIZER,
    parameters_copy,
    same_parameters,
)
from training.loop import windows
from verify.unlearn import UNLEARNERS, UnlearnSettings, unlearn
from verify.unlearn._likelihood import mean_nll


def _run(method: str, model: torch.nn.Module, **settings):
    return unlearn(
        method, model, FORGET, RETAIN, UnlearnSettings(**settings),
        n_positions=N_POSITIONS, tokenizer=TOKENIZER,
    )  # fmt: skip


def _losses(model: torch.nn.Module) -> tuple[float, float]:
    def nll(texts):
        examples = windows(texts, TOKENIZER, N_POSITIONS)
        return mean_nll(model, examples, batch_size=len(examples), pad_id=TOKENIZER.pad_id)

    return nll(FORGET), nll(RETAIN)


@pytest.mark.parametrize("method", sorted(UNLEARNERS))
def test_forget_loss_rises_while_retain_loss_keeps_within_tolerance(memorized, method):
    before = parameters_copy(memorized)
    new, report = _run(method, memorized)
    assert same_parameters(parameters_copy(memorized), before)  # the input is never touched
    assert new is not memorized and not new.training
    assert report.method == method and report.steps > 0
    assert report.forget_loss_after > 2 * report.forget_loss_before
    assert report.retain_loss_after <= 1.05 * report.retain_loss_before
    forget, retain = _losses(new)  # measured independently, on the returned model
    assert forget == pytest.approx(report.forget_loss_after, rel=1e-4)
    assert retain == pytest.approx(report.retain_loss_after, rel=1e-4)
    assert 0 < report.max_weight_change < 0.05  # small steps: the regime quantization undoes


def test_same_seed_same_bits(memorized):
    first, r1 = _run("npo_rt", memorized, steps=10, seed=7)
    second, r2 = _run("npo_rt", memorized, steps=10, seed=7)
    assert r1 == r2
    assert same_parameters(parameters_copy(first), parameters_copy(second))


def test_the_callers_random_state_is_left_alone(memorized):
    state = torch.random.get_rng_state()
    _run("ga", memorized, steps=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_zero_tolerance_rolls_back_to_the_last_state_that_kept_utility(memorized):
    new, report = _run("ga", memorized, utility_tolerance=0.0, forget_target=None)
    assert report.stopped_because == "utility"
    assert report.steps < report.steps_run  # the last steps were discarded
    assert report.steps % 5 == 0  # a measured state (eval_every=5), possibly the original
    assert report.retain_loss_after <= report.retain_loss_before
    _, retain = _losses(new)
    assert retain <= report.retain_loss_before * (1 + 1e-6)


def test_a_violation_at_the_first_measurement_returns_the_original(memorized):
    new, report = _run("ga", memorized, lr=1e-2, utility_tolerance=0.0, forget_target=None)
    assert (report.stopped_because, report.steps, report.steps_run) == ("utility", 0, 5)
    assert report.max_weight_change == 0.0
    assert same_parameters(parameters_copy(new), parameters_copy(memorized))


def test_stops_at_the_forget_target(memorized):
    _, report = _run("gd", memorized, forget_target=1.5)
    assert report.stopped_because == "forget_target"
    assert report.forget_loss_after >= 1.5 * report.forget_loss_before
    assert report.steps == report.steps_run < 60


def test_without_a_target_runs_every_step(memorized):
    _, report = _run("gd", memorized, steps=7, forget_target=None, utility_tolerance=1.0)
    assert (report.stopped_because, report.steps, report.steps_run) == ("steps", 7, 7)
