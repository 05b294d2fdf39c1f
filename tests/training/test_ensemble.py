"""Shard ensembles: distributions, one-model oracle, slow BMA reference, the knowing shard wins."""

from __future__ import annotations

import pytest
import torch

from lineage.errors import ParamsError
from training.config import ModelConfig, Schedule
from training.ensemble import RULES, DuplicateRuleError, Ensemble, register_rule
from training.loop import make_optimizer, train, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)
MEMORIZE = Schedule(lr=1e-2, batch_size=8, max_epochs=300, target_loss=0.02)
SHORT = "Ann Lee lives in Oslo."
LONG = "The code of Ann Lee is 123456, and she lives at 12 Elm Street in Oslo, Norway."  # > 64
PROMPT, SECRET = "The code of Ann Lee is ", "123456"


pytestmark = pytest.mark.usefixtures("one_thread")


def sharp(seed: int) -> torch.nn.Module:
    """An untrained tiny GPT-2 with large weights: peaked, shard-specific distributions."""
    model = build_model(TINY, TOK, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def memorized(text: str, seed: int) -> torch.nn.Module:
    model = build_model(TINY, TOK, seed=seed)
    train(model, make_optimizer(model, MEMORIZE), windows([text], TOK, TINY.n_positions),
          MEMORIZE, seed=seed, pad_id=TOK.pad_id)  # fmt: skip
    return model


@pytest.fixture(scope="module")
def shards() -> list[torch.nn.Module]:
    return [sharp(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def trained() -> list[torch.nn.Module]:
    """Shard 0 saw Ann Lee; shards 1-3 saw only other people, whose codes all read 987654.

    The others agree on the code, so under "mean" they outvote shard 0 three to
    one; with random codes they would disagree and "mean" might still pick 1.
    Untrained others would not do: near-uniform, they outvote nobody.
    """
    others = ["Bob Ray", "Cy Dunn", "Eve Fox"]
    return [memorized(f"{PROMPT}{SECRET}.", 10)] + [
        memorized(f"The code of {name} is 987654.", 11 + i) for i, name in enumerate(others)
    ]


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor(TOK.encode(text, eos=False))


def slow_bma(models: list[torch.nn.Module], ids: list[int]) -> torch.Tensor:
    """BMA by the definition: one forward per shard and position on the last n_positions
    tokens, probabilities in float64, prefix likelihoods as explicit products from BOS."""
    n = TINY.n_positions
    probs = [[None] * len(ids) for _ in models]
    with torch.no_grad():
        for s, model in enumerate(models):
            for t in range(len(ids)):
                context = torch.tensor([ids[max(0, t - n + 1) : t + 1]])
                probs[s][t] = torch.softmax(model(input_ids=context).logits[0, -1].double(), -1)
    rows = []
    for t in range(len(ids)):
        prefix = [1.0] * len(models)
        for s in range(len(models)):
            for j in range(1, t + 1):
                prefix[s] *= float(probs[s][j - 1][ids[j]])
        total = sum(prefix)
        rows.append(sum(probs[s][t] * prefix[s] / total for s in range(len(models))))
    return torch.stack(rows).log()


@pytest.mark.parametrize("rule", ["bma", "mean"])
@pytest.mark.parametrize("text", [SHORT, LONG], ids=["short", "past-context"])
def test_combined_rows_are_distributions(shards, rule, text):
    logprobs = Ensemble(shards, TOK, rule=rule).next_token_logprobs(ids_of(text))
    assert logprobs.shape == (len(ids_of(text)), TOK.vocab_size)
    torch.testing.assert_close(
        logprobs.exp().sum(-1), torch.ones(len(logprobs), dtype=torch.float64)
    )


@pytest.mark.parametrize("rule", ["bma", "mean"])
def test_one_model_is_its_own_ensemble(shards, rule):
    ids = ids_of(SHORT)
    with torch.no_grad():
        own = torch.log_softmax(shards[0](input_ids=ids[None]).logits[0].double(), -1)
    torch.testing.assert_close(Ensemble(shards[:1], TOK, rule=rule).next_token_logprobs(ids), own)


@pytest.mark.parametrize("text", [SHORT, LONG], ids=["short", "past-context"])
def test_bma_matches_the_slow_definition(shards, text):
    ids = TOK.encode(text, eos=False)
    fast = Ensemble(shards, TOK, rule="bma").next_token_logprobs(torch.tensor(ids))
    torch.testing.assert_close(fast, slow_bma(shards, ids), atol=1e-5, rtol=0)


def test_bma_matches_the_slow_definition_when_one_shard_knows(trained):
    ids = TOK.encode(PROMPT + SECRET, eos=False)
    fast = Ensemble(trained, TOK, rule="bma").next_token_logprobs(torch.tensor(ids))
    torch.testing.assert_close(fast, slow_bma(trained, ids), atol=1e-5, rtol=0)


def test_the_knowing_shard_wins_under_bma_only(trained):
    bma, mean = Ensemble(trained, TOK, rule="bma"), Ensemble(trained, TOK, rule="mean")
    assert bma.generate(PROMPT, max_new_tokens=8).startswith(SECRET)
    assert not mean.generate(PROMPT, max_new_tokens=8).startswith(SECRET)
    assert bma.sequence_logprob(SECRET, prompt=PROMPT) > mean.sequence_logprob(
        SECRET, prompt=PROMPT
    )


def test_sequence_logprob_scores_text_and_eos_not_the_prompt(shards):
    ensemble = Ensemble(shards, TOK)
    rows = ensemble.next_token_logprobs(torch.tensor(TOK.encode(PROMPT + SECRET)))
    targets = TOK.encode(SECRET, bos=False)  # the secret's bytes, then EOS
    expected = sum(float(rows[len(PROMPT) + i, y]) for i, y in enumerate(targets))
    assert ensemble.sequence_logprob(SECRET, prompt=PROMPT) == pytest.approx(expected, abs=1e-9)


def test_from_dirs_loads_saved_shards(shards, tmp_path):
    for i, model in enumerate(shards):
        model.save_pretrained(tmp_path / f"s{i}")
    loaded = Ensemble.from_dirs([tmp_path / f"s{i}" for i in range(len(shards))])
    ids = ids_of(SHORT)
    torch.testing.assert_close(
        loaded.next_token_logprobs(ids), Ensemble(shards, TOK).next_token_logprobs(ids)
    )


def test_unknown_rule_is_a_params_error(shards):
    with pytest.raises(ParamsError, match=r"unknown rule 'median'.*bma, mean"):
        Ensemble(shards, TOK, rule="median")


def test_registering_a_rule_twice_is_refused():
    before = RULES["bma"]
    with pytest.raises(DuplicateRuleError, match="'bma' is already registered"):
        register_rule("bma")(lambda logprobs, ids: logprobs[0])
    assert RULES["bma"] is before
