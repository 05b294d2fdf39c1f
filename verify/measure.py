"""One subject, measured: memorization of the forget set, membership signals, utility.

Every number here is of one subject under one attack; comparisons with the
retrain reference (PrivLeak, forget quality, the verdicts) are made later, by
:mod:`verify.verdicts`, from these results. Per-example values are kept so a
reviewer can check any aggregate.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.knowledge import Probe, canary_exposure, exact_match
from training.loop import windows
from verify.forget import ForgetSet, Text
from verify.metrics import auc, knowmem, mia_loss, mia_mink, mia_minkpp, mia_zlib, utility
from verify.metrics.exposure import rank_among
from verify.metrics.verbatim import rouge_l
from verify.subjects import Subject

MIA = ("loss", "zlib", "min_k", "min_k_pp")


@dataclass(frozen=True)
class MeasureSettings:
    prefix_bytes: int = 24  # verbatim: the prompt is a record's first tokens (bytes by default)
    max_new_tokens: int = 40
    candidates: int = 200  # canary exposure: alternatives ranked against the secret
    k_percent: float = 20.0  # Min-K% and Min-K%++


def text_logprobs(subject: Subject, texts: Sequence[Text]) -> list[torch.Tensor]:
    """Per text, the log-prob of each of its tokens (EOS included) given the ones before.

    A text longer than the context is scored in consecutive windows of the
    context's length, as the models were trained (:func:`training.loop.windows`),
    not with one sliding window per position: perplexity over windows is the
    usual estimate and costs one forward per window instead of one per token.
    """
    block = subject.context_length()
    per_text = [windows([t.text], subject.tokenizer, block) for t in texts]
    flat = [w for ws in per_text for w in ws]
    rows = iter(subject.next_token_logprobs_batch(flat))
    out = []
    for ws in per_text:
        lps = [next(rows)[:-1].gather(1, torch.tensor(w[1:]).unsqueeze(1)).squeeze(1) for w in ws]
        out.append(torch.cat(lps))
    return out


def mia_scores(subject: Subject, texts: Sequence[Text], k: float) -> dict[str, list[float]]:
    """Membership scores per text (higher = more likely trained on), one list per method."""
    seqs = [subject.tokenizer.encode(t.text) for t in texts]
    rows = subject.next_token_logprobs_batch(seqs)
    out: dict[str, list[float]] = {m: [] for m in MIA}
    for t, r, s in zip(texts, rows, seqs, strict=True):
        targets = torch.tensor(s[1:])
        lp = r[:-1].gather(1, targets.unsqueeze(1)).squeeze(1)
        out["loss"].append(mia_loss.loss_score(lp))
        out["zlib"].append(mia_zlib.zlib_score(lp, t.text))
        out["min_k"].append(mia_mink.min_k_score(lp, k=k))
        out["min_k_pp"].append(mia_minkpp.min_k_pp_score(r[:-1], targets, k=k))
    return out


def verbatim(subject: Subject, texts: Sequence[Text], s: MeasureSettings) -> list[dict]:
    """MUSE VerbMem: ROUGE-L (words) of the greedy continuation of each text's first tokens.

    The prompt is BOS + ``prefix_bytes`` tokens of the model's tokenizer (bytes for
    the byte-level default), so every prompt has one length; a text needs at least 4
    tokens after it to be measured.
    """
    encoded = [(t, subject.tokenizer.encode(t.text, eos=False)) for t in texts]
    usable = [(t, x) for t, x in encoded if len(x) >= 1 + s.prefix_bytes + 4]
    if not usable:
        return []
    usable, ids = [t for t, _ in usable], [x for _, x in usable]
    prompts = [x[: 1 + s.prefix_bytes] for x in ids]
    room = subject.context_length() - len(prompts[0])  # greedy_batch runs one window
    outs = subject.greedy_batch(prompts, min(s.max_new_tokens, room))
    rows = []
    for t, x, got in zip(usable, ids, outs, strict=True):
        truth = subject.tokenizer.decode(x[1 + s.prefix_bytes :])
        # ids and numbers only: results travel in evidence and audit bundles
        rows.append({"id": t.text_id, "rouge_l": rouge_l(got, truth, unit="word")})
    return rows


def knowledge(
    subject: Subject, probes: Sequence[Probe], candidates: dict[str, list[str]], *, rank_of: int = 8
) -> dict:
    """Exact match (teacher-forced greedy) and the true answer's rank among other people's.

    The rank is among up to ``rank_of - 1`` other people's values of the same
    fact (a seeded, fixed choice per probe), all pairs scored in one batch.
    """
    if not probes:
        return {"exact_match": None, "rank_mean": None, "examples": []}
    k = exact_match(subject.next_token_logprobs_batch, probes, tokenizer=subject.tokenizer)
    others = [_others(p, candidates, rank_of - 1) for p in probes]
    pairs = [(p.prompt, a) for p, o in zip(probes, others, strict=True) for a in (p.answer, *o)]
    score = knowmem.logprob_scorer(subject.next_token_logprobs_batch, tokenizer=subject.tokenizer)
    scores = iter(score(pairs))
    examples = []
    for p, o in zip(probes, others, strict=True):
        own, rest = next(scores), [next(scores) for _ in o]
        rank = rank_among(own, rest) if o else None
        examples.append({"id": p.record_id, "fact": p.fact, "known": p.record_id in k.known_ids,
                         "rank": rank, "of": len(o) + 1})  # fmt: skip
    ranks = [e["rank"] for e in examples if e["rank"] is not None]
    return {"exact_match": k.exact_match, "rank_mean": statistics.fmean(ranks) if ranks else None,
            "examples": examples}  # fmt: skip


def _others(p: Probe, candidates: dict[str, list[str]], n: int) -> list[str]:
    pool = sorted({v for v in candidates.get(p.fact, []) if v != p.answer})
    return random.Random(f"rank:{p.record_id}").sample(pool, min(n, len(pool)))


def exposures(subject: Subject, probes: Sequence[Probe], s: MeasureSettings) -> list[dict]:
    return [
        {"id": p.record_id,
         "bits": canary_exposure(subject.next_token_logprobs_batch, p, candidates=s.candidates,
                                 tokenizer=subject.tokenizer)}
        for p in probes if p.fact == "canary"
    ]  # fmt: skip


def measure(subject: Subject, fs: ForgetSet, s: MeasureSettings) -> dict:
    """Every static metric of one subject: knowledge, verbatim, exposure, MIA, utility."""
    candidates: dict[str, list[str]] = {}
    for p in (*fs.holdout_probes, *fs.forget_probes):
        candidates.setdefault(p.fact, []).append(p.answer)
    members = list(fs.forget)
    forget_mia = mia_scores(subject, members, s.k_percent)
    holdout_mia = mia_scores(subject, fs.holdout, s.k_percent) if fs.holdout else {}
    know = knowledge(subject, fs.forget_probes, candidates)
    verb = verbatim(subject, members, s)
    expo = exposures(subject, fs.forget_probes, s)
    retain = text_logprobs(subject, fs.retain)
    public = text_logprobs(subject, fs.public) if fs.public else []
    metrics = {
        "knowmem_em": know["exact_match"],
        "knowmem_rank": know["rank_mean"],
        "verbmem_rouge_l": statistics.fmean(r["rouge_l"] for r in verb) if verb else None,
        "exposure_bits": statistics.fmean(e["bits"] for e in expo) if expo else None,
        "ppl_retain": utility.perplexity(retain),
        "ppl_public": utility.perplexity(public) if public else None,  # n/a without the text
    }
    for m in MIA:  # n/a without held-out records
        metrics[f"mia_auc_{m}"] = auc.roc_auc(forget_mia[m], holdout_mia[m]) if fs.holdout else None
    examples = {"knowmem": know["examples"], "verbmem": verb, "exposure": expo,
                "mia_forget": forget_mia, "mia_holdout": holdout_mia,
                "mia_forget_ids": [t.text_id for t in members],
                "mia_holdout_ids": [t.text_id for t in fs.holdout]}  # fmt: skip
    # per text (negative log-likelihood, tokens): intervals resample the texts
    examples |= {"ppl_retain_texts": _nll_rows(retain), "ppl_public_texts": _nll_rows(public)}
    return {"metrics": metrics, "examples": examples}


def holdout_null(subject: Subject, fs: ForgetSet, s: MeasureSettings) -> dict:
    """What a model knows of people it never saw: the floor the reference is judged against."""
    candidates: dict[str, list[str]] = {}
    for p in (*fs.holdout_probes, *fs.forget_probes):
        candidates.setdefault(p.fact, []).append(p.answer)
    know = knowledge(subject, fs.holdout_probes, candidates)
    return {"knowmem": know["examples"], "exposure": exposures(subject, fs.holdout_probes, s)}


def _nll_rows(per_text) -> list[list[float]]:
    return [[-float(lp.sum()), int(lp.numel())] for lp in per_text]
