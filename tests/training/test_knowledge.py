"""Knowledge probes, batched scoring, length-bucketed batches and local model directories."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch

from lineage.errors import ParamsError
from training.config import ModelConfig, Schedule
from training.ensemble import Ensemble, batch_logprobs, shard_logprobs
from training.knowledge import (
    Probe,
    ProbesFileError,
    canary_exposure,
    ensemble_scorer,
    exact_match,
    model_scorer,
    probes_of,
    read_probes,
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


def write_probes(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_a_probes_file_gives_probes_by_record_and_by_subject(tmp_path):
    path = tmp_path / "probes.jsonl"
    write_probes(path, [
        {"id": "crm/p2-city", "record": "crm/p2-city", "subject": "p2", "fact": "city",
         "prompt": "B lives in ", "answer": "Oslo"},
        {"id": "q7", "subject": "p1", "prompt": "Where does A live?", "answer": "Rome",
         "paraphrases": ["A's home town:"]},
    ])  # fmt: skip
    probes = read_probes(path)
    assert probes == [
        Probe("crm/p2-city", "p2", "city", "B lives in ", "Oslo", "crm/p2-city"),
        Probe("q7", "p1", "fact", "Where does A live?", "Rome"),
        Probe("q7~1", "p1", "fact", "A's home town:", "Rome"),
    ]
    assert probes_of(probes, records=["crm/p2-city"]) == probes[:1]
    # a probe cut from a record belongs to the record, not to its subject
    assert probes_of(probes, subjects=["p2"]) == []
    assert probes_of(probes, subjects=["p1"]) == probes[1:]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", ":1: not JSON"),
        ('["a list"]', "a JSON object"),
        ('{"id": "a", "subject": "s", "prompt": "p"}', "missing or empty: answer"),
        (
            '{"id": "a", "subject": "s", "prompt": "p", "answer": "x", "value": 1}',
            "unknown field(s) value",
        ),
        (
            '{"id": "a", "subject": "s", "prompt": "p", "answer": "x", "paraphrases": [""]}',
            "paraphrases must be non-empty",
        ),
    ],
)
def test_a_malformed_probes_file_names_the_line_and_field(tmp_path, line, says):
    path = tmp_path / "probes.jsonl"
    write_probes(path, [line])
    with pytest.raises(ProbesFileError, match=re.escape(says)):
        read_probes(path)


def test_a_probe_id_twice_or_a_missing_file_is_refused(tmp_path):
    row = {"id": "a", "subject": "s", "prompt": "p", "answer": "x"}
    write_probes(tmp_path / "p.jsonl", [row, row])
    with pytest.raises(ProbesFileError, match="'a' appears twice"):
        read_probes(tmp_path / "p.jsonl")
    with pytest.raises(ProbesFileError, match="is missing"):
        read_probes(tmp_path / "absent.jsonl")


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
    local = ModelConfig(local_path=str(tmp_path / "local"), n_positions=64)  # its context
    loaded = build_model(local, TOK, seed=1)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ParamsError, match="never downloads"):
        build_model(ModelConfig(local_path="openai-community/gpt2"), TOK, seed=0)


def test_exposure_is_bounded_by_the_candidate_count(memorized):
    assert canary_exposure(model_scorer(memorized), probes()[2], candidates=31) <= math.log2(32)
