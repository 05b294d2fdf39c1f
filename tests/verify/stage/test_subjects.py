"""Subjects score like the release's ensemble, and shared components are scored once."""

from __future__ import annotations

import pytest
import torch

from training.config import ModelConfig
from training.ensemble import Ensemble
from training.model import build_model
from training.tokenizer import ByteTokenizer
from verify.subjects import Component, ScoreCache, Subject

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def models():
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    return [build_model(cfg, TOK, seed=s).eval() for s in range(3)]


SEQS = [TOK.encode(t) for t in ("Ann was born in 1990.", "Bo lives in Rome.", "x")]


@pytest.mark.parametrize("rule", ["bma", "mean"])
def test_a_subject_scores_as_the_ensemble_does(models, rule):
    subject = Subject("s", [Component(m, f"m{i}") for i, m in enumerate(models)], rule=rule,
                      cache=ScoreCache())  # fmt: skip
    want = Ensemble(models, TOK, rule=rule).next_token_logprobs_batch(SEQS)
    got = subject.next_token_logprobs_batch(SEQS)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    uncached = Subject("s", subject.components, rule=rule, cache=None)
    for a, b in zip(uncached.next_token_logprobs_batch(SEQS), want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_components_shared_by_two_subjects_are_scored_once(models):
    cache = ScoreCache()
    shared = [Component(models[0], "a"), Component(models[1], "b")]
    one = Subject("one", [*shared, Component(models[2], "c")], rule="bma", cache=cache)
    two = Subject("two", [*shared, Component(models[0], "c-unlearned")], rule="bma", cache=cache)
    one.next_token_logprobs_batch(SEQS)
    assert (cache.hits, cache.misses) == (0, 9)
    two.next_token_logprobs_batch(SEQS)
    assert (cache.hits, cache.misses) == (6, 12)  # only the swapped component is new


def test_a_full_cache_drops_its_oldest_rows_and_scores_them_again_the_same(models):
    subject = Subject("s", [Component(m, f"m{i}") for i, m in enumerate(models)], rule="bma",
                      cache=ScoreCache())  # fmt: skip
    want = subject.next_token_logprobs_batch(SEQS)
    row_bytes = ScoreCache().logprobs(Component(models[0], "x"), SEQS[:1])[0].numel() * 4
    small = ScoreCache(max_bytes=4 * row_bytes)  # room for about 4 of the 9 rows
    tight = Subject("s", subject.components, rule="bma", cache=small)
    for _ in range(2):
        got = tight.next_token_logprobs_batch(SEQS)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    assert small.evicted > 0 and small.nbytes <= small.max_bytes
    assert small.misses > 9  # evicted rows were computed again


def test_greedy_batch_matches_one_by_one_generation(models):
    ensemble = Ensemble(models, TOK, rule="bma")
    subject = Subject("s", [Component(m, str(i)) for i, m in enumerate(models)], rule="bma",
                      cache=None)  # fmt: skip
    prompts = [TOK.encode(t, eos=False) for t in ("Ann was b", "Bo lives ")]
    got = subject.greedy_batch(prompts, 8)
    want = [ensemble.generate(TOK.decode(p[1:]), max_new_tokens=8) for p in prompts]
    assert got == want


def test_greedy_batch_refuses_prompts_of_different_lengths(models):
    subject = Subject("s", [Component(models[0], "a")], rule="bma", cache=None)
    with pytest.raises(ValueError, match="one length"):
        subject.greedy_batch([TOK.encode("ab", eos=False), TOK.encode("abc", eos=False)], 2)


@pytest.mark.parametrize("rule", ["bma", "mean"])
def test_rows_from_a_start_are_the_same_rows(models, rule):
    """``starts`` spares rows nobody reads: the ensemble's rows are the full call's, bit for
    bit; a subject also runs each prompt once, so its rows agree to float rounding."""
    subject = Subject("s", [Component(m, f"m{i}") for i, m in enumerate(models)], rule=rule,
                      cache=ScoreCache())  # fmt: skip
    starts = [len(SEQS[0]) - 1, 5, 0]
    ensemble = Ensemble(models, TOK, rule=rule).next_token_logprobs_batch
    for scorer, exact in ((ensemble, True), (subject.next_token_logprobs_batch, False)):
        full = scorer(SEQS)
        for whole, part, k in zip(full, scorer(SEQS, starts), starts, strict=True):
            assert part.shape[0] == len(whole) - k
            if exact:
                assert torch.equal(whole[k:], part)
            else:
                torch.testing.assert_close(part, whole[k:], rtol=0, atol=1e-5)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )).eval()  # fmt: skip


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_prompts_are_run_once_and_score_as_the_whole_sequences(models, family,
                                                                      monkeypatch):  # fmt: skip
    from training.ensemble import batch_logprobs
    from verify import subjects

    model = models[0] if family == "gpt2" else _tiny_llama()
    long = TOK.encode("The account recovery code of Ann Lee is", eos=False)
    short = TOK.encode("Bo was born in", eos=False)
    endings = [list(TOK.encode(e, bos=False)) for e in ("123456.", "9.", "000111", "42", "7")]
    pairs = [(long, e) for e in endings] + [(short, e) for e in endings[:3]] + [(long, [5])]
    pairs.append(pairs[1])  # a pair asked twice is run once
    # batches of two: each prompt alone (prompts of one length only), endings two at a time
    monkeypatch.setattr(subjects, "_PROMPT_BATCH", 2)
    positions = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: positions.append(kw["input_ids"].numel()), with_kwargs=True
    )
    try:
        got = subjects.prompt_shared_logprobs(model, pairs)
    finally:
        hook.remove()
    want = batch_logprobs(model, [p + e for p, e in pairs])
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    run = len(long) + len(short)
    for prompt in (long, short):
        ends = list(dict.fromkeys(tuple(e) for p, e in pairs if p == prompt))
        run += sum(
            len(b) * max(map(len, b)) for b in (ends[k : k + 2] for k in range(0, 9, 2)) if b
        )
    assert sum(positions) == run < sum(len(p) + len(e) for p, e in pairs) / 2


def test_a_sliding_window_model_scores_prompts_of_any_lengths_as_whole_sequences():
    """A sliding-window cache keeps only its last slots: a short prompt padded beside a long
    one would have lost its tokens, so prompts of different lengths never share a batch."""
    from transformers import MistralConfig, MistralForCausalLM

    from training.ensemble import batch_logprobs
    from verify.subjects import prompt_shared_logprobs

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        sliding_window=8,
    )).eval()  # fmt: skip
    pairs = [([1] * 12, [2]), ([5, 6, 7], [8, 9]), ([5, 6, 7], [10]), ([1] * 12, [3, 4, 5])]
    got = prompt_shared_logprobs(model, pairs)
    for a, b in zip(got, batch_logprobs(model, [p + e for p, e in pairs]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_an_ending_padded_past_the_context_is_scored_as_its_whole_sequence(models):
    """A long prompt's short ending and a short prompt's long ending, near the 64-token
    context: each scores as its whole sequence."""
    from training.ensemble import batch_logprobs
    from verify.subjects import prompt_shared_logprobs

    long, short = [TOK.bos_id, *range(70, 124)], TOK.encode("Bo", eos=False)
    pairs = [(long, [80, 81, 82]), (short, list(range(90, 110)))]
    assert all(len(p) + len(e) <= 64 for p, e in pairs) and len(long) + 20 > 64
    got = prompt_shared_logprobs(models[0], pairs)
    for a, b in zip(got, batch_logprobs(models[0], [p + e for p, e in pairs]), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_a_cache_keeps_rows_by_prompt_and_scores_the_rest_whole(models):
    """Rows scored with a prompt and without it are kept apart (they agree to rounding); a
    sequence that is all prompt is scored whole."""
    cache, c = ScoreCache(), Component(models[0], "m0")
    prompt = TOK.encode("Bo lives in", eos=False)
    seqs = [prompt + TOK.encode(x, bos=False) for x in (" Rome.", " Oslo.")] + [prompt]
    split = cache.logprobs(c, seqs, [len(prompt), len(prompt), len(prompt)])
    whole = cache.logprobs(c, seqs)
    assert cache.misses == 5 and cache.hits == 1  # all prompt: keyed as no prompt, found again
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    again = cache.logprobs(c, seqs, [len(prompt)] * 3)
    assert cache.hits == 4 and all(torch.equal(a, b) for a, b in zip(again, split, strict=True))


def test_verification_parts_run_only_as_many_at_once_as_memory_holds(models, monkeypatch):
    from verify import run as verify_run
    from verify.run import Loaded, fitting_workers, part_bytes

    loaded = Loaded([Component(m, f"m{i}") for i, m in enumerate(models)],
                    {"retrain": Component(models[0], "m0")}, {"retrain": "m0"}, None)  # fmt: skip
    weights = sum(t.numel() * t.element_size() for m in models for t in m.state_dict().values())
    from verify.subjects import CACHE_BYTES

    assert part_bytes(loaded) == 2 * weights + CACHE_BYTES  # m0 counted once
    need = part_bytes(loaded)
    for available, want in [(10 * need, 4), (2 * need + 1, 2), (need - 1, 1), (0, 1)]:
        monkeypatch.setattr(verify_run, "_available", lambda a=available: a)
        assert fitting_workers(part_bytes(loaded), 4) == want


def test_available_memory_is_the_kernels_estimate_not_free_pages(tmp_path):
    from verify.run import _available

    # page cache (Cached) counts as available: free alone would say 1 GiB here
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24576000 kB\nMemFree:         1048576 kB\n"
                    "MemAvailable:   20971520 kB\nCached:         18000000 kB\n")  # fmt: skip
    assert _available(info) == 20971520 * 1024
    # no meminfo (not Linux): the free pages, a positive number of bytes
    assert _available(tmp_path / "absent") > 0


def test_fused_activations_compute_the_same_model_on_one_kernel(tmp_path):
    from transformers.activations import GELUTanh, NewGELUActivation

    from verify.subjects import load_component, weights_digest

    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, n_positions=64)
    stock = build_model(cfg, TOK, seed=5).eval()
    stock.save_pretrained(tmp_path / "m")
    ids = torch.tensor([TOK.encode("Ann was born in 1990; Bo lives in Rome.")])
    with torch.no_grad():
        want = stock(input_ids=ids).logits
    kinds = {type(m) for m in stock.modules()}
    assert NewGELUActivation in kinds and GELUTanh not in kinds  # what the test is about

    c = load_component(tmp_path / "m")
    kinds = {type(m) for m in c.model.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    assert c.key == weights_digest(tmp_path / "m")  # the released weights, untouched
    with torch.no_grad():
        got = c.model(input_ids=ids).logits
    assert torch.allclose(got, want, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_fused_activations_leave_other_activations_alone():
    from transformers import GPT2Config, GPT2LMHeadModel

    from verify.subjects import fused_activations

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40,
                                       activation_function="relu"))  # fmt: skip
    before = [type(m) for m in model.modules()]
    assert [type(m) for m in fused_activations(model).modules()] == before
