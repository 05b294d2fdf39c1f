"""Subjects under test: shard ensembles whose component models are scored once and reused.

Every subject of one verification is the released ensemble with its forget
shard swapped: as released (``original``), trained without the forget set
(``retrain``), exactly deleted (``exact``) or post-hoc unlearned
(``approx:<method>``). The other shards are the same files in all of them,
so their log-probabilities are memoized by the weights' digest (and the
attack applied to them) and computed once per verification, not once per
subject. The combination rule is the release's (``training.ensemble``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.ensemble import batch_logprobs, context_length, get_rule, right_padded
from training.model import adapter_base, is_adapter, load_model
from training.tokenizer import ByteTokenizer, Tokenizer

TOKENIZER = ByteTokenizer()


def weights_digest(model_dir: Path) -> str:
    """sha256 of a model directory's weights: what identifies a component.

    A LoRA adapter is identified by its weights and then its base's, since it
    means nothing without them.
    """
    h, model_dir = hashlib.sha256(), Path(model_dir)
    files = [model_dir / "model.safetensors"]
    if is_adapter(model_dir):
        files = [model_dir / "adapter_model.safetensors", adapter_base(model_dir) / files[0].name]
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class Component:
    """One shard model; ``key`` names its weights (digest, plus any attack applied)."""

    model: torch.nn.Module
    key: str


CACHE_BYTES = 2 << 30  # per process; a row is T x vocabulary floats


@dataclass
class ScoreCache:
    """Per-sequence log-probs of components, keyed by (component key, token ids).

    Bounded: past ``max_bytes`` the least recently used rows are dropped and,
    if asked for again, computed again. The byte-level demo's rows never come
    near it; with a 49,152-token vocabulary one 30-token sequence holds 5.9 MB,
    and an unbounded cache of every subject's components outgrew 24 GiB.
    """

    rows: OrderedDict[tuple[str, tuple[int, ...], int], torch.Tensor] = field(
        default_factory=OrderedDict
    )
    max_bytes: int = CACHE_BYTES
    nbytes: int = 0
    hits: int = 0
    misses: int = 0
    evicted: int = 0

    def logprobs(
        self, c: Component, seqs: Sequence[Sequence[int]], prompts: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Each sequence's rows under ``c``; ``prompts[i]``: the length of sequence i's prompt.

        Sequences that share a prompt are scored with the prompt run once
        (:func:`prompt_shared_logprobs`); a row is kept under the sequence and
        its prompt length, since the two ways of computing it agree only to
        float rounding.
        """
        prompts = _splitting(c.model, seqs, prompts)  # one that splits nothing keys as none
        keys = [(c.key, tuple(s), p) for s, p in zip(seqs, prompts, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        out: dict[int, torch.Tensor] = {}
        if todo:
            for i, rows in zip(todo, _score(c.model, [seqs[i] for i in todo],
                                            [prompts[i] for i in todo]), strict=True):  # fmt: skip
                out[i] = rows.float()
        for i, k in enumerate(keys):
            if i not in out:
                out[i] = self.rows[k]
                self.rows.move_to_end(k)
        for i in todo:
            self._keep(keys[i], out[i])
        self.hits += len(seqs) - len(todo)
        self.misses += len(todo)
        return [out[i].double() for i in range(len(keys))]

    def _keep(self, key, rows: torch.Tensor) -> None:
        if key in self.rows:
            return
        self.rows[key] = rows
        self.nbytes += rows.numel() * rows.element_size()
        while self.nbytes > self.max_bytes and len(self.rows) > 1:
            _, old = self.rows.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
            self.evicted += 1


class Subject:
    """A shard ensemble under test, with the same scoring interface as ``Ensemble``."""

    def __init__(
        self,
        name: str,
        components: Sequence[Component],
        *,
        rule: str,
        cache: ScoreCache | None,
        tokenizer: Tokenizer = TOKENIZER,
    ) -> None:
        """``cache=None`` scores afresh: for sampling, where sequences never repeat.

        ``tokenizer``: the models' own (``tokenizer_for(cfg.model)``; default bytes).
        """
        self.name, self.components, self.rule = name, list(components), rule
        self._rule, self.cache, self.tokenizer = get_rule(rule), cache, tokenizer

    shares_prompts = True  # next_token_logprobs_batch takes ``prompts`` (the extraction asks)

    def next_token_logprobs_batch(
        self,
        seqs: Sequence[Sequence[int]],
        starts: Sequence[int] | None = None,
        prompts: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Combined rows per sequence; ``starts``: row i holds positions ``starts[i]..`` only.

        With a cache, positions ``..starts[i]`` are taken as sequence i's prompt
        unless ``prompts`` gives its length: sequences sharing one (a probe's
        candidate answers, a canary's alternatives, the samples drawn from one
        prompt) run it once. Their rows agree with the whole sequences' to
        float rounding, not bit for bit.
        """
        if prompts is None and starts and self.cache is not None:
            prompts = [k + 1 for k in starts]
        if self.cache is None:  # sampling: sequences seldom repeat, so nothing is kept
            per = [_score(c.model, seqs, prompts) for c in self.components]
        else:
            per = [self.cache.logprobs(c, seqs, prompts) for c in self.components]
        starts = starts or [0] * len(seqs)
        return [
            self._rule(
                torch.stack([rows[i] for rows in per]), torch.tensor(seqs[i]).long(), starts[i]
            )
            for i in range(len(seqs))
        ]

    def next_token_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        """Uncached: for generation, where every step is a new sequence."""
        seq = [int(i) for i in ids]
        per = [batch_logprobs(c.model, [seq])[0] for c in self.components]
        return self._rule(torch.stack(per), torch.tensor(seq).long())

    def context_length(self) -> int:
        return min(context_length(c.model) for c in self.components)

    @torch.no_grad()
    def greedy_batch(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of same-length prompts, advanced together; stop at EOS.

        Each component keeps its key/value cache, so a step costs one token's
        forward per component; the rule still sees every row since BOS (BMA
        weights shards by the whole prefix), exactly as in scoring.
        """
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("greedy_batch needs prompts of one length (no padding)")
        if len(prompts[0]) + max_new_tokens > self.context_length():
            raise ValueError(
                f"{len(prompts[0])} prompt + {max_new_tokens} new tokens exceed the context "
                f"of {self.context_length()}"
            )
        ids = torch.tensor([list(p) for p in prompts])
        outs = [c.model(input_ids=ids, use_cache=True) for c in self.components]
        past = [out.past_key_values for out in outs]
        # every row since BOS, written in place as the sequences grow (no copy per step)
        width, vocab = ids.shape[1] + max_new_tokens, outs[0].logits.shape[-1]
        full = outs[0].logits.new_empty(
            (len(outs), len(prompts), width, vocab), dtype=torch.float64
        )
        for k, out in enumerate(outs):
            full[k, :, : ids.shape[1]] = torch.log_softmax(out.logits.double(), dim=-1)
        del outs
        new = torch.empty((len(prompts), 0), dtype=torch.long)
        done = torch.zeros(len(prompts), dtype=torch.bool)
        for _ in range(max_new_tokens):
            seqs = torch.cat([ids, new], dim=1)
            n = seqs.shape[1]
            step = torch.tensor(
                [
                    int(self._rule(full[:, i, :n], seqs[i], n - 1)[-1].argmax())
                    for i in range(len(prompts))
                ]
            )
            step = torch.where(done, self.tokenizer.eos_id, step)
            new = torch.cat([new, step.unsqueeze(1)], dim=1)
            done |= step == self.tokenizer.eos_id
            if bool(done.all()):
                break
            for k, c in enumerate(self.components):
                out = c.model(input_ids=step.unsqueeze(1), past_key_values=past[k], use_cache=True)
                full[k, :, n] = torch.log_softmax(out.logits[:, -1].double(), dim=-1)
                past[k] = out.past_key_values
        return [self.tokenizer.decode(row.tolist()) for row in new]


_PROMPT_BATCH = 32  # prompts per forward pass, and endings per forward pass after them


def _splitting(model, seqs: Sequence[Sequence[int]], prompts: Sequence[int] | None) -> list[int]:
    """Each prompt length that splits its sequence (``0 < p < len``, the whole within the
    context), else 0: that sequence is run whole."""
    n = context_length(model)
    return [p if 0 < p < len(s) <= n else 0
            for s, p in zip(seqs, prompts or [0] * len(seqs), strict=True)]  # fmt: skip


def _score(model: torch.nn.Module, seqs: Sequence[Sequence[int]],
           prompts: Sequence[int] | None) -> list[torch.Tensor]:  # fmt: skip
    """Rows of every sequence: those with a prompt (``0 < p < len``, within the context)
    scored with each distinct prompt run once, the rest as :func:`batch_logprobs` does."""
    prompts, out = _splitting(model, seqs, prompts), [None] * len(seqs)
    split = [i for i, p in enumerate(prompts) if p]
    plain = [i for i, p in enumerate(prompts) if not p]
    pairs = [(seqs[i][: prompts[i]], seqs[i][prompts[i] :]) for i in split]
    for i, r in zip(split, prompt_shared_logprobs(model, pairs), strict=True):
        out[i] = r
    whole = list(dict.fromkeys(tuple(seqs[i]) for i in plain))  # each distinct sequence once
    rows = dict(zip(whole, batch_logprobs(model, whole), strict=True))
    for i in plain:
        out[i] = rows[tuple(seqs[i])]
    return out


@torch.no_grad()
def prompt_shared_logprobs(
    model: torch.nn.Module, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]
) -> list[torch.Tensor]:
    """Per ``(prompt, ending)``, the rows ``[len(prompt) + len(ending), V]`` (float64) of the
    whole sequence, each distinct prompt (and each distinct pair) run once.

    Prompts of one length run together, and their keys and values are reused
    by every ending that follows them (endings batched, padded after their real
    tokens and masked). A prompt batch holds no padding: a sliding-window cache
    keeps only its last slots, which for a short prompt padded to a long one
    would be padding. Scoring a fact's candidate answers or a canary's
    alternatives this way costs each prompt once and the endings, not one
    whole sequence each. The rows agree with one forward of each whole
    sequence to float rounding (a log-probability within about 1e-5 on the
    demo's model, 5e-5 on SmolLM2-135M).
    """
    import copy

    unique = list(dict.fromkeys((tuple(p), tuple(e)) for p, e in pairs))
    by_length: dict[int, list[tuple[int, ...]]] = {}
    for p in dict.fromkeys(p for p, _ in unique):
        by_length.setdefault(len(p), []).append(p)
    rows_of: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    for length, prompts in by_length.items():
        for first in range(0, len(prompts), _PROMPT_BATCH):
            chunk = prompts[first : first + _PROMPT_BATCH]
            where = {p: k for k, p in enumerate(chunk)}
            ran = model(input_ids=torch.tensor([list(p) for p in chunk]), use_cache=True)
            heads = [torch.log_softmax(ran.logits[k].double(), dim=-1) for k in range(len(chunk))]
            todo = [(p, e) for p, e in unique if p in where]
            for k in range(0, len(todo), _PROMPT_BATCH):
                batch = todo[k : k + _PROMPT_BATCH]
                rows = [where[p] for p, _ in batch]
                ends, end_mask = right_padded([e for _, e in batch])
                past = copy.deepcopy(ran.past_key_values)
                past.batch_select_indices(torch.tensor(rows))
                mask = torch.cat([torch.ones((len(batch), length), dtype=torch.long), end_mask], 1)
                # every ending fits the context after its prompt, so its padding does too
                positions = (length + torch.arange(ends.shape[1])).expand(len(batch), -1)
                logits = model(input_ids=ends, attention_mask=mask, past_key_values=past,
                               position_ids=positions).logits  # fmt: skip
                for j, ((p, e), r) in enumerate(zip(batch, rows, strict=True)):
                    tail = torch.log_softmax(logits[j, : len(e)].double(), dim=-1)
                    rows_of[(p, e)] = torch.cat([heads[r], tail])
    return [rows_of[(tuple(p), tuple(e))] for p, e in pairs]


def load_component(model_dir: Path) -> Component:
    """A released model as the verification sees it: a LoRA adapter merged into its base.

    Its activations run on torch's fused kernels (:func:`fused_activations`); the
    weights, and so the component's key, are the released ones.
    """
    model = fused_activations(load_model(Path(model_dir), merge=True))
    return Component(model, weights_digest(Path(model_dir)))


def fused_activations(model: torch.nn.Module) -> torch.nn.Module:
    """GPT-2's ``gelu_new``, computed by torch's fused tanh-GELU instead of op by op.

    The same formula, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, in one
    kernel rather than seven: on CPU, measuring a subject of the demo takes
    1.2x less time with it (``bench/bench_measure.py``). The two agree to
    float32 rounding (an element differs by at most a unit or two in the last
    place); a model is changed in place and returned. Other activations are
    left as they are.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model


def transform(
    c: Component, name: str, fn: Callable[[torch.nn.Module], torch.nn.Module], memo: dict
) -> Component:
    """``fn`` applied to a component, once per (weights, transform) in one verification."""
    key = f"{c.key}+{name}"
    if key not in memo:
        memo[key] = Component(fn(c.model), key)
    return memo[key]
