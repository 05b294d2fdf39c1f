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
from verify.rows import RowStore, generation

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


class Component:
    """One shard model; ``key`` names its weights (digest, plus any attack applied).

    A lazy one (``load``) builds its model on first use of :attr:`model`: in a
    run whose rows are stored (:mod:`verify.rows`), a component whose every
    call is read back is never loaded, quantized or relearned. ``context`` (its
    positions) and ``nbytes`` (its weights) are then known without it.
    """

    def __init__(self, model: torch.nn.Module | None, key: str, *,
                 load: Callable[[], torch.nn.Module] | None = None,
                 context: int | None = None, nbytes: int | None = None) -> None:  # fmt: skip
        self._model, self._load, self.key = model, load, key
        self._context, self._nbytes = context, nbytes

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None and self._load is not None:
            self._model, self._load = self._load(), None
        return self._model

    @property
    def built(self) -> bool:
        """Whether the model exists yet (a lazy one not yet used does not)."""
        return self._model is not None

    @property
    def context(self) -> int:
        if self._context is None:
            self._context = context_length(self.model)
        return self._context

    @property
    def nbytes(self) -> int:
        """Bytes of its weights (of the files, for a lazy one not yet built)."""
        if self._nbytes is None or self.built:
            self._nbytes = sum(t.numel() * t.element_size()
                               for t in self.model.state_dict().values())  # fmt: skip
        return self._nbytes

    def derived(self, key: str, fn: Callable[[torch.nn.Module], torch.nn.Module]) -> Component:
        """``fn`` of this component's model, built when it is first used."""
        return Component(None, key, load=lambda: fn(self.model), context=self._context,
                         nbytes=self._nbytes)  # fmt: skip


CACHE_BYTES = 2 << 30  # per process; a row is T x vocabulary floats


@dataclass
class ScoreCache:
    """Per-sequence log-probs of components, keyed by (component key, token ids).

    With a ``store`` (:mod:`verify.rows`), a component's call is read from it
    when an earlier run made the same call, and kept there when computed.
    Bounded: past ``max_bytes`` the least recently used rows are dropped and,
    if asked for again, computed again. The byte-level demo's rows never come
    near it; with a 49,152-token vocabulary one 30-token sequence holds 5.9 MB,
    and an unbounded cache of every subject's components outgrew 24 GiB.
    """

    rows: OrderedDict[tuple[str, tuple[int, ...], int], torch.Tensor] = field(
        default_factory=OrderedDict
    )
    max_bytes: int = CACHE_BYTES
    store: RowStore | None = None  # rows kept between runs (verify.rows): read before computing
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
        prompts = _splitting(c.context, seqs, prompts)  # one that splits nothing keys as none
        keys = [(c.key, tuple(s), p) for s, p in zip(seqs, prompts, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        out: dict[int, torch.Tensor] = {}
        if todo:
            call = [seqs[i] for i in todo], [prompts[i] for i in todo]
            got = self.store.get(c.key, *call) if self.store is not None else None
            if got is None:
                got = [rows.float() for rows in _score(c.model, *call)]
                if self.store is not None:
                    self.store.put(c.key, *call, got)
            out |= dict(zip(todo, got, strict=True))
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
        return min(c.context for c in self.components)

    @torch.no_grad()
    def greedy_batch(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of same-length prompts, advanced together; stop at EOS.

        Each component keeps its key/value cache, so a step costs one token's
        forward per component; the rule still sees every row since BOS (BMA
        weights shards by the whole prefix), exactly as in scoring. With a row
        store, a component's steps are read back while the tokens fed to it are
        the ones stored (:class:`_Steps`).
        """
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("greedy_batch needs prompts of one length (no padding)")
        if len(prompts[0]) + max_new_tokens > self.context_length():
            raise ValueError(
                f"{len(prompts[0])} prompt + {max_new_tokens} new tokens exceed the context "
                f"of {self.context_length()}"
            )
        ids = torch.tensor([list(p) for p in prompts])
        store = self.cache.store if self.cache is not None else None
        steps = [_Steps(c, ids, max_new_tokens, store) for c in self.components]
        first = [s.first() for s in steps]
        # every row since BOS, written in place as the sequences grow (no copy per step)
        width, vocab = ids.shape[1] + max_new_tokens, first[0].shape[-1]
        full = first[0].new_empty((len(steps), len(prompts), width, vocab), dtype=torch.float64)
        for k, logits in enumerate(first):
            full[k, :, : ids.shape[1]] = torch.log_softmax(logits.double(), dim=-1)
        del first
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
            for k, s in enumerate(steps):
                full[k, :, n] = torch.log_softmax(s.feed(step).double(), dim=-1)
        for s in steps:
            s.keep()
        return [self.tokenizer.decode(row.tolist()) for row in new]


class _Steps:
    """One component's share of a greedy generation: its logits, computed or read back.

    A component computes its prompt's logits, then one token's per step, on its
    key/value cache. With a row store holding this component's run of the same
    generation, the stored logits are used while each step feeds the token the
    stored run fed. At the first token that differs (another component changed
    the ensemble's choice), the model is run over the prompt and the stored
    steps again, exactly as the stored run did, and goes on live: so every
    logit is the one a run without the store computes, bit for bit.
    """

    def __init__(self, c: Component, ids: torch.Tensor, max_new_tokens: int,
                 store: RowStore | None) -> None:  # fmt: skip
        self.c, self.ids, self.store = c, ids, store
        self.call = generation(ids, max_new_tokens)
        self.stored = store.get_named(c.key, self.call) if store is not None else None
        if self.stored is not None and not self._fits(self.stored):
            self.stored = None
        self.fed: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.past = None

    def _fits(self, stored: dict) -> bool:
        head, fed = stored.get("prompt"), stored.get("fed")
        return (head is not None and fed is not None and head.shape[:2] == self.ids.shape
                and fed.shape[1:] == self.ids.shape[:1]
                and stored.get("steps") is not None
                and stored["steps"].shape[:2] == fed.shape)  # fmt: skip

    def first(self) -> torch.Tensor:
        """The prompt's logits ``[batch, prompt, vocabulary]`` (float32)."""
        if self.stored is not None:
            self.head = self.stored["prompt"]
            return self.head
        return self._run()

    def _run(self) -> torch.Tensor:
        """The model over the prompt, then over every token fed so far: as a fresh run did."""
        out = self.c.model(input_ids=self.ids, use_cache=True)
        self.head, self.past = out.logits, out.past_key_values
        for token in self.fed:
            self.past = self.c.model(input_ids=token.unsqueeze(1), past_key_values=self.past,
                                     use_cache=True).past_key_values  # fmt: skip
        return self.head

    def feed(self, token: torch.Tensor) -> torch.Tensor:
        """The next position's logits ``[batch, vocabulary]`` after ``token`` (one per row)."""
        j = len(self.fed)
        if self.past is None:
            fed = self.stored["fed"]
            if j < fed.shape[0] and torch.equal(fed[j], token):
                self.fed.append(token)
                self.logits.append(self.stored["steps"][j])
                return self.logits[-1]
            self._run()  # a token the stored run did not feed: from here on, live
        out = self.c.model(input_ids=token.unsqueeze(1), past_key_values=self.past,
                           use_cache=True)  # fmt: skip
        self.past = out.past_key_values
        self.fed.append(token)
        self.logits.append(out.logits[:, -1].clone())
        return self.logits[-1]

    def keep(self) -> None:
        """Store what was computed live (a run read back whole is stored already)."""
        if self.store is None or self.past is None:
            return
        vocab = self.head.shape[-1]
        self.store.put_named(self.c.key, self.call, {
            "prompt": self.head,
            "fed": torch.stack(self.fed) if self.fed else torch.zeros((0, len(self.ids)),
                                                                     dtype=torch.long),
            "steps": torch.stack(self.logits) if self.logits else self.head.new_zeros(
                (0, len(self.ids), vocab)),
        })  # fmt: skip


_PROMPT_BATCH = 32  # prompts per forward pass, and endings per forward pass after them


def _splitting(n: int, seqs: Sequence[Sequence[int]], prompts: Sequence[int] | None) -> list[int]:
    """Each prompt length that splits its sequence (``0 < p < len``, the whole within the
    context of ``n`` positions), else 0: that sequence is run whole."""
    return [p if 0 < p < len(s) <= n else 0
            for s, p in zip(seqs, prompts or [0] * len(seqs), strict=True)]  # fmt: skip


def _score(model: torch.nn.Module, seqs: Sequence[Sequence[int]],
           prompts: Sequence[int] | None) -> list[torch.Tensor]:  # fmt: skip
    """Rows of every sequence: those with a prompt (``0 < p < len``, within the context)
    scored with each distinct prompt run once, the rest as :func:`batch_logprobs` does."""
    prompts, out = _splitting(context_length(model), seqs, prompts), [None] * len(seqs)
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
    model_dir = Path(model_dir)
    return Component(None, weights_digest(model_dir),
                     load=lambda: fused_activations(load_model(model_dir, merge=True)),
                     context=_positions(model_dir), nbytes=_weight_bytes(model_dir))  # fmt: skip


def _positions(model_dir: Path) -> int:
    """The context a checkpoint's config gives (an adapter's is its base's), without its weights."""
    import json

    if is_adapter(model_dir):
        model_dir = adapter_base(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("n_positions") or config["max_position_embeddings"]


def _weight_bytes(model_dir: Path) -> int:
    files = [model_dir / "model.safetensors"]
    if is_adapter(model_dir):
        files = [model_dir / "adapter_model.safetensors", adapter_base(model_dir) / files[0].name]
    return sum(f.stat().st_size for f in files)


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
        memo[key] = c.derived(key, fn)
    return memo[key]
