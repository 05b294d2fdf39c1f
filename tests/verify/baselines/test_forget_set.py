"""The forget set on any corpus: probes, held-out split and public text are optional inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lineage.errors import BadInputError
from training.stages import Paths
from verify.forget import Text, companions, continuation_probes, draw, for_records
from verify.run import _split


def test_the_demo_forget_set_has_every_input(tiny):
    fs = tiny.fs
    assert fs.inputs() == {"probes": True, "holdout": True, "public": True, "canaries": True}
    assert {t.text_id.split("/")[0] for t in fs.holdout} == {"holdout_people"}  # held out whole
    held = {t.subject_id for t in fs.holdout}
    assert {p.subject_id for p in fs.holdout_probes} <= held and fs.holdout_probes
    assert all(p.of in fs.forget_record_ids for p in fs.forget_probes)


def test_without_probes_or_public_text_those_inputs_are_absent(tiny):
    c = dataclasses.replace(companions(tiny.params.verify), probes=None, public_play=None)
    fs = draw(tiny.root, shard=0, people=2, companions=c)
    assert fs.inputs() == {"probes": False, "holdout": True, "public": False, "canaries": False}
    assert fs.forget_probes == () and fs.holdout_probes == () and fs.public == ()
    # the people are drawn from every owner in the shard: data subjects, and records
    # without one (which stand for themselves)
    for t in fs.forget:
        assert t.subject_id in fs.forget_people


def test_user_probes_belong_to_their_record_or_their_subject(tiny, tmp_path):
    fs = tiny.fs
    record = sorted(fs.forget_record_ids)[0]
    person = fs.forget_people[0]
    probes = Path(tiny.root) / "my-probes.jsonl"
    rows = [{"id": "q1", "record": record, "subject": "whoever", "prompt": "P", "answer": "A"},
            {"id": "q2", "subject": person, "prompt": "Where?", "answer": "There",
             "paraphrases": ["Whereabouts?"]},
            {"id": "q3", "subject": "nobody-here", "prompt": "X", "answer": "Y"}]  # fmt: skip
    probes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = dataclasses.replace(companions(tiny.params.verify), probes=Path("my-probes.jsonl"))
    got = for_records(tiny.root, [record], shards=tiny.params.train.shards, companions=c)
    ids = [p.record_id for p in got.forget_probes]
    assert ids[0] == "q1"
    if person in got.forget_people:
        assert {"q2", "q2~1"} <= set(ids)
    assert "q3" not in ids


def test_a_held_out_record_has_no_trained_copy_to_verify(tiny):
    held = json.loads((Path(tiny.root) / Paths().holdout_file()).read_text().splitlines()[0])
    with pytest.raises(BadInputError, match="held out"):
        for_records(tiny.root, [held["record"]["record_id"]], shards=tiny.params.train.shards,
                    companions=companions(tiny.params.verify))  # fmt: skip


def test_continuations_cut_whole_characters_and_skip_records_too_short():
    texts = [Text("r1", "p1", "Zoë Ångström wrote: the parcel never came, refund please"),
             Text("r2", "p2", "short"), Text("r3", "p3", "x" * 6 + "abc")]  # fmt: skip
    got = continuation_probes(texts, prefix_bytes=6, answer_chars=10)
    assert [p.record_id for p in got] == ["r1"]  # r2 too short; r3 leaves 3 characters
    (p,) = got
    assert p.prompt == "Zoë " and len(p.prompt.encode()) == 5  # not half of the Å
    assert p.answer == "Ångström w" and p.of == "r1" and p.subject_id == "p1"
    assert p.prompt + p.answer == texts[0].text[:14]


def test_without_probes_relearning_and_in_context_measure_the_records_own_text(tiny):
    c = dataclasses.replace(companions(tiny.params.verify), probes=None, public_play=None)
    fs = draw(tiny.root, shard=0, people=4, companions=c)
    v = tiny.params.verify
    probes = fs.attack_probes(prefix_bytes=v.prefix_bytes, answer_chars=v.continuation_chars)
    assert probes and {p.fact for p in probes} == {"continuation"}
    texts = {t.text_id: t.text for t in fs.forget}
    assert all(texts[p.of].startswith(p.prompt + p.answer) for p in probes)
    assert tiny.fs.attack_probes(prefix_bytes=24, answer_chars=16) == tiny.fs.forget_probes

    split = _split(fs, probes, v)
    assert split is not None
    relearned = {p.subject_id for p in split.relearn}
    assert relearned and not relearned & {p.subject_id for p in split.measured}
    # relearning trains on whole records of its half, none holding a measured continuation
    assert set(split.relearn_texts) <= set(texts.values())
    for t in split.relearn_texts:
        assert not any(p.answer.casefold() in t.casefold() for p in split.measured)


def test_a_relearn_record_holding_a_measured_continuation_is_withheld(tiny):
    c = dataclasses.replace(companions(tiny.params.verify), probes=None, public_play=None)
    fs = draw(tiny.root, shard=0, people=4, companions=c)
    v = tiny.params.verify
    probes = fs.attack_probes(prefix_bytes=v.prefix_bytes, answer_chars=v.continuation_chars)
    split = _split(fs, probes, v)
    victim = split.relearn[0]
    # the same record text now also quotes what a measured record goes on to say
    quoted = _texts_with(fs, victim.of, " " + split.measured[0].answer)
    again = _split(quoted, probes, v)
    assert victim.of in {p.record_id for p in again.withheld}
    assert victim.of not in {p.record_id for p in again.relearn}


def _texts_with(fs, record_id: str, extra: str):
    forget = tuple(dataclasses.replace(t, text=t.text + extra) if t.text_id == record_id else t
                   for t in fs.forget)  # fmt: skip
    return dataclasses.replace(fs, forget=forget)
