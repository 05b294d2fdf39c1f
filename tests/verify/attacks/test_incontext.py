"""In-context re-introduction: other facts of the same person, never the measured answer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage.corpus import CorpusSpec, generate
from training.config import ModelConfig
from training.knowledge import Probe, exact_match, model_scorer, read_probes
from training.model import build_model
from training.tokenizer import ByteTokenizer
from verify.attacks import InContextError
from verify.attacks.incontext import allowed_shots, incontext_probes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """The CRM facts of the embedded corpus generator (fictitious people)."""
    spec = CorpusSpec(people=30, holdout_people=1, canary_fraction=0.5, plays=("macbeth",),
                      play_chunk_chars=4000, forum_posts=1, news_articles=1, recipes=1,
                      support_chats=1)  # fmt: skip
    out = tmp_path_factory.mktemp("corpus")
    generate(spec, out)
    records: dict[str, dict[str, str]] = {}
    for line in (out / "crm.jsonl").read_text().splitlines():
        row = json.loads(line)
        records.setdefault(row["subject_ids"][0], {})[f"crm/{row['id']}"] = row["text"]
    probes = [p for p in read_probes(out / "probes.jsonl") if p.record_id.startswith("crm/")]
    return probes, records


def context_of(attacked: Probe, probe: Probe) -> str:
    assert attacked.prompt.endswith(probe.prompt)
    return attacked.prompt[: -len(probe.prompt)]


@pytest.mark.parametrize("shots", [0, 1, 2, 4])
def test_shots_are_other_facts_of_the_person_and_never_hold_the_answer(crm, shots):
    probes, records = crm
    attacked = incontext_probes(probes, records, shots=shots)
    assert len(attacked) == len(probes)
    for probe, new in zip(probes, attacked, strict=True):
        assert (new.record_id, new.subject_id, new.fact, new.answer) == (
            probe.record_id, probe.subject_id, probe.fact, probe.answer,
        )  # fmt: skip
        context = context_of(new, probe)
        assert probe.answer.casefold() not in context.casefold()
        own = records[probe.subject_id]
        shown = [t for rid, t in own.items() if rid != probe.record_id and t in context]
        assert len(shown) == shots
        assert len(context) == sum(len(t) + 1 for t in shown)  # those texts, a space after each
        assert own[probe.record_id] not in context
    if shots == 0:
        assert attacked == probes


def test_shots_follow_record_id_order_whatever_the_mapping_order(crm):
    probes, records = crm
    reversed_records = {s: dict(reversed(r.items())) for s, r in reversed(records.items())}
    assert incontext_probes(probes, reversed_records, shots=3) == incontext_probes(
        probes, records, shots=3
    )
    probe = probes[0]
    first = sorted(rid for rid in records[probe.subject_id] if rid != probe.record_id)[0]
    assert incontext_probes([probe], records, shots=1)[0].prompt == (
        records[probe.subject_id][first] + " " + probe.prompt
    )


FACTS = st.lists(
    st.tuples(st.sampled_from("ab"), st.text("xyz12", min_size=1, max_size=3)),
    min_size=1,
    max_size=10,
)  # two people, short answers that recur inside each other's texts


@settings(max_examples=60, deadline=None)
@given(facts=FACTS, shots=st.integers(0, 3))
def test_no_prompt_ever_holds_its_answer_when_values_collide(facts, shots):
    """Short answers that recur inside other facts of the same person are never shown."""
    probes = [Probe(f"r{i}", s, "f", f"{s} fact {i}: ", a) for i, (s, a) in enumerate(facts)]
    records: dict[str, dict[str, str]] = {}
    for p in probes:
        records.setdefault(p.subject_id, {})[p.record_id] = p.prompt + p.answer
    try:
        attacked = incontext_probes(probes, records, shots=shots)
    except InContextError as e:
        assert any(len(allowed_shots(p, records)) < shots for p in probes)
        assert len(e.problems) == sum(len(allowed_shots(p, records)) < shots for p in probes)
        return
    for probe, new in zip(probes, attacked, strict=True):
        assert probe.answer.casefold() not in context_of(new, probe).casefold()


def test_too_few_facts_are_refused_with_every_probe_listed(crm):
    probes, records = crm
    with pytest.raises(InContextError, match=r"use shots <= \d") as caught:
        incontext_probes(probes, records, shots=6)  # nobody has six other facts
    assert len(caught.value.problems) == len(probes)
    with pytest.raises(InContextError, match="shots=-1"):
        incontext_probes(probes, records, shots=-1)


def test_knowledge_metrics_run_unchanged_on_the_new_probes(crm):
    probes, records = crm
    attacked = incontext_probes(probes[:10], records, shots=2)
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64),
                        ByteTokenizer(), seed=0)  # fmt: skip
    known = exact_match(model_scorer(model), attacked)  # prompts past 64 bytes: left-truncated
    assert known.total == 10
    assert known.known == 0  # an untrained model knows nobody, with or without context
