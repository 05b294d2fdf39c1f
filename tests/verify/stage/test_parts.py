"""A verification part is reused only when every input it is measured with is the same."""

from __future__ import annotations

import pytest

from training.config import TrainConfig
from verify import provenance
from verify import run as verify_run
from verify.judging import SHARD
from verify.parts import PartStore, plain
from verify.run import Loaded, PartInputs, _measure_parts
from verify.subjects import Component

PARTS = ["none", "relearn", SHARD]


@pytest.fixture
def measured(monkeypatch):
    """The parts each run measured; each measurement's numbers are new (a counter)."""
    calls: list[str] = []

    def fake(part, dirs, names, inputs, progress, rows=None):
        calls.append(part)
        return {"results": {n: {"metrics": {"n": len(calls)}, "ids": ("a", "b")} for n in names},
                "seconds": 1.5, "null": {}, "hits": 3, "misses": 4}  # fmt: skip

    monkeypatch.setattr(verify_run, "measure_part", fake)
    return calls


def _loaded(released=("w0", "w1"), retrain="r1") -> Loaded:
    comps = [Component(None, k) for k in released]
    return Loaded(comps, {}, {"original": released[1], "retrain": retrain}, None)


def _inputs(shots: int = 0) -> PartInputs:
    return PartInputs(fs=("forget", frozenset({"p2", "p1"})), cfg=TrainConfig(), v=None, s=None,
                      split=None, secrets=(), shots=shots, in_probes=())  # fmt: skip


def _run(store, loaded=None, inputs=None) -> dict[str, dict]:
    outs = _measure_parts(PARTS, loaded or _loaded(), ("original", "retrain"),
                          inputs or _inputs(), lambda line: None, store)  # fmt: skip
    return dict(zip(PARTS, outs, strict=True))


def test_the_same_inputs_reuse_every_part_with_its_stored_numbers(tmp_path, measured):
    store = PartStore(tmp_path / "parts")
    first = _run(store)
    assert measured == PARTS and not any(o["reused"] for o in first.values())
    assert first["none"]["results"]["retrain"]["ids"] == ["a", "b"]  # as it reads back
    again = _run(store)
    assert measured == PARTS  # nothing measured the second time
    for p in PARTS:
        assert again[p]["reused"] and again[p]["key"] == first[p]["key"]
        assert again[p]["results"] == first[p]["results"]
        assert (again[p]["seconds"], again[p]["hits"]) == (0.0, 0)


def test_a_changed_released_shard_re_measures_all_but_the_shard_alone(tmp_path, measured):
    store = PartStore(tmp_path / "parts")
    _run(store)
    measured.clear()
    out = _run(store, _loaded(released=("w0-after-deletion", "w1")))
    assert measured == ["none", "relearn"]
    assert out[SHARD]["reused"] and not out["none"]["reused"]
    assert out["none"]["results"]["original"]["metrics"]["n"] == 1  # measured again


@pytest.mark.parametrize(
    "change", ["forget shard", "inputs", "code", "library", "no store", "bad file"]
)
def test_anything_else_changed_re_measures_every_part(tmp_path, measured, monkeypatch, change):
    store = PartStore(tmp_path / "parts")
    _run(store)
    measured.clear()
    loaded, inputs = _loaded(), _inputs()
    if change == "forget shard":
        loaded = _loaded(retrain="r1-rebuilt")
    elif change == "inputs":
        inputs = _inputs(shots=1)
    elif change == "code":
        monkeypatch.setattr(provenance, "code_digest", lambda entries: "other code")
    elif change == "library":  # optimum-quanto upgraded in place, nothing else
        from verify import parts

        versions = parts.library_versions() | {"optimum-quanto": "9.9.9"}
        monkeypatch.setattr(parts, "library_versions", lambda: versions)
    elif change == "no store":
        store = PartStore(None)
    else:
        for f in (tmp_path / "parts").glob("*.json"):
            f.write_text("{not json")
    out = _run(store, loaded, inputs)
    assert measured == PARTS and not any(o["reused"] for o in out.values())


def test_inputs_digest_the_same_on_every_run_and_refuse_what_they_cannot():
    assert plain(frozenset({"b", "a", "c"})) == ["a", "b", "c"]
    assert plain({"k": (1, {2})}) == {"k": [1, [2]]}
    with pytest.raises(TypeError, match="cannot digest a object"):
        plain(object())


def test_a_pretrained_tokenizer_is_keyed_by_its_files_not_its_path(tmp_path):
    from verify.parts import tokenizer_files

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "tokenizer.json").write_text('{"vocab": 1}')
    (ckpt / "model.safetensors").write_bytes(b"weights: keyed by each component")
    cfg = TrainConfig.model_validate({"model": {"local_path": str(ckpt)}})
    before = tokenizer_files(cfg)
    assert set(before) == {"config.json", "tokenizer.json"}
    (ckpt / "tokenizer.json").write_text('{"vocab": 22}')  # replaced in place, same path
    assert tokenizer_files(cfg)["tokenizer.json"] != before["tokenizer.json"]
    assert tokenizer_files(TrainConfig()) is None  # the byte tokenizer is code


def test_a_store_that_cannot_be_written_only_costs_the_reuse(tmp_path, measured):
    blocked = tmp_path / "parts"
    blocked.write_text("a file where the store's directory should be")
    lines: list[str] = []
    outs = _measure_parts(PARTS, _loaded(), ("original", "retrain"), _inputs(), lines.append,
                          PartStore(blocked))  # fmt: skip
    assert measured == PARTS and not any(o["reused"] for o in outs)
    assert outs[0]["results"]["retrain"]["metrics"]["n"] == 1  # the measured numbers
    assert sum("not stored for reuse" in line for line in lines) == len(PARTS)
