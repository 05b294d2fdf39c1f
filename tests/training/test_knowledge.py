"""Knowledge probes, batched scoring, length-bucketed batches and local model directories."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from lineage.errors import ParamsError
from training.config import ModelConfig, Schedule
from training.ensemble import Ensemble, batch_logprobs, shard_logprobs
from training.knowledge import (
    Probe,
    canary_exposure,
    ensemble_scorer,
    exact_match,
    model_scorer,
    probes_from_crm,
)
from training.loop import batches, make_optimizer, train, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
FACTS = [
    ("Ada Byron lives in ", "London"),
    ("The phone number of Ada Byron is ", "555-0199"),
    ("The account recovery code of Ada Byron is ", "314159"),
]


@pytest.fixture(scope="module")
def memorized() -> torch.nn.Module:
    """A tiny model that has learned three facts by heart."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=48, n_positions=64), TOK, seed=0)
    schedule = Schedule(lr=1e-2, batch_size=3, max_epochs=150, target_loss=0.01)
    examples = windows([p + a + "." for p, a in FACTS], TOK, 64)
    train(model, make_optimizer(model, schedule), examples, schedule, seed=0, pad_id=TOK.pad_id)
    return model


def probes() -> list[Probe]:
    return [Probe(f"crm/x-{i}", "x", "f", p, a) for i, (p, a) in enumerate(FACTS)]


def test_teacher_forced_exact_match_agrees_with_greedy_generation(memorized):
    ensemble = Ensemble([memorized], TOK)
    known = exact_match(model_scorer(memorized), probes())
    for probe in probes():
        greedy = ensemble.generate(probe.prompt, max_new_tokens=len(probe.answer))
        assert (probe.record_id in known.known_ids) == (greedy == probe.answer)
    assert known.exact_match == 1.0  # it did learn them: the check can pass
    wrong = [Probe("crm/y", "y", "f", FACTS[0][0], "Paris")]
    assert exact_match(model_scorer(memorized), wrong).exact_match == 0.0  # and can fail


def test_ensemble_and_single_model_scorers_agree_for_one_model(memorized):
    one = exact_match(ensemble_scorer(Ensemble([memorized], TOK)), probes())
    assert one.known_ids == exact_match(model_scorer(memorized), probes()).known_ids


def test_batched_log_probs_equal_one_at_a_time(memorized):
    seqs = [TOK.encode(p + a) for p, a in FACTS] + [TOK.encode("x" * 100)]  # one past the context
    for row, seq in zip(batch_logprobs(memorized, seqs), seqs, strict=True):
        assert torch.allclose(row, shard_logprobs(memorized, torch.tensor(seq)), atol=1e-5)


def test_canary_exposure_is_high_when_memorized_and_about_one_bit_when_not(memorized):
    canary = probes()[2]
    assert canary_exposure(model_scorer(memorized), canary, candidates=63) == pytest.approx(6.0)
    fresh = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=48, n_positions=64), TOK, seed=9)
    codes = [f"{random.Random(i).randrange(10**6):06d}" for i in range(8)]  # random, like real ones
    scorer = model_scorer(fresh)
    bits = [
        canary_exposure(scorer, Probe(c, "s", "canary", "code ", c), candidates=63) for c in codes
    ]
    assert 0 <= sum(bits) / len(bits) < 3.0  # an untrained model ranks canaries at random


def test_probes_come_from_crm_rows_restricted_to_given_ids(tmp_path):
    rows = [
        {"id": "p1-city", "fact": "city", "subject_ids": ["p1"], "text": "A lives in Rome.",
         "value": "Rome"},
        {"id": "p2-city", "fact": "city", "subject_ids": ["p2"], "text": "B lives in Oslo.",
         "value": "Oslo"},
    ]  # fmt: skip
    path = tmp_path / "crm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = probes_from_crm(path, record_ids=["crm/p2-city"])
    assert got == [Probe("crm/p2-city", "p2", "city", "B lives in ", "Oslo")]


def test_batches_cover_every_example_once_and_repeat_with_the_seed():
    examples = [[1] * n for n in [5, 90, 3, 40, 7, 60, 2, 33, 8, 15, 70, 4]]
    a = batches(examples, 3, torch.Generator().manual_seed(1), pool=2)
    b = batches(examples, 3, torch.Generator().manual_seed(1), pool=2)
    assert a == b
    assert sorted(i for batch in a for i in batch) == list(range(len(examples)))
    assert all(len(batch) <= 3 for batch in a)


def test_local_model_directory_is_used_and_hub_ids_are_refused(tmp_path):
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64), TOK, seed=0)
    model.save_pretrained(tmp_path / "local")
    loaded = build_model(ModelConfig(local_path=str(tmp_path / "local")), TOK, seed=1)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ParamsError, match="not a local model directory"):
        build_model(ModelConfig(local_path="openai-community/gpt2"), TOK, seed=0)


def test_exposure_is_bounded_by_the_candidate_count(memorized):
    assert canary_exposure(model_scorer(memorized), probes()[2], candidates=31) <= math.log2(32)
