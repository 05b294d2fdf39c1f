"""DP-SGD on a tiny GPT-2: it trains, its epsilon is the accountant's, its unsafe modes are loud.

Known answers recompute epsilon with a fresh Opacus accountant from the run's
(noise multiplier, sample rate, steps); the oracle checks Opacus's per-sample
gradients on GPT-2 (Conv1D via functorch, tied embeddings, positions) against
gradients taken one sample at a time.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.grad_sample import prepare_module

from lineage.errors import ParamsError, VerificationError
from training import dp
from training.config import DPConfig, ModelConfig, Schedule
from training.dp import (
    InsecureNoiseWarning,
    NoPrivacyGuaranteeWarning,
    PrivacyBudgetError,
    PrivacySpent,
    ReplayNotExactWarning,
    SecureModeUnavailableError,
    check_policy,
    train_private,
)
from training.dp_secret import DPSecret, DPSecretError
from training.loop import collate, make_optimizer, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=32)
SCHEDULE = Schedule(lr=1e-2, batch_size=8, max_epochs=2, target_loss=0.0)
TEXTS = [f"P{i} at {i * 7} Elm; code {i * 31 % 97}." for i in range(40)]
ACCOUNTANTS = {"rdp": RDPAccountant, "prv": PRVAccountant}
SECRET = DPSecret(bytes(range(32)))
EMPTY_FIRST_SHARD = 1  # with SECRET, slice 0: batches of 0, 1, 3, 2, 3, 1, 1, 1 of 8 windows


def examples() -> list[list[int]]:
    return windows(TEXTS, TOK, TINY.n_positions)


@dataclass
class Run:
    model: torch.nn.Module
    before: dict[str, torch.Tensor]
    stats: list
    spent: PrivacySpent
    caught: list
    epoch_ends: list[float]


def run(
    dp_cfg: DPConfig, *, seed=7, epochs=None, data=None, schedule=SCHEDULE, secret=SECRET,
    shard=0, slice_=0,
) -> Run:  # fmt: skip
    model = build_model(TINY, TOK, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ends: list[float] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats, spent = train_private(
            model, make_optimizer(model, schedule), data or examples(), schedule,
            dp=dp_cfg, seed=seed, pad_id=TOK.pad_id, epochs=epochs, secret=secret,
            shard=shard, slice_=slice_,
            on_epoch=lambda _: ends.append(time.perf_counter()),
        )  # fmt: skip
    return Run(model, before, stats, spent, caught, ends)


pytestmark = pytest.mark.usefixtures("one_thread")


def categories(caught) -> set[type]:
    return {w.category for w in caught}


@pytest.fixture(scope="module")
def rdp_run() -> Run:
    return run(DPConfig(enabled=True, target_epsilon=1.0, accountant="rdp"))


def test_dp_training_on_gpt2_changes_weights_with_finite_loss(rdp_run):
    r = rdp_run
    assert len(r.stats) == SCHEDULE.max_epochs
    assert all(math.isfinite(s.loss) and s.loss > 0 for s in r.stats)
    assert r.spent.steps == sum(s.steps for s in r.stats) == 2 * math.ceil(40 / 8)
    changed = [n for n, p in r.model.named_parameters() if not torch.equal(p, r.before[n])]
    assert sorted(changed) == sorted(r.before)
    assert all(torch.isfinite(p).all() for p in r.model.parameters())


def test_opacus_hooks_are_removed_after_training(rdp_run):
    model = rdp_run.model
    assert not hasattr(model, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert not model.training


def test_insecure_noise_is_announced(rdp_run):
    texts = [str(w.message) for w in rdp_run.caught if w.category is InsecureNoiseWarning]
    assert len(texts) == 1
    assert "secure_mode OFF" in texts[0] and "NOT for production" in texts[0]
    assert (
        "keyed by the DP secret" in texts[0] and "not from the published training seed" in texts[0]
    )


def known_answer(spent: PrivacySpent) -> float:
    accountant = ACCOUNTANTS[spent.accountant]()
    accountant.history = [(spent.noise_multiplier, spent.sample_rate, spent.steps)]
    return accountant.get_epsilon(spent.delta)


def test_rdp_epsilon_is_the_accountants_known_answer(rdp_run):
    spent = rdp_run.spent
    assert (spent.accountant, spent.poisson_sampling, spent.delta) == ("rdp", True, 1e-5)
    assert spent.sample_rate == pytest.approx(1 / 5)
    assert spent.noise_multiplier > 0
    assert abs(spent.epsilon - known_answer(spent)) < 1e-6
    assert spent.epsilon <= 1.0 * 1.01  # Opacus searches sigma to within 1% of the target
    entry = {"epsilon": spent.epsilon, "delta": 1e-5, "accountant": "rdp"}
    assert spent.attestation_entry() == entry


def test_prv_epsilon_is_the_accountants_known_answer():
    spent = run(DPConfig(enabled=True, target_epsilon=1.0, accountant="prv"), epochs=1).spent
    assert (spent.accountant, spent.steps) == ("prv", 5)
    assert abs(spent.epsilon - known_answer(spent)) < 1e-6
    assert spent.epsilon <= 1.0 * 1.01


def test_without_poisson_sampling_no_epsilon_and_a_loud_warning():
    r = run(DPConfig(enabled=True, target_epsilon=1.0, poisson_sampling=False), epochs=1)
    assert r.spent.epsilon is None and r.spent.attestation_entry() is None
    assert r.spent.steps == 5 and r.spent.noise_multiplier > 0
    assert NoPrivacyGuaranteeWarning in categories(r.caught)
    with pytest.raises(PrivacyBudgetError, match="no epsilon"):
        check_policy(r.spent, max_epsilon=8.0)


def test_empty_poisson_batches_take_a_noise_only_step(monkeypatch):
    sizes = []
    real_step = dp._step

    def spy(model, optimizer, batch):
        sizes.append(batch["input_ids"].shape[0] if isinstance(batch, dict) else 0)
        return real_step(model, optimizer, batch)

    monkeypatch.setattr(dp, "_step", spy)
    one_by_one = SCHEDULE.model_copy(update={"batch_size": 1})  # rate 1/8: many empty draws
    r = run(DPConfig(enabled=True, target_epsilon=1.0), data=examples()[:8], epochs=1,
            schedule=one_by_one, shard=EMPTY_FIRST_SHARD)  # fmt: skip
    assert sizes[0] == 0, "the secret no longer draws an empty first batch: pick another shard"
    assert 0 in sizes[1:] and any(sizes)
    assert r.spent.steps == len(sizes) == 8
    assert r.stats[0].steps == 8 and r.stats[0].tokens > 0
    assert all(torch.isfinite(p).all() for p in r.model.parameters())


def test_a_disabled_config_or_no_data_is_refused():
    with pytest.raises(ParamsError) as err:
        train_private(
            build_model(TINY, TOK, seed=0), None, [], SCHEDULE,
            dp=DPConfig(enabled=False), seed=1, pad_id=TOK.pad_id, epochs=0, secret=SECRET,
            shard=0, slice_=0,
        )  # fmt: skip
    assert len(err.value.problems) == 3


def spent_with(epsilon: float | None) -> PrivacySpent:
    return PrivacySpent(epsilon, 1e-5, "rdp", 1.1, 0.2, 10, epsilon is not None)


@pytest.mark.parametrize(
    ("spent", "words"),
    [
        (None, "did not use DP"),
        (spent_with(None), "no epsilon"),
        (spent_with(8.01), "spent epsilon = 8.01"),
        (spent_with(math.nan), "spent epsilon = nan"),
        (spent_with(math.inf), "spent epsilon = inf"),
    ],
)
def test_check_policy_refuses_runs_outside_the_budget(spent, words):
    with pytest.raises(PrivacyBudgetError, match=words) as err:
        check_policy(spent, max_epsilon=8.0)
    assert isinstance(err.value, VerificationError)


@pytest.mark.parametrize("spent", [spent_with(8.0), spent_with(0.5), None])
def test_check_policy_passes_within_budget_or_without_a_requirement(spent):
    if spent is not None:
        check_policy(spent, max_epsilon=8.0)
    check_policy(spent, max_epsilon=None)


def test_per_sample_gradients_on_gpt2_match_one_sample_at_a_time():
    """Oracle: Opacus hooks (Conv1D by our rule, tied wte/lm_head, wpe) vs plain autograd."""
    from opacus.grad_sample import GradSampleModule
    from transformers.pytorch_utils import Conv1D

    assert GradSampleModule.GRAD_SAMPLERS[Conv1D] is dp._conv1d_grad_sample  # not functorch
    model = build_model(TINY, TOK, seed=0)
    batch = collate(examples()[:3], TOK.pad_id)

    def loss_of(b):
        losses = dp._token_losses(model, b)
        return (losses.sum(1) / (b["labels"][:, 1:] != -100).sum(1)).mean()

    expected = []
    for i in range(3):
        single = collate(examples()[i : i + 1], TOK.pad_id)
        expected.append(torch.autograd.grad(loss_of(single), list(model.parameters())))
    hooks = prepare_module(model, "hooks", wrap_model=False, loss_reduction="mean")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss_of(batch).backward()
        for k, p in enumerate(model.parameters()):
            got = p.grad_sample
            assert got.shape[0] == 3
            for i in range(3):
                torch.testing.assert_close(got[i], expected[i][k], atol=1e-5, rtol=1e-4)
    finally:
        hooks.cleanup()


def test_gpt2_positions_need_explicit_position_ids_under_opacus():
    """Why collate passes position_ids: without them wpe's per-sample gradient has batch size 1."""
    model = build_model(TINY, TOK, seed=0)
    batch = collate(examples()[:3], TOK.pad_id)
    del batch["position_ids"]
    hooks = prepare_module(model, "hooks", wrap_model=False, loss_reduction="mean")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            model(**batch).loss.backward()
        assert model.transformer.wpe.weight.grad_sample.shape[0] == 1
        assert model.transformer.wte.weight.grad_sample.shape[0] == 3
    finally:
        hooks.cleanup()


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_secret_shard_and_slice_same_bits_any_other_different_bits():
    """The operator replays a shard bit for bit; each shard and slice draws its own noise."""
    cfg = DPConfig(enabled=True, target_epsilon=1.0)
    same = [flat(run(cfg, epochs=1).model) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    for other in ({"shard": 1}, {"slice_": 1}, {"secret": DPSecret(bytes(32))}):
        assert not torch.equal(same[0], flat(run(cfg, epochs=1, **other).model)), other


def test_the_published_seed_alone_does_not_fix_the_noise():
    """train.seed is in params.yaml and the bundle: it must neither give nor change the noise."""
    cfg = DPConfig(enabled=True, target_epsilon=1.0)
    a = flat(run(cfg, seed=11, epochs=1).model)
    assert torch.equal(a, flat(run(cfg, seed=12, epochs=1).model))  # the seed does not matter
    other = DPSecret(bytes(range(1, 33)))
    assert not torch.equal(a, flat(run(cfg, seed=11, epochs=1, secret=other).model))


def test_a_missing_secret_is_bad_input():
    with pytest.raises(DPSecretError, match="exante keys init") as err:
        run(DPConfig(enabled=True, target_epsilon=1.0), epochs=1, secret=None)
    assert err.value.exit_code == 3


def test_secure_mode_says_replay_is_not_exact_or_refuses_without_torchcsprng():
    import importlib.util

    cfg = DPConfig(enabled=True, target_epsilon=1.0, secure_mode=True)
    if importlib.util.find_spec("torchcsprng") is None:
        with pytest.raises(SecureModeUnavailableError, match="torchcsprng") as err:
            run(cfg, epochs=1, secret=None)
        assert err.value.exit_code == 3
        return
    r = run(cfg, epochs=1, secret=None)  # only where torchcsprng is installed
    assert ReplayNotExactWarning in categories(r.caught)
    assert InsecureNoiseWarning not in categories(r.caught)
