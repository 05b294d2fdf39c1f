"""The people a verification forgets, the people it never trained on, and what it measures.

The forget set is drawn (seeded) from the data subjects of one shard: the
other shards never saw them, so every subject under test shares those shard
models bit for bit and only the forget shard differs (retrained, unlearned,
or as released). Its records are every record naming one of those people, as
``exante delete --subject`` would remove, from any source. The non-members are
the held-out split partition kept from every model (registry ``holdout``):
records of the same sources, so membership inference compares like with like.

Everything else is optional and reported by name where absent: probes
(``verify.probes``: prompt → answer per subject; canaries among them), the
held-out split, and public text for the utility check (``verify.public_play``).
Without probes, the attacks that re-teach or remind (relearning, in-context)
measure :func:`continuation_probes`: each forget record's own text, its first
bytes as the prompt and what follows as the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage.corpus import play_chunks
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout
from lineage.records import Record
from training.knowledge import Probe, probes_of, read_probes
from training.partition import read_shard, shard_file

if TYPE_CHECKING:  # params are only read here
    from verify.config import VerifyParams


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
    forget_probes: tuple[Probe, ...]  # their facts as prompt → answer (none without probes)
    holdout: tuple[Text, ...]  # held-out records: people never trained on (non-members)
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

    def attack_probes(self, *, prefix_bytes: int, answer_chars: int) -> tuple[Probe, ...]:
        """What relearning and in-context measure: the probes, or else the records' own text."""
        if self.forget_probes:
            return self.forget_probes
        return continuation_probes(self.forget, prefix_bytes=prefix_bytes,
                                   answer_chars=answer_chars)  # fmt: skip

    def inputs(self) -> dict[str, bool]:
        """Which of a verification's optional inputs this forget set has."""
        return {"probes": bool(self.forget_probes), "holdout": bool(self.holdout),
                "public": bool(self.public),
                "canaries": any(p.fact == "canary" for p in self.forget_probes)}  # fmt: skip

    def digest_inputs(self) -> dict:
        return {
            "shard": self.shard,
            "forget_people": list(self.forget_people),
            "forget_records": sorted(self.forget_record_ids),
            "holdout_people": sorted({t.subject_id for t in self.holdout}),
            "retain_records": [t.text_id for t in self.retain],
            "public_texts": [t.text_id for t in self.public],
        }


CONTINUATION = "continuation"  # the ``fact`` of a probe cut from a record's own text


def continuation_probes(
    texts: Sequence[Text], *, prefix_bytes: int, answer_chars: int
) -> tuple[Probe, ...]:
    """One probe per text: its first ``prefix_bytes`` (whole characters) → the next characters.

    A model knows it when it continues the record verbatim, ``answer_chars``
    characters (fewer for a shorter record, at least 4; shorter records give
    none). No file to write: any corpus has them. The prompt is the verbatim
    metric's, so relearning and in-context re-introduction measure the same
    memorisation the static verbatim check does, as exact continuation.
    """
    out = []
    for t in texts:
        cut = len(t.text.encode("utf-8")[:prefix_bytes].decode("utf-8", errors="ignore"))
        answer = t.text[cut : cut + answer_chars]
        if cut and len(answer.strip()) >= 4:
            prompt = t.text[:cut]
            out.append(Probe(t.text_id, t.subject_id, CONTINUATION, prompt, answer, t.text_id))
    return tuple(out)


@dataclass(frozen=True)
class Companions:
    """What a forget set is measured with besides itself (all optional but the retain sample)."""

    probes: Path | None  # the probes file, or None: knowledge checks not applicable
    holdout_people: int
    retain_records: int
    public_play: str | None
    public_chunks: int
    seed: int


def draw(root: Path, *, shard: int, people: int, companions: Companions,
         paths: Layout = LAYOUT) -> ForgetSet:  # fmt: skip
    """Draw the forget set and its companions from a project where partition has run.

    The people are data subjects of the shard (with a probe, where there is a
    probes file; a record without a subject stands for itself where there is
    none); half of them (rounded up) hold a planted canary where enough do.
    """
    root = Path(root)
    placed = _placed(root, paths, shard)
    probes = _probes(root, companions.probes)
    asked = {p.subject_id for p in probes}
    in_shard = sorted({o for _, r in placed for o in _owners(r)
                       if companions.probes is None or o in asked})  # fmt: skip
    if len(in_shard) < people + 1:
        what = "data subjects with a probe" if companions.probes else "owners (data subjects, "
        what += "" if companions.probes else "or records without one)"
        raise ForgetSetError(
            f"shard {shard} holds {len(in_shard)} {what}; verify.forget_people is {people}: "
            "lower it or pick another verify.forget_shard"
        )
    secret = {p.subject_id for p in probes if p.fact == "canary"}
    chosen = _choose(in_shard, secret, people, random.Random(f"{companions.seed}:forget:{shard}"))
    forget_records = [r for _, r in placed if _owners(r) & set(chosen)]
    return _with_companions(root, shard, placed, chosen, forget_records, probes, companions, paths)


def for_records(root: Path, record_ids: Sequence[str], *, shards: int, companions: Companions,
                paths: Layout = LAYOUT) -> ForgetSet:  # fmt: skip
    """The forget set of a real deletion: exactly these records, from the shard holding them.

    Read before the deletion runs (afterwards their text is gone). The forget
    people are the records' data subjects (a record without one stands for
    itself); their probes are those cut from the records, and those about the
    people. Raises :class:`ForgetSetError` when the records span shards (verify
    them as separate requests) or are in no shard.
    """
    root, wanted = Path(root), set(record_ids)
    found: dict[int, tuple] = {}
    for s in range(shards):
        placed = _placed(root, paths, s)
        hits = [r for _, r in placed if r.record_id in wanted]
        if hits:
            found[s] = (placed, hits)
    if not found:
        raise ForgetSetError(
            f"none of {len(wanted)} record(s) is in a shard (base corpus, held out, or "
            "refused): there is no trained copy to verify"
        )
    if len(found) > 1:
        raise ForgetSetError(
            f"the records are in shards {sorted(found)}; a verification measures one shard: "
            "send them as one request per shard (a person's records share a shard)"
        )
    ((shard, (placed, hits)),) = found.items()
    chosen = tuple(sorted({_owner_of(r) for r in hits if not r.subject_ids}
                          | {sid for r in hits for sid in r.subject_ids}))  # fmt: skip
    probes = _probes(root, companions.probes)
    return _with_companions(root, shard, placed, chosen, hits, probes, companions, paths)


def _with_companions(root, shard, placed, chosen, forget_records, probes, c: Companions,
                     paths: Layout) -> ForgetSet:  # fmt: skip
    """The forget records' texts and probes, plus holdout, retain and public texts."""
    forget = tuple(Text(r.record_id, _owner(r, chosen), r.text) for r in forget_records)
    forget_probes = _probes_in_order(probes, forget_records, chosen)
    holdout = _holdout(root / paths.holdout_file(), c.holdout_people)
    owners = {t.subject_id for t in holdout}
    holdout_probes = probes_of(probes, records=[t.text_id for t in holdout], subjects=owners)
    gone = {r.record_id for r in forget_records}
    retained = [r for _, r in placed if r.record_id not in gone and not _owners(r) & set(chosen)]
    if len(retained) < 2:
        raise ForgetSetError(f"shard {shard} retains {len(retained)} records: too few to measure")
    pick = random.Random(f"{c.seed}:retain:{shard}").sample(
        retained, min(c.retain_records, len(retained))
    )
    retain = tuple(Text(r.record_id, "", r.text) for r in sorted(pick, key=lambda x: x.record_id))
    public = ()
    if c.public_play:
        public = tuple(
            Text(f"{c.public_play}-{i:04d}", "", t)
            for i, t in enumerate(play_chunks(c.public_play, 400)[: c.public_chunks], start=1)
        )
        if not public:
            raise ForgetSetError(f"the play {c.public_play!r} gave no text for the utility check")
    return ForgetSet(shard, tuple(chosen), forget, tuple(forget_probes), holdout,
                     tuple(holdout_probes), retain, public, tuple(placed))  # fmt: skip


def _probes_in_order(probes: Sequence[Probe], records: Sequence[Record], people) -> list[Probe]:
    """The probes cut from these records (in the records' order), then those of the people."""
    by_record: dict[str, list[Probe]] = {}
    for p in probes_of(probes, records=[r.record_id for r in records]):
        by_record.setdefault(p.of, []).append(p)
    return [p for r in records for p in by_record.get(r.record_id, [])] + probes_of(
        probes, subjects=people
    )


def _choose(candidates: list[str], secret: set[str], n: int, rng: random.Random) -> tuple:
    """``n`` people, half of them (rounded up) among those with a planted canary if enough."""
    holders = [c for c in candidates if c in secret]
    first = rng.sample(holders, min(len(holders), (n + 1) // 2))
    rest = rng.sample([c for c in candidates if c not in set(first)], n - len(first))
    return tuple(sorted(first + rest))


def _owners(r: Record) -> set[str]:
    return set(r.subject_ids) or {r.record_id}


def _owner_of(r: Record) -> str:
    """A record's owner for resampling: its first data subject, or itself when it has none."""
    return r.subject_ids[0] if r.subject_ids else r.record_id


def _owner(r: Record, chosen: Sequence[str]) -> str:
    return next((s for s in r.subject_ids if s in chosen), _owner_of(r))


def _placed(root: Path, paths: Layout, shard: int) -> list[tuple[int, Record]]:
    path = root / shard_file(paths.shards, shard)
    if not path.is_file():
        raise ForgetSetError(f"{path} is missing: run the pipeline (dvc repro) before verifying")
    return read_shard(path)


def _probes(root: Path, path: Path | None) -> list[Probe]:
    return [] if path is None else read_probes(root / path)


def _holdout(path: Path, n: int) -> tuple[Text, ...]:
    """The first ``n`` owners' held-out records (none when nothing is held out)."""
    if not path.is_file():
        raise ForgetSetError(f"{path} is missing: run the pipeline (dvc repro) before verifying")
    by_owner: dict[str, list[Text]] = {}
    for _, r in read_shard(path):
        by_owner.setdefault(_owner_of(r), []).append(Text(r.record_id, _owner_of(r), r.text))
    if by_owner and len(by_owner) < n:
        raise ForgetSetError(
            f"{path} holds {len(by_owner)} held-out people (or records without one); "
            f"verify.holdout_people is {n}: lower it, or hold out more (registry holdout)"
        )
    return tuple(t for o in sorted(by_owner)[:n] for t in by_owner[o])


def companions(v: VerifyParams) -> Companions:
    """What the params say a forget set is measured with besides itself."""
    return Companions(Path(v.probes) if v.probes else None, v.holdout_people, v.retain_records,
                      v.public_play, v.public_chunks, v.seed)  # fmt: skip


def forget_set(root: Path, v: VerifyParams, paths: Layout = LAYOUT) -> ForgetSet:
    """The forget set ``params.yaml``'s ``verify:`` names, drawn from the current partition."""
    return draw(root, shard=v.forget_shard, people=v.forget_people, companions=companions(v),
                paths=paths)  # fmt: skip
