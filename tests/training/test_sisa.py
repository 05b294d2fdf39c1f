"""SISA partition and slice training: stable placement, subject grouping, reuse, exactness."""

from __future__ import annotations

import pytest
import safetensors.torch as st
import torch
from pydantic import ValidationError

from lineage.records import Record
from training.checkpoints import Checkpoint
from training.config import DPConfig, ModelConfig, Schedule, TrainConfig
from training.loop import replayed
from training.partition import assign, read_shard, shard_file, subject_groups, write_shards
from training.sisa import final_checkpoint, missing_slices, train_shard

TINY = TrainConfig(
    shards=2,
    slices=3,
    model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64),
    shard=Schedule(lr=3e-3, batch_size=8, max_epochs=3, target_loss=0.0),
)


def people(n: int) -> list[Record]:
    return [
        Record.make(f"crm/p{i:03d}-{fact}", "crm", [f"p{i:03d}"], f"Person {i} {fact} is {i * 7}.")
        for i in range(n)
        for fact in ("city", "year", "code")
    ]


def weights(directory) -> dict[str, torch.Tensor]:
    return st.load_file(final_checkpoint(directory) / "model.safetensors")


def test_a_subjects_records_share_a_shard():
    placements = assign(people(30), shards=4, slices=3, seed=1)
    shard_of = {}
    for p in placements:
        subject = p.record_id.split("/")[1].split("-")[0]
        assert shard_of.setdefault(subject, p.shard) == p.shard
    assert len(set(shard_of.values())) > 1  # and people do spread over shards


def test_linked_subjects_form_one_group():
    recs = [
        Record.make("a/1", "a", ["x"], "x"),
        Record.make("a/2", "a", ["y", "x"], "x and y"),
        Record.make("a/3", "a", ["z", "y"], "y and z"),
        Record.make("a/4", "a", ["w"], "w"),
    ]
    groups = subject_groups(recs)
    assert groups["x"] == groups["y"] == groups["z"] == "x"
    assert groups["w"] == "w"


def test_placement_is_stable_when_other_records_are_deleted():
    recs = people(40)
    before = {p.record_id: (p.shard, p.slice) for p in assign(recs, shards=4, slices=4, seed=9)}
    kept = [r for r in recs if not r.record_id.startswith("crm/p007")]
    after = {p.record_id: (p.shard, p.slice) for p in assign(kept, shards=4, slices=4, seed=9)}
    assert after == {k: v for k, v in before.items() if k in after}


def test_shard_files_round_trip_and_unchanged_shards_keep_their_bytes(tmp_path):
    recs = people(20)
    placements = assign(recs, shards=2, slices=3, seed=1)
    write_shards(recs, placements, shards=2, out_dir=tmp_path)
    loaded = read_shard(shard_file(tmp_path, 0)) + read_shard(shard_file(tmp_path, 1))
    assert sorted(r for _, r in loaded) == sorted(recs)
    victim = next(p for p in placements if p.shard == 1)
    before0 = shard_file(tmp_path, 0).read_bytes()
    kept = [r for r in recs if r.record_id != victim.record_id]
    write_shards(kept, assign(kept, shards=2, slices=3, seed=1), shards=2, out_dir=tmp_path)
    assert shard_file(tmp_path, 0).read_bytes() == before0
    assert victim.record_id not in shard_file(tmp_path, 1).read_text()


def placed(recs, shard=0):
    by_id = {r.record_id: r for r in recs}
    return [(p.slice, by_id[p.record_id]) for p in assign(recs, **_split()) if p.shard == shard]


def _split():
    return {"shards": TINY.shards, "slices": TINY.slices, "seed": TINY.seed}


def test_training_a_shard_twice_gives_identical_weights(tmp_path):
    data = placed(people(12))
    train_shard(0, data, TINY, base=None, out_dir=tmp_path / "a")
    train_shard(0, data, TINY, base=None, out_dir=tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_slices_are_reused_and_deletion_retrains_from_the_clean_slice_exactly(tmp_path):
    recs = people(12)
    data = placed(recs)
    out = tmp_path / "shard"
    assert missing_slices(data, TINY, base=None, out_dir=out) == [0, 1, 2]
    first = train_shard(0, data, TINY, base=None, out_dir=out)
    assert first.trained == [0, 1, 2]
    assert missing_slices(data, TINY, base=None, out_dir=out) == []
    assert train_shard(0, data, TINY, base=None, out_dir=out).trained == []

    victim_slice, victim = max(data, key=lambda x: x[0])  # a record of the last slice
    kept = [x for x in data if x[1] != victim]
    # the lookup without training names exactly the slices the deletion then retrains
    retrain = list(range(victim_slice, TINY.slices))
    assert missing_slices(kept, TINY, base=None, out_dir=out) == retrain
    again = train_shard(0, kept, TINY, base=None, out_dir=out)
    assert again.trained == list(range(victim_slice, TINY.slices))
    assert again.slices[:victim_slice] == first.slices[:victim_slice]

    scratch = train_shard(0, kept, TINY, base=None, out_dir=tmp_path / "scratch")
    assert scratch.trained == [0, 1, 2]
    a, b = weights(tmp_path / "shard"), weights(tmp_path / "scratch")
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = st.load_file(tmp_path / "shard" / "ckpt" / first.final / "model.safetensors")
    assert not all(torch.equal(before[k], a[k]) for k in a)  # the deletion did change the model


def test_an_edited_record_is_never_served_from_a_stale_checkpoint(tmp_path):
    """Same record id, new text: the slices from the edited one on must retrain."""
    recs = people(12)
    data = placed(recs)
    first = train_shard(0, data, TINY, base=None, out_dir=tmp_path / "shard")
    slice_, old = min(data, key=lambda x: (-x[0], x[1].record_id))
    new = Record.make(old.record_id, old.source_id, old.subject_ids, old.text + " (corrected)")
    edited = [(s, new if r == old else r) for s, r in data]
    again = train_shard(0, edited, TINY, base=None, out_dir=tmp_path / "shard")
    assert again.trained == list(range(slice_, TINY.slices))
    assert again.slices[:slice_] == first.slices[:slice_]
    assert again.final != first.final


REPLAY = TINY.model_copy(update={"shard": TINY.shard.model_copy(update={"replay": 0.5})})


def test_replay_trains_twice_to_identical_weights_and_deletes_exactly(tmp_path):
    recs = people(12)
    data = placed(recs)
    first = train_shard(0, data, REPLAY, base=None, out_dir=tmp_path / "shard")
    again = train_shard(0, data, REPLAY, base=None, out_dir=tmp_path / "twice")
    a, b = weights(tmp_path / "shard"), weights(tmp_path / "twice")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.trained == again.trained == [0, 1, 2] and sorted(first.seconds) == [0, 1, 2]

    victim_slice, victim = min(data, key=lambda x: (x[0] != 1, x[1].record_id))  # slice 1
    kept = [x for x in data if x[1] != victim]
    deleted = train_shard(0, kept, REPLAY, base=None, out_dir=tmp_path / "shard")
    assert deleted.trained == list(range(victim_slice, REPLAY.slices))
    scratch = train_shard(0, kept, REPLAY, base=None, out_dir=tmp_path / "scratch")
    assert scratch.trained == [0, 1, 2]
    a, b = weights(tmp_path / "shard"), weights(tmp_path / "scratch")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_replay_draws_only_from_earlier_slices_and_checkpoints_record_all_they_saw(tmp_path):
    from training.sisa import _slice_data
    from training.tokenizer import ByteTokenizer

    data, tok = placed(people(12)), ByteTokenizer()
    for r in range(REPLAY.slices):
        fresh, earlier = _slice_data(data, r, REPLAY, tok)
        texts = lambda ws: {tok.decode(w) for w in ws}  # noqa: E731
        assert texts(fresh) == {x.text for s, x in data if s == r}
        assert texts(earlier) == {x.text for s, x in data if s < r}
    result = train_shard(0, data, REPLAY, base=None, out_dir=tmp_path / "shard")
    for r, name in enumerate(result.slices):
        meta = Checkpoint(tmp_path / "shard" / "ckpt" / name).meta
        assert set(meta["records"]) == {x.record_id for s, x in data if s <= r}


def test_a_replay_sample_is_seeded_sized_and_drawn_from_the_pool():
    pool = [[i, i + 1] for i in range(40)]
    draw = lambda seed: replayed(pool, 0.25, torch.Generator().manual_seed(seed))  # noqa: E731
    assert draw(3) == draw(3) and draw(3) != draw(4)
    assert len(draw(3)) == 10 and all(w in pool for w in draw(3))
    assert len({tuple(w) for w in draw(3)}) == 10  # without replacement
    assert replayed([], 0.25, torch.Generator()) == replayed(pool, None, torch.Generator()) == []


def test_replay_and_slice_epochs_are_alternatives_and_replay_refuses_dp():
    with pytest.raises(ValidationError, match="alternative"):
        Schedule(slice_epochs=5, replay=0.25)
    with pytest.raises(ValidationError, match="replay"):
        TrainConfig(shard=Schedule(replay=0.25), dp=DPConfig(enabled=True))


EQUAL = TINY.model_copy(update={"shard": TINY.shard.model_copy(update={"slice_work": "equal"})})


def test_equal_slice_work_gives_slice_r_max_epochs_times_r_over_r_plus_1():
    from training.sisa import slice_schedule

    cfg = TrainConfig(slices=4, shard=Schedule(max_epochs=40, slice_work="equal"))
    assert [slice_schedule(cfg, r).max_epochs for r in range(4)] == [160, 80, 53, 40]
    assert [slice_schedule(cfg, r).lr for r in range(4)] == [cfg.shard.lr] * 4
    plain = TrainConfig(slices=4, shard=Schedule(max_epochs=40))
    assert [slice_schedule(plain, r).max_epochs for r in range(4)] == [40] * 4
    with pytest.raises(ValidationError, match="slice_work"):
        Schedule(slice_work="equal", slice_epochs=5)
    with pytest.raises(ValidationError, match="slice_work"):
        Schedule(slice_work="equal", replay=0.25)


def test_equal_slice_work_trains_each_slice_its_epochs_and_deletes_exactly(tmp_path):
    data = placed(people(12))
    first = train_shard(0, data, EQUAL, base=None, out_dir=tmp_path / "shard")
    epochs = [sum(1 for e in first.epochs if e["slice"] == r) for r in range(EQUAL.slices)]
    assert epochs == [9, 4, 3]  # target_loss 0: every slice runs its cap, 3 × 3/(r+1)
    assert_a_slice_1_deletion_is_exact(data, EQUAL, tmp_path)


def assert_a_slice_1_deletion_is_exact(data, cfg, tmp_path):
    """Delete a record of slice 1 from the shard trained in ``tmp_path / "shard"``: only
    slices 1.. retrain, and the result equals training from scratch without it."""
    victim_slice, victim = min(data, key=lambda x: (x[0] != 1, x[1].record_id))  # slice 1
    kept = [x for x in data if x[1] != victim]
    deleted = train_shard(0, kept, cfg, base=None, out_dir=tmp_path / "shard")
    assert deleted.trained == list(range(victim_slice, cfg.slices))
    train_shard(0, kept, cfg, base=None, out_dir=tmp_path / "scratch")
    a, b = weights(tmp_path / "shard"), weights(tmp_path / "scratch")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_steps_per_epoch_counts_the_batches_an_epoch_makes():
    from training.loop import batches, steps_per_epoch

    for n in (1, 7, 8, 9, 63, 64, 65, 130, 200):
        made = batches([[0]] * n, 8, torch.Generator().manual_seed(n))
        assert steps_per_epoch(n, 8) == len(made), n


def test_min_steps_raises_a_small_slices_epoch_cap_and_leaves_the_rest_alone():
    from training.sisa import slice_schedule

    cfg = TrainConfig(slices=4, shard=Schedule(max_epochs=40, slice_work="equal", min_steps=265))
    # the demo's full shard 0: 2, 4, 5, 7 steps an epoch; every cap already allows 265 steps
    full = [slice_schedule(cfg, r, spe).max_epochs for r, spe in enumerate([2, 4, 5, 7])]
    assert full == [160, 80, 53, 40]
    # after deletions took 40% of its records: 1, 3, 3, 4 steps; the caps rise to 265 steps
    shrunk = [slice_schedule(cfg, r, spe).max_epochs for r, spe in enumerate([1, 3, 3, 4])]
    assert shrunk == [265, 89, 89, 67]
    # fixed-epoch slices keep their epochs (they are the schedule, not a cap); DP-SGD refuses it
    fixed = TrainConfig(slices=4, shard=Schedule(max_epochs=40, slice_epochs=5, min_steps=265))
    assert [slice_schedule(fixed, r, 3).max_epochs for r in range(4)] == [5, 5, 5, 89]
    with pytest.raises(ValidationError, match="min_steps"):
        TrainConfig(shard=Schedule(min_steps=265), dp=DPConfig(enabled=True))


def test_min_steps_trains_the_floor_and_deletes_exactly(tmp_path):
    """Set, the floor enters the address (unset it does not: test_dp_secret.py) and trains."""
    from training.sisa import config_digest

    floor = TINY.shard.model_copy(update={"min_steps": 20})
    assert config_digest(TINY, floor) != config_digest(TINY, TINY.shard)
    cfg = TINY.model_copy(update={"shard": floor})
    data = placed(people(12))  # about 6 records a slice: one step an epoch on slice 0
    plain = train_shard(0, data, TINY, base=None, out_dir=tmp_path / "plain")
    result = train_shard(0, data, cfg, base=None, out_dir=tmp_path / "shard")
    steps = lambda res, r: sum(e["steps"] for e in res.epochs if e["slice"] == r)  # noqa: E731
    for r in range(cfg.slices):
        assert steps(plain, r) < 20 <= steps(result, r), r  # target_loss 0: each runs its cap
    assert_a_slice_1_deletion_is_exact(data, cfg, tmp_path)


def test_a_first_slice_from_the_base_starts_from_a_generator_seeded_by_seed_and_shard(tmp_path):
    """Dropout draws from torch's global generator. A shard's first slice trained from the
    base seeds it as an init is, so its bits do not depend on what its process ran before
    (a pool worker trains several shards; a deletion retrains one alone)."""
    from training.sisa import _start_model, train_base
    from training.tokenizer import tokenizer_for

    cfg = TINY
    train_base([], cfg, tmp_path / "base")  # no records: the model as built, saved
    tok = tokenizer_for(cfg.model)
    draws = []
    for shard, before in ((0, 5), (0, 9), (1, 5)):
        torch.manual_seed(before)
        torch.rand(before)  # what an earlier shard in the same process left behind
        _start_model(shard, cfg, tok, None, tmp_path / "base")
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])  # the same shard: the same stream, whatever came first
    assert not torch.equal(draws[0], draws[2])  # another shard: its own
