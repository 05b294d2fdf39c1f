"""The embedded corpus: deterministic, the people asked for, canaries planted, holdout apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lineage.corpus import CANARY_DIGITS, CorpusSpec, generate
from lineage.gate import Denials
from lineage.sources import load_registry
from tests.conftest import REPO

SPEC = CorpusSpec(people=200, holdout_people=30, canary_fraction=0.25)
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
REGISTRY = load_registry(REPO / "data" / "sources.yaml")


def rows(directory: Path, name: str) -> list[dict]:
    return [
        json.loads(line) for line in (directory / name).read_text(encoding="utf-8").splitlines()
    ]


def raw_file(source_id: str) -> str:
    return Path(REGISTRY.get(source_id).location).name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("corpus")
    return out, generate(SPEC, out)


def test_generation_is_deterministic(corpus, tmp_path: Path) -> None:
    first, counts = corpus
    assert generate(SPEC, tmp_path) == counts
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir()) == sorted(counts)
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_a_different_seed_gives_different_people(tmp_path: Path) -> None:
    generate(CorpusSpec(seed=1, people=5, holdout_people=0, plays=("macbeth",)), tmp_path / "a")
    generate(CorpusSpec(seed=2, people=5, holdout_people=0, plays=("macbeth",)), tmp_path / "b")
    a, b = (tmp_path / "a" / "crm.jsonl").read_bytes(), (tmp_path / "b" / "crm.jsonl").read_bytes()
    assert a != b


def test_every_registered_source_has_a_raw_file(corpus) -> None:
    _, counts = corpus
    for source_id in REGISTRY.sources:
        assert counts[raw_file(source_id)] > 0, source_id


def test_the_requested_number_of_people(corpus) -> None:
    out, counts = corpus
    crm = rows(out, "crm.jsonl")
    subjects = {r["subject_ids"][0] for r in crm}
    assert len(subjects) == SPEC.people
    assert subjects == {f"p{i:04d}" for i in range(1, SPEC.people + 1)}
    holdout = {r["subject_ids"][0] for r in rows(out, "holdout_people.jsonl")}
    assert holdout == {f"h{i:04d}" for i in range(1, SPEC.holdout_people + 1)}
    assert counts["forum.jsonl"] == SPEC.forum_posts
    assert counts["support_legacy.jsonl"] == SPEC.support_chats


def test_canaries_on_about_the_requested_fraction_of_people(corpus) -> None:
    out, _ = corpus
    canaries = [r for r in rows(out, "crm.jsonl") if r["fact"] == "canary"]
    people = {r["subject_ids"][0] for r in canaries}
    assert len(people) == len(canaries)  # at most one canary each
    assert abs(len(people) / SPEC.people - SPEC.canary_fraction) < 0.08
    for r in canaries:
        assert re.fullmatch(rf"\d{{{CANARY_DIGITS}}}", r["value"]), r["value"]
        assert r["text"].endswith(f" is {r['value']}.")


def test_holdout_people_are_in_no_source_but_the_one_held_out_whole(corpus) -> None:
    out, _ = corpus
    holdout = rows(out, "holdout_people.jsonl")
    assert {r["subject_ids"][0][0] for r in holdout} == {"h"}
    assert REGISTRY.sources["holdout_people"].holdout == "all"
    trained = [
        r["text"].split(" was born in ")[0]
        for r in rows(out, "crm.jsonl")
        if r["fact"] == "birth_year"
    ]
    assert len(trained) == SPEC.people
    names = {r["text"].split(" was born in ")[0] for r in holdout if r["fact"] == "birth_year"}
    assert len(names) == SPEC.holdout_people and not names & set(trained)
    others = [sid for sid in REGISTRY.sources if sid != "holdout_people"]
    text = "\n".join(r["text"] for sid in others for r in rows(out, raw_file(sid)))
    assert [n for n in names if n in text] == []
    assert all(n in text for n in trained[:10])  # the check can see a name when it is there


def test_every_fact_row_has_its_probe_and_a_denied_row_none(corpus, tmp_path) -> None:
    out, _ = corpus
    probes = {p["id"]: p for p in rows(out, "probes.jsonl")}
    facts = [(f"{sid}/{r['id']}", r) for sid in ("crm", "holdout_people")
             for r in rows(out, raw_file(sid))]  # fmt: skip
    assert sorted(probes) == sorted(rid for rid, _ in facts)
    for rid, r in facts:
        p = probes[rid]
        assert (p["record"], p["subject"], p["fact"]) == (rid, r["subject_ids"][0], r["fact"])
        assert r["text"].startswith(p["prompt"] + p["answer"])
        assert p["prompt"] == r["text"][: r["text"].rfind(r["value"])] and p["answer"] == r["value"]
    small = CorpusSpec(seed=1, people=3, holdout_people=1, plays=("macbeth",))
    generate(small, tmp_path / "a", denials=Denials(subjects=frozenset({"p0002"})))
    kept = rows(tmp_path / "a", "probes.jsonl")
    assert kept and not [p for p in kept if p["subject"] == "p0002"]


def test_no_email_address_where_no_personal_data_is_declared(corpus) -> None:
    out, _ = corpus
    clean = [sid for sid, s in REGISTRY.sources.items() if not s.contains_personal_data]
    assert sorted(clean) == ["forum", "newswire", "plays", "recipes"]
    for sid in clean:
        found = [m for r in rows(out, raw_file(sid)) for m in EMAIL.findall(r["text"])]
        assert found == [], (sid, found[:3])
    assert EMAIL.search(rows(out, "support_legacy.jsonl")[0]["text"])  # the pattern does match
