"""The people a verification forgets, the people it never trained on, and what it measures.

The forget set is drawn (seeded) from the data subjects of one shard: the
other shards never saw them, so every subject under test shares those shard
models bit for bit and only the forget shard differs (retrained, unlearned,
or as released). Its records are every record naming one of those people, as
``exante delete --subject`` would remove. The holdout people are written by
the corpus but registered as no source, so no model ever saw them: they are
the non-members for membership inference and the floor for knowledge.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lineage.corpus import Person, person_facts, play_chunks
from lineage.errors import BadInputError
from lineage.records import Record
from training.knowledge import Probe
from training.partition import read_shard, shard_file
from training.stages import Paths


class ForgetSetError(BadInputError):
    """The forget set asked for cannot be drawn from the data there is."""


@dataclass(frozen=True)
class Text:
    """One text the metrics score: its id, its owner (a data subject or ``""``) and itself."""

    text_id: str
    subject_id: str
    text: str


@dataclass(frozen=True)
class ForgetSet:
    shard: int
    forget_people: tuple[str, ...]
    forget: tuple[Text, ...]  # every record of the forget people (the deleted content)
    forget_probes: tuple[Probe, ...]  # their facts as prompt → answer
    holdout: tuple[Text, ...]  # facts of people never trained on (non-members)
    holdout_probes: tuple[Probe, ...]
    retain: tuple[Text, ...]  # a sample of retained records of the forget shard
    public: tuple[Text, ...]  # held-out public-domain text no model was trained on
    placed: tuple[tuple[int, Record], ...]  # the forget shard's records as trained

    @property
    def forget_record_ids(self) -> frozenset[str]:
        return frozenset(t.text_id for t in self.forget)

    def remaining(self) -> list[tuple[int, Record]]:
        """The forget shard's placed records without the forget set: what a retrain sees."""
        gone = self.forget_record_ids
        return [(s, r) for s, r in self.placed if r.record_id not in gone]

    def digest_inputs(self) -> dict:
        return {
            "shard": self.shard,
            "forget_people": list(self.forget_people),
            "forget_records": sorted(self.forget_record_ids),
            "holdout_people": sorted({t.subject_id for t in self.holdout}),
            "retain_records": [t.text_id for t in self.retain],
            "public_texts": [t.text_id for t in self.public],
        }


def probe_of(text_id: str, subject_id: str, fact: str, text: str, value: str) -> Probe | None:
    cut = text.rfind(value)
    return Probe(text_id, subject_id, fact, text[:cut], value) if cut > 0 else None


def draw(
    root: Path,
    *,
    shard: int,
    people: int,
    holdout_people: int,
    retain_records: int,
    public_play: str,
    public_chunks: int,
    seed: int,
    paths: Paths = Paths(),
) -> ForgetSet:
    """Draw the forget set and its companions from a project where partition has run."""
    root = Path(root)
    path = root / shard_file(paths.shards, shard)
    if not path.is_file():
        raise ForgetSetError(f"{path} is missing: run the pipeline (dvc repro) before verifying")
    placed = read_shard(path)
    crm = _crm_rows(root / paths.facts)
    in_shard = sorted({sid for _, r in placed if r.record_id in crm for sid in r.subject_ids})
    if len(in_shard) < people + 1:
        raise ForgetSetError(
            f"shard {shard} holds {len(in_shard)} people with CRM facts; verify.forget_people "
            f"is {people}: lower it or pick another verify.forget_shard"
        )
    chosen = _choose(in_shard, crm, people, random.Random(f"{seed}:forget:{shard}"))
    forget_records = [r for _, r in placed if set(r.subject_ids) & set(chosen)]
    return _with_companions(root, shard, placed, chosen, forget_records, crm, paths=paths,
                            holdout_people=holdout_people, retain_records=retain_records,
                            public_play=public_play, public_chunks=public_chunks,
                            seed=seed)  # fmt: skip


def for_records(
    root: Path,
    record_ids: Sequence[str],
    *,
    holdout_people: int,
    retain_records: int,
    public_play: str,
    public_chunks: int,
    seed: int,
    shards: int,
    paths: Paths = Paths(),
) -> ForgetSet:
    """The forget set of a real deletion: exactly these records, from the shard holding them.

    Read before the deletion runs (afterwards their text is gone). The forget
    people are the records' data subjects; their probes are the records' CRM
    facts. Raises :class:`ForgetSetError` when the records span shards (verify
    them as separate requests), are in no shard, or hold no fact to probe.
    """
    root, wanted = Path(root), set(record_ids)
    crm = _crm_rows(root / paths.facts)
    found: dict[int, list] = {}
    for s in range(shards):
        path = root / shard_file(paths.shards, s)
        if not path.is_file():
            raise ForgetSetError(f"{path} is missing: run the pipeline (dvc repro) first")
        placed = read_shard(path)
        hits = [r for _, r in placed if r.record_id in wanted]
        if hits:
            found[s] = (placed, hits)
    if not found:
        raise ForgetSetError(
            f"none of {len(wanted)} record(s) is in a shard (base corpus, or refused): "
            "there is no trained copy to verify"
        )
    if len(found) > 1:
        raise ForgetSetError(
            f"the records are in shards {sorted(found)}; a verification measures one shard: "
            "send them as one request per shard (a person's records share a shard)"
        )
    ((shard, (placed, hits)),) = found.items()
    if not any(r.record_id in crm for r in hits):
        raise ForgetSetError(
            "the records hold no CRM fact to probe: a verification measures what a model "
            "knows of a person's facts; delete without --verify"
        )
    chosen = tuple(sorted({sid for r in hits for sid in r.subject_ids}))
    return _with_companions(root, shard, placed, chosen, hits, crm, paths=paths,
                            holdout_people=holdout_people, retain_records=retain_records,
                            public_play=public_play, public_chunks=public_chunks,
                            seed=seed)  # fmt: skip


def _with_companions(root, shard, placed, chosen, forget_records, crm, *, paths, holdout_people,
                     retain_records, public_play, public_chunks, seed) -> ForgetSet:  # fmt: skip
    """The forget records' texts and probes, plus holdout, retain and public texts."""
    forget = tuple(Text(r.record_id, _owner(r, chosen), r.text) for r in forget_records)
    forget_probes = []
    for r in forget_records:
        row = crm.get(r.record_id)
        if row is not None:
            p = probe_of(r.record_id, row["subject_ids"][0], row["fact"], r.text, row["value"])
            forget_probes += [p] if p else []
    holdout, holdout_probes = _holdout(root / paths.facts.parent / "holdout_people.jsonl",
                                       holdout_people)  # fmt: skip
    gone = {r.record_id for r in forget_records}
    retained = [
        r for _, r in placed if r.record_id not in gone and not set(r.subject_ids) & set(chosen)
    ]
    if len(retained) < 2:
        raise ForgetSetError(f"shard {shard} retains {len(retained)} records: too few to measure")
    pick = random.Random(f"{seed}:retain:{shard}").sample(
        retained, min(retain_records, len(retained))
    )
    retain = tuple(Text(r.record_id, "", r.text) for r in sorted(pick, key=lambda x: x.record_id))
    public = tuple(
        Text(f"{public_play}-{i:04d}", "", t)
        for i, t in enumerate(play_chunks(public_play, 400)[:public_chunks], start=1)
    )
    if not public:
        raise ForgetSetError(f"the play {public_play!r} gave no text for the utility check")
    return ForgetSet(shard, tuple(chosen), forget, tuple(forget_probes), holdout,
                     tuple(holdout_probes), retain, public, tuple(placed))  # fmt: skip


def _choose(candidates: list[str], crm: dict[str, dict], n: int, rng: random.Random) -> tuple:
    """``n`` people, half of them (rounded up) among those with a planted canary if enough."""
    secret = sorted({row["subject_ids"][0] for row in crm.values() if row["fact"] == "canary"})
    holders = [c for c in candidates if c in set(secret)]
    first = rng.sample(holders, min(len(holders), (n + 1) // 2))
    rest = rng.sample([c for c in candidates if c not in set(first)], n - len(first))
    return tuple(sorted(first + rest))


def _owner(r: Record, chosen: Sequence[str]) -> str:
    return next(s for s in r.subject_ids if s in chosen)


def _crm_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise ForgetSetError(f"{path} is missing: run the pipeline (dvc repro) before verifying")
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[f"crm/{row['id']}"] = row
    return rows


def _holdout(path: Path, n: int) -> tuple[tuple[Text, ...], list[Probe]]:
    if not path.is_file():
        raise ForgetSetError(f"{path} is missing: run the corpus stage before verifying")
    people = [Person(**json.loads(line)) for line in path.read_text().splitlines()][:n]
    if len(people) < n:
        raise ForgetSetError(
            f"{path} holds {len(people)} holdout people; verify.holdout_people is {n}: "
            "raise corpus.holdout_people or lower verify.holdout_people"
        )
    texts, probes = [], []
    for p in people:
        for fact, value, text in person_facts(p):
            text_id = f"holdout/{p.subject_id}-{fact}"
            texts.append(Text(text_id, p.subject_id, text))
            probe = probe_of(text_id, p.subject_id, fact, text, value)
            probes += [probe] if probe else []
    return tuple(texts), probes
