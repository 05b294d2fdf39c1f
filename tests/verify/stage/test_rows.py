"""Components' rows kept between runs: read back bit for bit, only for the same call, pruned."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from training.config import ModelConfig
from training.model import build_model
from training.tokenizer import ByteTokenizer
from verify.rows import RowStore, prune, prune_models
from verify.subjects import Component, ScoreCache, Subject

TOK = ByteTokenizer()
SEQS = [TOK.encode(t) for t in ("Ann was born in 1990.", "Bo lives in Rome.", "x")]
ANSWERS = [TOK.encode("Ann lives in " + city) for city in ("Rome", "Oslo", "Lima")]
PROMPT = len(TOK.encode("Ann lives in ", eos=False))


@pytest.fixture(scope="module")
def models():
    """Untrained, with weights scaled up: peaked outputs that differ by position and model,
    so greedy generations are not one repeated token."""
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    out = [build_model(cfg, TOK, seed=s).eval() for s in range(3)]
    with torch.no_grad():
        for m in out:
            for p in m.parameters():
                p.mul_(6.0)
    return out


def _score(subject: Subject) -> list[torch.Tensor]:
    """Two calls, as a measurement makes them: whole texts, then answers sharing a prompt."""
    whole = subject.next_token_logprobs_batch(SEQS)
    starts = [PROMPT - 1] * len(ANSWERS)
    return whole + subject.next_token_logprobs_batch(ANSWERS, starts)


def _never_built(key: str) -> Component:
    def load():
        raise AssertionError(f"component {key} was built: its rows should have been read")

    return Component(None, key, load=load, context=64)


def _subject(comps, store) -> Subject:
    return Subject("s", comps, rule="bma", cache=ScoreCache(store=store))


def test_rows_read_back_are_the_rows_computed_and_the_models_are_never_built(models, tmp_path):
    first = RowStore(tmp_path, "run")
    want = _score(_subject([Component(m, f"m{i}") for i, m in enumerate(models)], first))
    assert (first.hits, first.misses) == (0, 6) and first.written > 0
    again = RowStore(tmp_path, "run")
    lazy = [_never_built(f"m{i}") for i in range(3)]
    got = _score(_subject(lazy, again))
    assert (again.hits, again.misses) == (6, 0)
    assert not any(c.built for c in lazy)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_after_one_component_changes_only_it_is_computed_and_the_rows_equal_a_fresh_run(
    models, tmp_path
):
    _score(_subject([Component(models[0], "old"), Component(models[1], "kept")],
                    RowStore(tmp_path, "run")))  # fmt: skip
    store = RowStore(tmp_path, "run")
    kept = _never_built("kept")
    got = _score(_subject([Component(models[2], "new"), kept], store))
    assert (store.hits, store.misses) == (2, 2)  # the kept component's two calls read back
    fresh = _score(_subject([Component(models[2], "new"), Component(models[1], "kept")], None))
    for a, b in zip(got, fresh, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change", ["scope", "key", "sequences", "prompts"])
def test_another_scope_component_or_call_is_never_read(models, tmp_path, change):
    store = RowStore(tmp_path, "run")
    store.put("k", SEQS, [0, 3, 0], [torch.zeros(len(s), 4) for s in SEQS])
    seqs, prompts, key, scope = list(SEQS), [0, 3, 0], "k", "run"
    if change == "scope":
        scope = "another run"
    elif change == "key":
        key = "k+quantize_rtn_int4"
    elif change == "sequences":
        seqs[2] = TOK.encode("y")
    else:
        prompts = [0, 4, 0]
    assert RowStore(tmp_path, scope).get(key, seqs, prompts) is None
    assert RowStore(tmp_path, "run").get("k", SEQS, [0, 3, 0]) is not None


def test_a_damaged_file_is_computed_again_to_the_same_rows(models, tmp_path):
    comps = [Component(m, f"m{i}") for i, m in enumerate(models)]
    want = _score(_subject(comps, RowStore(tmp_path, "run")))
    for f in (tmp_path / "run").rglob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:40])
    store = RowStore(tmp_path, "run")
    got = _score(_subject(comps, store))
    assert (store.hits, store.misses) == (0, 6)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_past_the_budget_rows_are_computed_and_not_kept(models, tmp_path):
    store = RowStore(tmp_path, "run", budget=1)
    _score(_subject([Component(models[0], "m0")], store))
    assert store.written == 0 and not list(tmp_path.rglob("*.safetensors"))


def _tree(where, layout: dict[str, list[str]]) -> None:
    for scope, digests in layout.items():
        for d in digests:
            (where / scope / d).mkdir(parents=True)
            (where / scope / d / "call.safetensors").write_bytes(b"rows")


def test_a_run_keeps_only_its_own_scope_and_models(tmp_path):
    _tree(tmp_path, {"old-run": ["a", "b"], "run": ["a", "b", "gone"]})
    gone = prune(tmp_path, "run", ["a", "b", "not stored"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in gone) == ["old-run", "run/gone"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["a", "b"]
    assert not (tmp_path / "old-run").exists()


def test_a_deletion_keeps_only_the_rows_of_the_models_its_verification_measured(tmp_path):
    from exante._purge import _purge_rows
    from lineage.layout import LAYOUT

    rows = tmp_path / LAYOUT.verify_rows
    _tree(rows, {"run": ["s0-old", "s0-new", "s1", "retrain"]})
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"verify": {"cmd": "x"}}}))
    results = tmp_path / LAYOUT.verification_files.results
    results.parent.mkdir(parents=True)
    results.write_text(
        json.dumps(
            {
                "released_sha256": ["s0-new", "s1"],
                "subjects": {"retrain": {"forget_shard_sha256": "retrain"}},
            }
        )
    )
    gone = _purge_rows(tmp_path)
    assert [p.name for p in gone] == ["s0-old"]
    assert sorted(p.name for p in (rows / "run").iterdir()) == ["retrain", "s0-new", "s1"]
    results.write_text("{")  # unreadable: nothing says which models are current
    assert _purge_rows(tmp_path) == [rows] and not rows.exists()


def test_without_the_verify_stage_a_deletion_leaves_no_rows(tmp_path):
    from exante._purge import _purge_rows
    from lineage.layout import LAYOUT

    rows = tmp_path / LAYOUT.verify_rows
    _tree(rows, {"run": ["a"]})
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"cmd": "x"}}}))
    assert _purge_rows(tmp_path) == [rows] and not rows.exists()
    assert prune_models(rows, None) == []  # nothing left to remove


def test_a_relearning_curve_trains_only_when_a_model_is_needed(models):
    import copy

    from verify.attacks.relearn import relearn_curve
    from verify.run import _Curve

    texts = ["Ann was born in 1990.", "Bo lives in Rome."]
    kw = {"ks": [0, 2, 4], "lr": 1e-2, "batch_size": 2, "seed": 0, "n_positions": 64}
    started: list[int] = []

    def start():
        started.append(1)
        return relearn_curve(copy.deepcopy(models[0]), texts, **kw)

    curve = _Curve(start)
    assert not started
    want = dict(relearn_curve(copy.deepcopy(models[0]), texts, **kw))
    got = curve.at(4)  # 0 and 2 skipped: their rows were read
    assert started == [1]
    for a, b in zip(got.state_dict().values(), want[4].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="asked for after"):
        curve.at(2)


PROMPTS = [TOK.encode(t, eos=False)[:6] for t in ("Ann was born", "Bo lives in", "Cy works at")]


def _greedy(comps, store) -> list[str]:
    return _subject(comps, store).greedy_batch(PROMPTS, 12)


def test_a_generation_read_back_is_the_one_computed_and_builds_no_model(models, tmp_path):
    comps = [Component(m, f"m{i}") for i, m in enumerate(models)]
    want = _greedy(comps, None)
    assert _greedy(comps, RowStore(tmp_path, "run")) == want
    lazy = [_never_built(f"m{i}") for i in range(3)]
    assert _greedy(lazy, RowStore(tmp_path, "run")) == want
    assert not any(c.built for c in lazy)


class _Counted(torch.nn.Module):
    """A model that counts its forward calls (a component run live, or replayed)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.calls = model, model.config, 0

    def forward(self, **kw):
        self.calls += 1
        return self.inner(**kw)


def test_when_the_ensemble_chooses_other_tokens_the_kept_component_runs_to_the_same_logits(
    models, tmp_path
):
    """Another first component steers the generation elsewhere: the stored one is replayed
    from its prompt and goes on live; the texts are a fresh run's."""
    _greedy([Component(models[0], "old"), Component(models[1], "kept")],
            RowStore(tmp_path, "run"))  # fmt: skip
    counted = _Counted(models[1])
    got = _greedy([Component(models[2], "new"), Component(counted, "kept")],
                  RowStore(tmp_path, "run"))  # fmt: skip
    fresh = _greedy([Component(models[2], "new"), Component(models[1], "kept")], None)
    assert got == fresh
    old = _greedy([Component(models[0], "old"), Component(models[1], "kept")], None)
    assert old != fresh  # the generation did change course, so the replay was exercised
    assert counted.calls > 0


def test_a_token_the_stored_run_did_not_feed_replays_the_stored_steps_first(models, tmp_path):
    """Two steps read back, then a new token: the model runs over the prompt and those two
    steps again, then the new ones; each logit equals a run without the store."""
    from verify.subjects import _Steps

    ids = torch.tensor(PROMPTS)
    tokens = [torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10]), torch.tensor([11, 12, 13])]
    stored = _Steps(Component(models[1], "kept"), ids, 12, RowStore(tmp_path, "run"))
    stored.first()
    for t in tokens:
        stored.feed(t)
    stored.keep()
    counted = _Counted(models[1])
    got = _Steps(Component(counted, "kept"), ids, 12, RowStore(tmp_path, "run"))
    fresh = _Steps(Component(models[1], "kept"), ids, 12, None)
    assert torch.equal(got.first(), fresh.first())
    for t in [*tokens[:2], torch.tensor([1, 2, 3]), torch.tensor([4, 4, 4])]:
        assert torch.equal(got.feed(t), fresh.feed(t))
    assert counted.calls == 1 + 2 + 2  # the prompt, the two stored steps again, two live
