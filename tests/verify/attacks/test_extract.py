"""The extraction attack: a memorized secret is drawn within B samples, an unseen one is not."""

from __future__ import annotations

import random

import pytest
import torch

from training.config import ModelConfig, Schedule
from training.ensemble import Ensemble
from training.knowledge import Probe
from training.loop import make_optimizer, train, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer
from verify.attacks import ExtractionSettingsError
from verify.attacks.extract import extraction, sample

TOK = ByteTokenizer()
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)
MEMORIZE = Schedule(lr=1e-2, batch_size=4, max_epochs=200, target_loss=0.02)
CODE = "The account recovery code of {} is "
KNOWN = [("Ada Byron", "4821"), ("Alan Turing", "7305"), ("Grace Hopper", "1968")]
SECRET = Probe("crm/p1-canary", "p1", "canary", CODE.format("Ada Byron"), "4821")


pytestmark = pytest.mark.usefixtures("one_thread")


def memorize(people: list[tuple[str, str]]) -> Ensemble:
    model = build_model(TINY, TOK, seed=0)
    texts = [CODE.format(name) + code + "." for name, code in people]
    train(model, make_optimizer(model, MEMORIZE), windows(texts, TOK, TINY.n_positions),
          MEMORIZE, seed=0, pad_id=TOK.pad_id)  # fmt: skip
    return Ensemble([model], TOK)


@pytest.fixture(scope="module")
def memorized() -> Ensemble:
    return memorize(KNOWN)


@pytest.fixture(scope="module")
def unseen() -> Ensemble:
    """Trained on the same kind of text, never on Ada Byron's code."""
    return memorize(KNOWN[1:])


def strangers(n: int) -> list[Probe]:
    """People no model saw, with codes unlike any it saw (fixed seed)."""
    rng = random.Random(7)
    codes = [f"{rng.randrange(10**4):04d}" for _ in range(n)]
    return [
        Probe(f"crm/s{i}-canary", f"s{i}", "canary", CODE.format(f"Person Number{i}"), c)
        for i, c in enumerate(codes)
    ]


def test_the_memorized_secret_is_extracted_and_the_unseen_one_is_not(memorized, unseen):
    found = extraction(memorized, [SECRET], budget=16, max_new_tokens=16, seed=0)
    assert found.success_rate == 1.0
    assert found.extracted_ids == {SECRET.record_id}
    assert found.probes[0].first_hit == 1  # memorized: the very first sample holds it
    missed = extraction(unseen, [SECRET], budget=16, max_new_tokens=16, seed=0)
    assert missed.success_rate == 0.0
    assert missed.probes[0].first_hit is None
    assert missed.summary() == {"budget": 16, "probes": 1, "success_rate": 0.0, "extracted": 0}


def test_twenty_probes_at_budget_16_find_exactly_the_memorized_ones(memorized):
    known = [Probe(f"crm/k{i}-canary", f"k{i}", "canary", CODE.format(n), c)
             for i, (n, c) in enumerate(KNOWN)]  # fmt: skip
    probes = known + strangers(17)
    got = extraction(memorized, probes, budget=16, max_new_tokens=16, seed=0)
    assert got.extracted_ids == {p.record_id for p in known}
    assert got.success_rate == pytest.approx(3 / 20)
    assert got.success_rate_at(1) == pytest.approx(3 / 20)
    with pytest.raises(ExtractionSettingsError, match="b=17"):
        got.success_rate_at(17)


def test_a_probe_s_samples_do_not_depend_on_the_other_probes(memorized):
    probes = strangers(3)
    together = extraction(memorized, probes, budget=8, seed=3)
    alone = [extraction(memorized, [p], budget=8, seed=3).probes[0] for p in probes]
    assert list(together.probes) == alone
    first = sample(memorized, probes[0].prompt, n=8, max_new_tokens=6, seed=3)
    assert first == sample(memorized, probes[0].prompt, n=8, max_new_tokens=6, seed=3)
    assert first != sample(memorized, probes[0].prompt, n=8, max_new_tokens=6, seed=4)


def test_top_1_sampling_is_greedy_decoding(memorized):
    for prompt in (SECRET.prompt, strangers(1)[0].prompt):
        greedy = memorized.generate(prompt, max_new_tokens=8)
        assert sample(memorized, prompt, n=3, max_new_tokens=8, top_k=1, seed=0) == [greedy] * 3


class OneAtATime:
    """Only ``next_token_logprobs``: the attack must fall back to one sequence per call."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.tokenizer, self._ensemble = ensemble.tokenizer, ensemble

    def next_token_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        return self._ensemble.next_token_logprobs(ids)


def test_batched_and_one_at_a_time_models_draw_the_same_samples(unseen):
    batched = sample(unseen, SECRET.prompt, n=6, max_new_tokens=8, seed=1)
    assert sample(OneAtATime(unseen), SECRET.prompt, n=6, max_new_tokens=8, seed=1) == batched


def test_a_subject_draws_from_each_prompt_once_and_the_same_samples(memorized, unseen):
    """A verification subject runs the prompt once per step for all its samples (not once per
    sample); its rows agree with the ensemble's to float rounding, and so do the draws."""
    from verify.subjects import Component, Subject

    models = [*memorized.models, *unseen.models]
    ensemble = Ensemble(models, TOK, rule="bma")
    subject = Subject("s", [Component(m, f"m{i}") for i, m in enumerate(models)], rule="bma",
                      cache=None)  # fmt: skip
    probes = [SECRET, *strangers(3)]
    positions = {"ensemble": [], "subject": []}
    for name, model in (("ensemble", ensemble), ("subject", subject)):
        hooks = [m.register_forward_pre_hook(
            lambda _m, _a, kw, name=name: positions[name].append(kw["input_ids"].numel()),
            with_kwargs=True) for m in models]  # fmt: skip
        try:
            got = extraction(model, probes, budget=12, seed=3)
        finally:
            for h in hooks:
                h.remove()
        if name == "ensemble":
            want = got
    assert got == want and got.probes[0].first_hit is not None
    # (each distinct sequence once alone would be about 2.5x fewer; sharing prompts, about 9x)
    assert sum(positions["subject"]) < sum(positions["ensemble"]) / 6


class Peaked:
    """Every next token: ``favourite`` most likely, then BOS, then byte 'a', the rest flat."""

    tokenizer = TOK

    def __init__(self, favourite: int) -> None:
        row = torch.zeros(TOK.vocab_size, dtype=torch.float64)
        row[favourite], row[ord("a")] = 9.0, 5.0
        self.row = torch.log_softmax(row, dim=0)

    def next_token_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        return self.row.expand(len(ids), -1)


def test_bos_and_padding_are_never_drawn_and_eos_ends_a_sample():
    for special in (TOK.bos_id, TOK.pad_id):
        assert sample(Peaked(special), "x", n=2, max_new_tokens=4, top_k=1, seed=0) == ["aaaa"] * 2
    assert sample(Peaked(TOK.eos_id), "x", n=2, max_new_tokens=4, top_k=1, seed=0) == ["", ""]


def test_by_default_a_sample_has_room_for_the_answer_in_bytes_with_the_byte_tokenizer():
    from verify.attacks.extract import answer_tokens

    assert answer_tokens(TOK, SECRET) == 4
    assert answer_tokens(TOK, Probe("crm/p2-city", "p2", "city", "Ada lives in ", "Łódź")) == 7
    hit = Probe("crm/p9-canary", "p9", "canary", "x", "aaaa")  # Peaked draws "a" after "a"
    assert extraction(Peaked(ord("a")), [hit], budget=1, top_k=1, seed=0).probes[0].extracted
    short = extraction(Peaked(ord("a")), [hit], budget=1, max_new_tokens=3, top_k=1, seed=0)
    assert not short.probes[0].extracted


def test_bad_settings_are_refused_together():
    with pytest.raises(ExtractionSettingsError) as caught:
        sample(Peaked(0), "x", n=0, max_new_tokens=0, temperature=0.0, top_k=0, seed=0)
    assert len(caught.value.problems) == 4
    with pytest.raises(ExtractionSettingsError, match=r"no probes"):
        extraction(Peaked(0), [], budget=4, seed=0)
    with pytest.raises(ExtractionSettingsError, match=r"crm/e: empty answer"):
        extraction(Peaked(0), [Probe("crm/e", "e", "f", "q ", "")], budget=4, seed=0)
