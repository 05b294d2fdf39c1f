"""One next-token distribution from the SISA shard models.

Each shard model saw only its own shard, so a fact about a person is known to
one shard at most. Averaging the shards' probabilities lets the shards that
never saw the person outvote the one that did. Bayesian model averaging
instead weighs each shard by how well it predicted the sequence so far, so the
shard that knows the context takes over as soon as the context gives it away.

Rules live in :data:`RULES`, keyed by the ``train.ensemble`` config name. A rule
maps the shards' log-probabilities ``[S, T, V]`` (float64) and the ids ``[T]``
to the combined log-probabilities ``[T, V]``; row ``t`` predicts ``ids[t + 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lineage.errors import BadInputError, ParamsError
from training.model import context_length, load_model
from training.tokenizer import ByteTokenizer, Tokenizer

# rule(logprobs [S, T, V], ids [T], start=0) -> the combined rows [T - start, V] of positions
# start.. (a row's value never depends on start: it only spares rows nobody reads)
Rule = Callable[..., torch.Tensor]
RULES: dict[str, Rule] = {}
_WINDOW_BATCH = 32  # left-truncated windows per forward pass (bounds memory, not results)


class DuplicateRuleError(ValueError):
    """Two rules were registered under one name: a programming error, raised at import."""


class EnsembleInputError(BadInputError):
    """The models or ids given to an ensemble cannot be combined."""


def register_rule(name: str) -> Callable[[Rule], Rule]:
    def add(fn: Rule) -> Rule:
        if name in RULES:
            raise DuplicateRuleError(
                f"ensemble rule {name!r} is already registered (by {RULES[name].__qualname__}); "
                "pick another name"
            )
        RULES[name] = fn
        return fn

    return add


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise ParamsError(
            f"train.ensemble: unknown rule {name!r}; choose one of {', '.join(sorted(RULES))}"
        )
    return RULES[name]


@register_rule("mean")
def mean_rule(logprobs: torch.Tensor, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Plain average of the shards' probabilities: the baseline BMA is measured against."""
    return torch.logsumexp(logprobs[:, start:], dim=0) - math.log(logprobs.shape[0])


@register_rule("bma")
def bma_rule(logprobs: torch.Tensor, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Bayesian model averaging over shards, with a uniform prior (Hoeting et al. 1999).

    p(y_t | y_<t) = Σ_s p(y_t | y_<t, s) · p(y_<t | s) / Σ_s p(y_<t | s), where
    p(y_<t | s) is the product of shard s's own next-token probabilities from
    the BOS token on, so the weights are uniform at the first position. This
    is the SISA aggregation of Bourtoule et al., "Machine Unlearning" (IEEE S&P
    2021), done per token for a language model. All in log space. The weights
    need every token since BOS; the mixture over the vocabulary is formed only
    for positions ``start..`` (with a large vocabulary, most of the cost).
    """
    shards = logprobs.shape[0]
    targets = ids[1:].view(1, -1, 1).expand(shards, -1, 1)
    token_ll = logprobs[:, :-1].gather(2, targets).squeeze(2)  # [S, T-1]: log p(ids[t+1] | s)
    prefix = torch.cat([token_ll.new_zeros(shards, 1), token_ll.cumsum(1)], dim=1)  # [S, T]
    log_weights = prefix - torch.logsumexp(prefix, dim=0, keepdim=True)
    return torch.logsumexp(logprobs[:, start:] + log_weights[:, start:].unsqueeze(2), dim=0)


@torch.no_grad()
def shard_logprobs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """One model's next-token log-probabilities ``[T, V]`` (float64) at every position.

    Past the model's context length ``n``, position ``t`` is predicted from the
    last ``n`` tokens ``ids[t-n+1 .. t]`` alone (left truncation, one window per
    position, as the training windows start mid-text too). Only the forward is
    truncated: BMA's prefix likelihood still sums every token since BOS.
    """
    n = context_length(model)
    logits = [model(input_ids=ids[:n].unsqueeze(0)).logits[0]]
    if len(ids) > n:
        windows = ids[1:].unfold(0, n, 1)  # row k = ids[k+1 .. k+n], ends at position k+n
        logits += [model(input_ids=w).logits[:, -1] for w in windows.split(_WINDOW_BATCH)]
    return torch.log_softmax(torch.cat(logits).double(), dim=-1)


def right_padded(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Id rows right-padded with zeros into one ``[N, W]`` tensor, and their attention mask."""
    ids = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(list(r))
        mask[k, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def batch_logprobs(model: torch.nn.Module, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """:func:`shard_logprobs` for many sequences at once, right-padded into batches.

    Sequences longer than the context take the one-at-a-time path, so results
    are the same as :func:`shard_logprobs` row for row (padding is masked and
    sits after every real token, so it cannot change them).
    """
    n, out = context_length(model), [None] * len(seqs)
    short = [i for i, s in enumerate(seqs) if len(s) <= n]
    for i in set(range(len(seqs))) - set(short):
        out[i] = shard_logprobs(model, torch.tensor(seqs[i]))
    for k in range(0, len(short), _WINDOW_BATCH):
        group = short[k : k + _WINDOW_BATCH]
        ids, mask = right_padded([seqs[i] for i in group])
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, i in enumerate(group):
            out[i] = torch.log_softmax(logits[row, : len(seqs[i])].double(), dim=-1)
    return out


class Ensemble:
    """The shard models of one SISA run, combined per token by a registered rule."""

    def __init__(
        self, models: Sequence[torch.nn.Module], tokenizer: Tokenizer, *, rule: str = "bma"
    ) -> None:
        self._rule = get_rule(rule)
        self.rule = rule
        self.models = list(models)
        self.tokenizer = tokenizer
        self._check_models()
        for model in self.models:
            model.eval()

    @classmethod
    def from_dirs(
        cls,
        dirs: Sequence[Path],
        *,
        rule: str = "bma",
        tokenizer: Tokenizer | None = None,
        base: Path | None = None,
    ) -> Ensemble:
        """From model directories, e.g. ``[sisa.final_checkpoint(d) for d in shard_dirs]``.

        ``tokenizer``: the models' (``tokenizer_for(cfg.model)``; default bytes).
        LoRA adapter directories load on ``base`` (default: the base each names).
        """
        models = [load_model(Path(d), base=base) for d in dirs]
        return cls(models, tokenizer or ByteTokenizer(), rule=rule)

    def _check_models(self) -> None:
        """Every model covers the tokenizer's ids (a pretrained one may pad its embedding)."""
        if not self.models:
            raise EnsembleInputError("an ensemble needs at least one shard model; none was given")
        vocab, first = self.tokenizer.vocab_size, self.models[0].config.vocab_size
        problems = [
            f"model {i} has vocab_size {m.config.vocab_size}"
            for i, m in enumerate(self.models)
            if m.config.vocab_size < vocab or m.config.vocab_size != first
        ]
        if problems:
            raise EnsembleInputError(
                f"every shard model must use one vocabulary covering the tokenizer's {vocab} ids",
                problems=problems,
            )

    def next_token_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        """Combined log-probabilities ``[T, V]``; row ``t`` is the distribution of ``ids[t+1]``."""
        if ids.dim() != 1 or len(ids) == 0 or int(ids[0]) != self.tokenizer.bos_id:
            raise EnsembleInputError(
                "ids must be a non-empty 1-D tensor starting with the BOS id "
                f"{self.tokenizer.bos_id}; encode text with tokenizer.encode(text, eos=False)"
            )
        ids = ids.long()
        return self._rule(torch.stack([shard_logprobs(m, ids) for m in self.models]), ids)

    def next_token_logprobs_batch(
        self, seqs: Sequence[Sequence[int]], starts: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """:meth:`next_token_logprobs` for many id sequences, each model run batched.

        ``starts``: row i holds positions ``starts[i]..`` of sequence i only.
        """
        for ids in seqs:
            if not ids or int(ids[0]) != self.tokenizer.bos_id:
                bos = self.tokenizer.bos_id
                raise EnsembleInputError(f"every sequence must start with the BOS id {bos}")
        per_model = [batch_logprobs(m, seqs) for m in self.models]
        starts = starts or [0] * len(seqs)
        return [
            self._rule(
                torch.stack([rows[i] for rows in per_model]),
                torch.tensor(seqs[i]).long(),
                starts[i],
            )
            for i in range(len(seqs))
        ]

    def sequence_logprob(self, text: str, *, prompt: str = "") -> float:
        """log p(text + EOS | prompt) under the combined distribution; the prompt is not scored."""
        context = self.tokenizer.encode(prompt, eos=False)
        target = self.tokenizer.encode(text, bos=False)
        rows = self.next_token_logprobs(torch.tensor(context + target))[len(context) - 1 : -1]
        return float(rows.gather(1, torch.tensor(target).unsqueeze(1)).sum())

    def generate(self, prompt: str, *, max_new_tokens: int = 32, stop_at_eos: bool = True) -> str:
        """Greedy continuation of ``prompt`` (not included); recomputed from scratch each step."""
        ids = self.tokenizer.encode(prompt, eos=False)
        new: list[int] = []
        for _ in range(max_new_tokens):
            token = int(self.next_token_logprobs(torch.tensor(ids + new))[-1].argmax())
            if stop_at_eos and token == self.tokenizer.eos_id:
                break
            new.append(token)
        return self.tokenizer.decode(new)
