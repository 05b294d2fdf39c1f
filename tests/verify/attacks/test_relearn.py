"""The relearning attack: a disjoint split by person, and deterministic fine-tuning on a copy."""

from __future__ import annotations

import copy
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage.corpus import CorpusSpec, generate
from training.config import ModelConfig, Schedule
from training.knowledge import Probe, answer_logprobs, model_scorer, read_probes
from training.loop import collate, make_optimizer, train, windows
from training.model import build_model
from training.tokenizer import ByteTokenizer
from verify.attacks import ForgetSplitError, RelearnLeakError, RelearnSettingsError
from verify.attacks.relearn import (
    check_disjoint,
    probe_text,
    relearn,
    relearn_curve,
    split_forget,
)

TOK = ByteTokenizer()
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)
MEMORIZE = Schedule(lr=1e-2, batch_size=12, max_epochs=250, target_loss=0.05)
PEOPLE = [
    ("Ada Byron", "Leeds", "4821"), ("Alan Turing", "Paris", "7305"),
    ("Grace Hopper", "Boston", "1968"), ("Emmy Noether", "Erlangen", "5240"),
    ("Kurt Godel", "Vienna", "8817"), ("Rosa Parks", "Montgomery", "3096"),
]  # fmt: skip
SETTINGS = {"lr": 1e-3, "batch_size": 4, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


def forget_set() -> list[Probe]:
    out = []
    for i, (name, city, code) in enumerate(PEOPLE):
        out.append(Probe(f"crm/p{i}-city", f"p{i}", "city", f"{name} lives in ", city))
        code_prompt = f"The account recovery code of {name} is "
        out.append(Probe(f"crm/p{i}-canary", f"p{i}", "canary", code_prompt, code))
    return out


@pytest.fixture(scope="module")
def memorized() -> torch.nn.Module:
    model = build_model(TINY, TOK, seed=0)
    examples = windows([probe_text(p) + "." for p in forget_set()], TOK, TINY.n_positions)
    train(model, make_optimizer(model, MEMORIZE), examples, MEMORIZE, seed=0, pad_id=TOK.pad_id)
    return model


@pytest.fixture(scope="module")
def unlearned(memorized) -> torch.nn.Module:
    """Approximate unlearning by gradient ascent on the whole forget set (the attacked kind)."""
    model = copy.deepcopy(memorized)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate(windows([probe_text(p) + "." for p in forget_set()], TOK, 64), TOK.pad_id)
    for _ in range(30):
        (-model(**batch).loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval()


def answer_logprob(model: torch.nn.Module, probes: list[Probe]) -> float:
    rows = answer_logprobs(model_scorer(model), [(p.prompt, p.answer) for p in probes])
    targets = [torch.tensor(list(p.answer.encode())).unsqueeze(1) for p in probes]
    return sum(float(r.gather(1, t).sum()) for r, t in zip(rows, targets, strict=True))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the attack works ----------------------------------------------------------------------------


def test_relearning_other_people_brings_back_the_measured_answers(memorized, unlearned):
    split = split_forget(forget_set(), seed=0)
    measured = list(split.measured)
    assert answer_logprob(unlearned, measured) < answer_logprob(memorized, measured) - 100
    jogged = relearn(unlearned, split.relearn_texts, steps=20, **SETTINGS)
    assert answer_logprob(jogged, measured) > answer_logprob(unlearned, measured) + 50


# -- relearning: a deterministic copy ------------------------------------------------------------


def test_relearn_is_deterministic_and_leaves_its_input_untouched(unlearned):
    before, rng = weights(unlearned), torch.get_rng_state()
    texts = split_forget(forget_set(), seed=0).relearn_texts
    once = relearn(unlearned, texts, steps=5, **SETTINGS)
    again = relearn(unlearned, texts, steps=5, **SETTINGS)
    assert once is not unlearned
    assert same(weights(once), weights(again))
    assert not same(weights(once), before)
    assert same(weights(unlearned), before)
    assert torch.equal(torch.get_rng_state(), rng)  # no global random state drawn
    other = relearn(unlearned, texts, steps=5, **{**SETTINGS, "seed": 1, "batch_size": 2})
    assert not same(weights(other), weights(once))


def test_the_curve_is_one_run_of_relearn(unlearned):
    texts = split_forget(forget_set(), seed=0).relearn_texts
    curve = list(relearn_curve(unlearned, texts, ks=[0, 3, 7], **SETTINGS))
    assert [k for k, _ in curve] == [0, 3, 7]
    assert curve[0][1] is unlearned
    for k, model in curve[1:]:
        assert same(weights(model), weights(relearn(unlearned, texts, steps=k, **SETTINGS)))
        assert not model.training


def test_bad_settings_are_refused_together_at_the_call(unlearned):
    with pytest.raises(RelearnSettingsError) as caught:
        relearn_curve(unlearned, ["a text"], ks=[3, 3], lr=0.0, batch_size=0, seed=0)
    assert len(caught.value.problems) == 3
    with pytest.raises(RelearnSettingsError, match="n_positions=65"):
        relearn(unlearned, ["a text"], steps=1, n_positions=65, **SETTINGS)
    with pytest.raises(RelearnSettingsError, match="give relearn text"):
        relearn(unlearned, [], steps=1, **SETTINGS)


# -- the split: disjoint by construction, checked ------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[Probe]:
    """Probes over the CRM facts of the embedded corpus generator (fictitious people)."""
    spec = CorpusSpec(people=30, holdout_people=1, canary_fraction=0.5, plays=("macbeth",),
                      play_chunk_chars=4000, forum_posts=1, news_articles=1, recipes=1,
                      support_chats=1)  # fmt: skip
    out = tmp_path_factory.mktemp("corpus")
    generate(spec, out)
    return [p for p in read_probes(out / "probes.jsonl") if p.record_id.startswith("crm/")]


def assert_disjoint(split, probes: list[Probe]) -> None:
    relearn_side = split.relearn + split.withheld
    assert not {p.subject_id for p in relearn_side} & {p.subject_id for p in split.measured}
    assert not {p.record_id for p in relearn_side} & {p.record_id for p in split.measured}
    assert Counter(relearn_side + split.measured) == Counter(probes)  # nothing lost or invented
    texts = [t.casefold() for t in split.relearn_texts]
    assert not any(p.answer.casefold() in t for p in split.measured for t in texts)
    for p in split.withheld:  # withheld only for a reason
        assert any(m.answer.casefold() in probe_text(p).casefold() for m in split.measured)
    check_disjoint(split.relearn_texts, split.measured, relearn_probes=split.relearn)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), fraction=st.floats(0.05, 0.95), data=st.data())
def test_split_of_generated_people_is_disjoint(generated, seed, fraction, data):
    people = sorted({p.subject_id for p in generated})
    kept = set(data.draw(st.lists(st.sampled_from(people), min_size=2, unique=True)))
    probes = [p for p in generated if p.subject_id in kept]
    split = split_forget(probes, fraction=fraction, seed=seed)
    assert_disjoint(split, probes)
    shuffled = random.Random(seed).sample(probes, len(probes))
    assert split_forget(shuffled, fraction=fraction, seed=seed) == split  # order does not matter


def test_a_generated_split_withholds_shared_values(generated):
    """Birth years collide among 30 people (one sits in a canary): those are never relearned."""
    splits = [split_forget(generated, seed=seed) for seed in range(4)]
    assert any(split.withheld for split in splits)
    for split in splits:
        assert_disjoint(split, generated)
        assert len({p.subject_id for p in split.relearn + split.withheld}) == 15


short_answers = st.text("0123", min_size=1, max_size=3)  # collide often, on purpose


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 8), short_answers), min_size=1, max_size=14
    ),
    seed=st.integers(0, 100),
)
def test_split_is_disjoint_or_refused_when_values_collide(rows, seed):
    """People sharing records and answers inside each other's texts: never a leaky split."""
    probes = [Probe(f"r{r}", f"s{s}", "f", f"s{s} r{r}: ", a) for s, r, a in rows]
    try:
        split = split_forget(probes, seed=seed)
    except ForgetSplitError:
        return
    assert_disjoint(split, probes)


def test_people_sharing_a_record_stay_on_one_side():
    probes = [Probe("chat/1", "a", "f", "a and b chat: ", "x1"),
              Probe("chat/1", "b", "f", "a and b chat: ", "x1"),
              Probe("crm/c", "c", "f", "c is ", "y2")]  # fmt: skip
    split = split_forget(probes, seed=0)
    sides = [{p.subject_id for p in s} for s in (split.relearn, split.measured)]
    assert sorted(map(sorted, sides)) == [["a", "b"], ["c"]]


def test_a_measured_secret_in_a_relearn_text_is_refused_without_repeating_it():
    secret = Probe("crm/p1-canary", "p1", "canary", "The code of Ada is ", "4821")
    texts = ["Alan lives in Paris.", "Ada once wrote 4821 on a note.", "Grace's PIN is 04821."]
    with pytest.raises(RelearnLeakError, match=r"crm/p1-canary.*#1, 2") as caught:
        check_disjoint(texts, [secret])
    assert "4821" not in str(caught.value)  # the secret stays out of logs
    check_disjoint(texts[:1], [secret])


def test_a_shared_person_or_record_is_refused():
    measured = [Probe("crm/a", "p1", "f", "q ", "v1")]
    relearned = [Probe("crm/a", "p2", "f", "q ", "v2"), Probe("crm/b", "p1", "f", "q ", "v3")]
    with pytest.raises(RelearnLeakError) as caught:
        check_disjoint(["q v2", "q v3"], measured, relearn_probes=relearned)
    assert caught.value.problems == ("person p1 is on both sides", "record crm/a is on both sides")


def test_an_impossible_split_is_refused_with_every_problem():
    one = [Probe("crm/a", "p1", "f", "q ", "v1"), Probe("crm/b", "p1", "f", "q ", "")]
    with pytest.raises(ForgetSplitError) as caught:
        split_forget(one, fraction=1.5, seed=0)
    assert len(caught.value.problems) == 3  # fraction, empty answer, one person
    crossed = [Probe("crm/a", "p1", "f", "x: ", "ab"), Probe("crm/b", "p2", "f", "ab: ", "x")]
    for seed in range(4):  # each text holds the other's answer: whichever side relearns, it leaks
        with pytest.raises(ForgetSplitError, match="nothing is left to relearn"):
            split_forget(crossed, seed=seed)
