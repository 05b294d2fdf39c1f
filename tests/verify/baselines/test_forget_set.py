"""The forget set on any corpus: probes, held-out split and public text are optional inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lineage.errors import BadInputError
from training.stages import Paths
from verify.forget import draw, for_records
from verify.run import companions


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
