"""The verification run: every subject under every attack, measured, then judged.

Order matters for trust: the policy is read and hashed first, then the forget
set is drawn (ids only are recorded), then the subjects are loaded and their
digests taken, and only then is anything scored. Results hold ids and numbers,
never record text, so they can travel in evidence and audit bundles.
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lineage._canonical import canonical_json, sha256_hex
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout
from training.knowledge import Probe
from training.stages import released_dirs
from training.tokenizer import tokenizer_for
from verify import baselines, provenance
from verify.attacks import ATTACKS
from verify.attacks._errors import ForgetSplitError
from verify.attacks.extract import extraction
from verify.attacks.incontext import allowed_shots, incontext_probes
from verify.attacks.relearn import ForgetSplit, check_disjoint, relearn_curve, split_forget
from verify.calibration import Owners
from verify.config import VerifyParams
from verify.forget import ForgetSet, forget_set
from verify.judging import REFERENCE, SHARD, Settings, judge_all
from verify.measure import MeasureSettings, exposures, holdout_null, knowledge, measure
from verify.metrics import auc, forget_quality
from verify.parts import PartStore, as_stored, part_key, shared_inputs
from verify.policy import LoadedPolicy
from verify.rows import RowStore, prune
from verify.subjects import Component, ScoreCache, Subject, load_component, transform


@dataclass
class Loaded:
    """The release's components and each subject's forget-shard component."""

    released: list[Component]
    forget_shard: dict[str, Component]  # subject name -> its forget-shard model
    digests: dict[str, str]  # subject name -> forget-shard weights digest
    dirs: Dirs  # where they were loaded from (a worker loads them again)


@dataclass(frozen=True)
class Dirs:
    """The model directories of a :class:`Loaded`: what a worker process needs to load it."""

    released: tuple[Path, ...]
    forget_shard: tuple[tuple[str, Path], ...]

    def load(self) -> Loaded:
        """The components, loaded once per process (every part of one run shares them)."""
        if self not in _LOADED:
            _LOADED.clear()
            forget = {n: load_component(d) for n, d in self.forget_shard}
            _LOADED[self] = Loaded([load_component(d) for d in self.released], forget,
                                   {n: c.key for n, c in forget.items()}, self)  # fmt: skip
        return _LOADED[self]


_LOADED: dict[Dirs, Loaded] = {}


def subject_names(params, policy: LoadedPolicy) -> list[str]:
    """The release, then every baseline: reference, exact, methods, calibration, controls."""
    return ["original", *baselines.required(params, policy)]


def planted_record(root: Path, names: list[str]) -> str | None:
    """The forget record the planted-leak control was trained on (its baseline.json says)."""
    info = baselines.info_file(root, "planted")
    return json.loads(info.read_text()).get("planted_record") if "planted" in names else None


class BaselineError(BadInputError):
    """A baseline model is missing, or was built for another forget set."""


def load_subjects(
    root: Path, params, policy: LoadedPolicy, names: list[str], fs: ForgetSet, paths: Layout
) -> Loaded:
    """The release's components and each baseline's forget-shard model, each checked fresh."""
    released_at = released_dirs(root, params.train, paths)
    released = [load_component(d) for d in released_at]
    forget = {"original": released[fs.shard]}
    at = {"original": released_at[fs.shard]}
    provenance.check_registration(root, policy, params=params)
    problems = []
    for name in names[1:]:
        info = baselines.info_file(root, name)
        if not info.is_file():
            problems.append(f"{name}: {info.parent} is missing")
            continue
        built = json.loads(info.read_text())
        if (built["shard"], built["forget_people"]) != (fs.shard, list(fs.forget_people)):
            problems.append(f"{name}: built for shard {built['shard']} without "
                            f"{built['forget_people']}, not this forget set")  # fmt: skip
            continue
        stale = baselines.stale(root, name, params, fs, paths)
        if stale:
            problems += [f"{name} is stale: {why}" for why in stale]
            continue
        at[name] = baselines.model_dir(root, name)
        forget[name] = load_component(at[name])
    if problems:
        raise BaselineError(
            "the baselines do not match this verification; build them with `dvc repro` "
            "(or `exante verify`, which rebuilds missing and stale ones):",
            problems=problems,
        )
    dirs = Dirs(tuple(Path(d).resolve() for d in released_at),
                tuple((n, Path(d).resolve()) for n, d in at.items()))  # fmt: skip
    return Loaded(released, forget, {n: c.key for n, c in forget.items()}, dirs)


def _assemble(name: str, loaded: Loaded, shard: int, swap: Callable, cache, cfg) -> Subject:
    comps = [swap(c) for c in loaded.released]
    comps[shard] = swap(loaded.forget_shard[name])
    return Subject(name, comps, rule=cfg.ensemble, cache=cache, tokenizer=tokenizer_for(cfg.model))


def run(
    root: Path,
    params,
    policy: LoadedPolicy,
    *,
    paths: Layout = LAYOUT,
    progress: Callable[[str], None] = lambda s: None,
    fs: ForgetSet | None = None,
    extra: dict[str, Path] | None = None,
) -> dict:
    """Measure every subject under every attack; judge them against the retrain reference.

    The forget set is drawn from params unless ``fs`` is given (a real deletion's);
    ``extra`` adds subjects by forget-shard model directory (``exante verify subject``).
    """
    started = time.perf_counter()
    cfg, v = params.train, params.verify
    baselines.check_method_list(root, v.methods)
    given_fs, fs = fs, fs or forget_set(root, v, paths)
    names = subject_names(params, policy)
    loaded = load_subjects(root, params, policy, names, fs, paths)
    for name, path in (extra or {}).items():
        loaded.forget_shard[name] = load_component(path)
        loaded.digests[name] = loaded.forget_shard[name].key
        names.append(name)
    if extra:
        added = tuple((n, Path(d).resolve()) for n, d in extra.items())
        loaded.dirs = Dirs(loaded.dirs.released, loaded.dirs.forget_shard + added)
    s = MeasureSettings(v.prefix_bytes, v.max_new_tokens, v.exposure_candidates)
    probes = fs.attack_probes(prefix_bytes=v.prefix_bytes, answer_chars=v.continuation_chars)
    split = _split(fs, probes, v)
    secrets = [p for p in fs.forget_probes if p.fact in v.extraction.facts]
    records = _records_by_subject(fs)
    shots = min([v.incontext_shots] + [len(allowed_shots(p, records)) for p in probes])
    in_probes = tuple(incontext_probes(list(probes), records, shots=shots))
    inputs = PartInputs(fs, cfg, v, s, split, tuple(secrets), shots, in_probes)
    # the longest first: a pool takes them in this order
    parts = ["none", *v.quantization, "extraction", "incontext", "relearn", SHARD]
    results: dict[str, dict[str, dict]] = {n: {} for n in names}
    timings: dict[str, float] = {}
    null, hits, misses, calls = {}, 0, 0, {"read": 0, "computed": 0}
    store = PartStore(root / paths.verify_parts)
    # a deletion's own forget set (``fs`` given) holds the deleted texts: no row of them is
    # kept; an auditor's model (``extra``) is measured without the store, so its run neither
    # reads nor prunes the rows the pipeline's next run reuses
    rows_at = root / paths.verify_rows if given_fs is None and not extra else None
    outs = _measure_parts(parts, loaded, tuple(names), inputs, progress, store, rows_at=rows_at)
    reused = {_label(p): out["key"] for p, out in zip(parts, outs, strict=True) if out["reused"]}
    for part, out in zip(parts, outs, strict=True):
        for name, r in out["results"].items():
            results[name][_label(part)] = r
        timings[_label(part)] = out["seconds"]
        null |= out["null"]
        hits, misses = hits + out["hits"], misses + out["misses"]
        for k, n in (out.get("rows") or {}).items():
            calls[k] += n
    results[REFERENCE]["none"]["examples"] |= {f"holdout_{k}": x for k, x in null.items()}

    t0 = time.perf_counter()
    _relative(results)
    cal = policy.policy.calibration
    settings = Settings(alpha=cal.alpha, bootstrap=cal.bootstrap, seed=v.seed,
                        static_attacks=("none", *map(_label, v.quantization), SHARD))  # fmt: skip
    measured = split.measured if split else probes  # relearning measures half
    applies = fs.inputs() | {
        "secrets": bool(secrets),
        "relearn_canaries": any(p.fact == "canary" for p in measured),
    }
    why = {} if split else {"relearn": _no_split(fs, probes)}
    judged = judge_all(results, policy, _owners(fs, probes), applies, settings,
                       digests=loaded.digests,
                       planted_record=planted_record(root, names),
                       why_missing=why)  # fmt: skip
    timings["judging"] = time.perf_counter() - t0
    ids = fs.digest_inputs()
    halves = {
        "relearn": sorted({p.subject_id for p in split.relearn}) if split else [],
        "measured": sorted({p.subject_id for p in split.measured}) if split else [],
        "withheld_records": [p.record_id for p in split.withheld] if split else [],
        # what relearning and in-context measure: the probes file's facts, or without one
        # the exact continuation of each forget record's own text after its first bytes
        "measures": "probes"
        if fs.forget_probes
        else f"continuations ({v.continuation_chars} "
        f"characters after the first {v.prefix_bytes} bytes of each record)",
    }
    if not split:
        halves["skipped"] = why["relearn"]
    applies_to = {k: applies[k] for k in sorted(applies)}
    return {
        "schema_version": 2,
        "policy": {"path": policy.path, "sha256": policy.sha256},
        "forget_set": ids | {"sha256": sha256_hex(canonical_json(ids))},
        "relearn_split": halves,
        "inputs": applies_to,  # which optional inputs this corpus has (absent: checks n/a)
        "subjects": {n: {"forget_shard_sha256": loaded.digests[n]} for n in names},
        "released_sha256": [c.key for c in loaded.released],
        "results": results,
        "verdicts": [x.as_dict() for x in judged["verdicts"]],
        "summary": judged["summary"],
        "controls": judged["controls"],
        "power": judged["power"],
        "calibration": judged["calibration"],
        "timings_seconds": timings | {"total": time.perf_counter() - started},
        # parts whose every input matched a stored measurement (verify.parts): not re-measured
        # and components' calls read back from an earlier run (verify.rows) or computed
        "cache": {"hits": hits, "misses": misses, "reused_parts": reused, "row_calls": calls},
    }


@dataclass(frozen=True)
class PartInputs:
    """What every part of a verification measures with (picklable: parts may run elsewhere)."""

    fs: ForgetSet
    cfg: object  # TrainConfig
    v: VerifyParams
    s: MeasureSettings
    split: object  # the relearning split, or None
    secrets: tuple
    shots: int
    in_probes: tuple


def _measure_parts(parts: list[str], loaded: Loaded, names: tuple[str, ...],
                   inputs: PartInputs, progress: Callable[[str], None],
                   store: PartStore | None = None, *,
                   rows_at: Path | None = None) -> list[dict]:  # fmt: skip
    """Each part (an attack, the shard alone, relearning, in-context, extraction) measured.

    The parts are independent given the subjects' weights, so with ``train.workers``
    > 1 they run on the training executor's workers (a process pool, or Ray tasks of
    ``train.threads`` CPUs): each worker loads the subjects from their directories
    and prints its own progress lines. With one local worker they run here, in order.
    A part whose every input matches one in ``store`` is not measured again
    (:mod:`verify.parts`); each output says ``reused`` and its ``key``. ``rows_at``: where
    the components' rows are kept between runs (:mod:`verify.rows`); after measuring,
    only this run's, of the models it measured, are left there.
    """
    from training.executor import pool_of

    store = store or PartStore(None)
    cfg = inputs.cfg
    pool = pool_of(cfg)
    local, workers = pool["executor"] == "local", pool["workers"]
    if local and workers > 1:
        need = part_bytes(loaded)
        workers = fitting_workers(need, workers)
        if workers < pool["workers"]:
            progress(f"verification parts: {workers} worker(s), not {pool['workers']}: each "
                     f"loads every subject's models (about {_gib(need)} GiB with its caches) "
                     f"and {_gib(_available())} GiB of memory is available")  # fmt: skip
    here = local and workers <= 1  # in order, on every core the pool would have used
    threads = pool["workers"] * cfg.threads if here else cfg.threads
    released = [c.key for c in loaded.released]
    shared = shared_inputs(names=names, forget_shards=loaded.digests, inputs=inputs,
                           threads=threads)  # fmt: skip
    keys = [part_key(p, shared=shared, released=released, alone=p == SHARD) for p in parts]
    stored = {k: store.get(k) for k in keys}
    todo = [p for p, k in zip(parts, keys, strict=True) if stored[k] is None]
    for p, k in zip(parts, keys, strict=True):
        if stored[k] is not None:
            progress(f"verify {_label(p)}: reused: every input is the same as when it was "
                     f"measured (key {k[:12]})")  # fmt: skip
    rows = (rows_at, shared) if rows_at is not None else None
    measured = _measure(todo, loaded, names, inputs, progress, pool, workers, here, rows)
    fresh = dict(zip(todo, measured, strict=True))
    if rows_at is not None:
        prune(rows_at, shared, [*released, *loaded.digests.values()])
    outs = []
    for p, k in zip(parts, keys, strict=True):
        if stored[k] is not None:
            outs.append(stored[k] | {"seconds": 0.0, "hits": 0, "misses": 0, "rows": None,
                                     "reused": True})  # fmt: skip
            continue
        out = as_stored(fresh[p])
        try:
            store.put(k, out)
        except OSError as exc:  # measured all the same; only a later run cannot reuse it
            progress(f"verify {_label(p)}: not stored for reuse: {exc}")
        outs.append(out | {"key": k, "reused": False})
    return outs


def _measure(parts: list[str], loaded: Loaded, names: tuple[str, ...], inputs: PartInputs,
             progress: Callable[[str], None], pool: dict, workers: int,
             here: bool, rows: tuple[Path, str] | None = None) -> list[dict]:  # fmt: skip
    from training.executor import run_units

    if not parts:
        return []
    if here:
        import torch

        _LOADED.clear()
        _LOADED[loaded.dirs] = loaded
        before = torch.get_num_threads()
        torch.set_num_threads(pool["workers"] * inputs.cfg.threads)
        try:
            return [measure_part(p, loaded.dirs, names, inputs, progress, rows) for p in parts]
        finally:
            torch.set_num_threads(before)
    jobs = [(p, loaded.dirs, names, inputs, None, rows) for p in parts]
    return run_units(measure_part, jobs, names=[f"verify {p}" for p in parts],
                     **(pool | {"workers": workers}))  # fmt: skip


def part_bytes(loaded: Loaded) -> int:
    """What one part's process may hold: every subject's models, twice (an attack's copies),
    and a full score cache. Only bounds how many run at once; results never depend on it."""
    from verify.subjects import CACHE_BYTES

    unique = {c.key: c.nbytes for c in [*loaded.released, *loaded.forget_shard.values()]}
    weights = sum(unique.values())
    return 2 * weights + CACHE_BYTES


def _available(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Bytes a new process can take without swapping: the kernel's ``MemAvailable``.

    Free pages alone (``SC_AVPHYS_PAGES``) count the page cache as used, so a machine
    that had just read its models looked nearly full (8.5 GiB of an idle 24 GiB).
    Where there is no ``/proc/meminfo`` (not Linux), free pages are the estimate.
    """
    import os

    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fitting_workers(need: int, workers: int) -> int:
    """``workers``, or fewer where that many parts of ``need`` bytes would not fit in memory."""
    return max(1, min(workers, _available() // max(need, 1)))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}"


def measure_part(part: str, dirs: Dirs, names: tuple[str, ...], inputs: PartInputs,
                 progress: Callable[[str], None] | None,
                 rows: tuple[Path, str] | None = None) -> dict:  # fmt: skip
    """One part of the verification, every subject: ``{"results": {name: result}, ...}``.

    Subjects whose forget-shard weights are bit-identical are measured once (:class:`_Once`).
    In a worker (``progress`` None) the lines are printed, so they stream as they come.
    ``rows``: where components' rows are kept between runs, and this run's scope
    (:mod:`verify.rows`); a component whose rows are all read back is never built.
    """
    import torch

    if progress is None:
        torch.set_num_threads(inputs.cfg.threads)

        def progress(line: str) -> None:
            print(line, flush=True)

    loaded = dirs.load()
    fs, cfg, v, s = inputs.fs, inputs.cfg, inputs.v, inputs.s
    store = RowStore(*rows) if rows is not None else None
    cache, once, t0 = ScoreCache(store=store), _Once(loaded.digests), time.perf_counter()
    got: dict[str, dict] = {}
    null: dict = {}
    if part == "none" or part in ATTACKS:
        fn = (lambda m: m) if part == "none" else ATTACKS[part]
        swap = functools.partial(_swap, attack=part, fn=fn, memo={})
        for name in names:
            subj = _assemble(name, loaded, fs.shard, swap, cache, cfg)
            got[name] = once(name, part, measure, subj, fs, s)
            progress(f"{name:14s} {_label(part):8s} {_brief(got[name])}")
        if part == "none":  # the floor the reference is judged against, from the same cache
            ref = _assemble(REFERENCE, loaded, fs.shard, lambda c: c, cache, cfg)
            null = holdout_null(ref, fs, s)
    elif part == SHARD:  # white-box: the forget-shard model alone
        for name in names:
            subj = Subject(name, [loaded.forget_shard[name]], rule=cfg.ensemble, cache=cache,
                           tokenizer=tokenizer_for(cfg.model))  # fmt: skip
            got[name] = once(name, SHARD, measure, subj, fs, s)
            progress(f"{name:14s} {SHARD:8s} {_brief(got[name])}")
    elif part == "relearn":
        for name in names:
            got[name] = (once(name, "relearn", _relearn, name, loaded, fs, inputs.split, cfg, v,
                              s, cache)
                         if inputs.split else _not_relearned())  # fmt: skip
            progress(f"{name:14s} relearn  {_curve_brief(got[name])}")
    elif part == "incontext":
        for name in names:
            subj = _assemble(name, loaded, fs.shard, lambda c: c, cache, cfg)
            got[name] = once(name, "incontext", _incontext, subj, list(inputs.in_probes),
                             inputs.shots)  # fmt: skip
    elif part == "extraction":
        for name in names:
            if not inputs.secrets:  # no planted secret: extraction not applicable
                got[name] = {"metrics": {"extraction": None, "secrets": 0},
                             "examples": {"extraction": []}}  # fmt: skip
                continue
            subj = _assemble(name, loaded, fs.shard, lambda c: c, None, cfg)
            got[name] = once(name, "extraction", _extraction, subj, list(inputs.secrets), v)
    else:
        raise ValueError(f"unknown verification part {part!r}")
    return {"results": got, "seconds": time.perf_counter() - t0, "null": null,
            "hits": cache.hits, "misses": cache.misses,
            "rows": {"read": store.hits, "computed": store.misses} if store else None}  # fmt: skip


class _Once:
    """Each (forget-shard weights, attack) measured once; a later subject gets a copy.

    Every measurement is a function of the weights (and the seeded settings), so a
    subject bit-identical to one already measured would only repeat the same numbers.
    """

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests, self.done = digests, {}

    def __call__(self, name: str, attack: str, fn: Callable[..., dict], *args) -> dict:
        key = (self.digests[name], attack)
        if key not in self.done:
            self.done[key] = fn(*args)
        return copy.deepcopy(self.done[key])


def _incontext(subj: Subject, probes, shots: int) -> dict:
    k = knowledge(subj, probes, {})
    return {"metrics": {"incontext_em": k["exact_match"], "shots": shots},
            "examples": {"knowmem": k["examples"]}}  # fmt: skip


def _extraction(subj: Subject, secrets, v: VerifyParams) -> dict:
    ex = extraction(subj, secrets, budget=v.extraction.budget,
                    temperature=v.extraction.temperature, top_k=v.extraction.top_k,
                    seed=v.seed)  # fmt: skip
    return {
        "metrics": {"extraction": ex.success_rate, "secrets": len(secrets)},
        "examples": {"extraction": [{"id": p.record_id, "first_hit": p.first_hit}
                                    for p in ex.probes]},
    }  # fmt: skip


def _owners(fs: ForgetSet, probes: Sequence[Probe]) -> Owners:
    forget = {t.text_id: t.subject_id for t in fs.forget}
    forget |= {p.record_id: p.subject_id for p in probes}
    holdout = {t.text_id: t.subject_id for t in fs.holdout}
    holdout |= {p.record_id: p.subject_id for p in fs.holdout_probes}
    return Owners(forget, holdout)


def _not_relearned() -> dict:
    return {"metrics": {"relearn_em": None, "relearn_exposure_bits": None, "relearn_steps": None},
            "curve": []}  # fmt: skip


def _no_split(fs: ForgetSet, probes: Sequence[Probe]) -> str:
    if not probes:
        return ("no probes (verify.probes) and no forget record long enough to continue: "
                "relearning has nothing to measure")  # fmt: skip
    if len({p.subject_id for p in probes}) < 2:
        return "one person in the forget set: a relearning split needs two"
    return ("every forget record of the relearning half contains a measured continuation: "
            "nothing is left to relearn on")  # fmt: skip


def _split(fs: ForgetSet, probes: Sequence[Probe], v: VerifyParams) -> ForgetSplit | None:
    """Half the people to relearn on, half measured; None when no such split exists.

    A params forget set has at least two people; a real deletion's may have one,
    and its relearning checks are then reported as not measured. Without probes
    the halves are records: relearning trains on the whole records of one half,
    less any that contains a continuation measured on the other.
    """
    if len({p.subject_id for p in probes}) < 2:
        return None
    try:
        split = split_forget(list(probes), fraction=v.relearn.fraction, seed=v.seed)
    except ForgetSplitError:
        if fs.forget_probes:
            raise  # the user's probes cannot be split: say so
        return None
    if not fs.forget_probes:
        split = _whole_records(split, {t.text_id: t.text for t in fs.forget})
        if split is None:
            return None
    check_disjoint(split.relearn_texts, split.measured, relearn_probes=split.relearn)
    return split


def _whole_records(split: ForgetSplit, texts: Mapping[str, str]) -> ForgetSplit | None:
    """The continuation split relearning on each relearn-half record's whole text."""
    answers = [p.answer.casefold() for p in split.measured]
    keep, drop = [], []
    for p in split.relearn:
        full = texts[p.of]
        leaks = any(a in full.casefold() for a in answers)
        (drop if leaks else keep).append(replace(p, prompt=full, answer=""))
    if not keep:
        return None
    return ForgetSplit(tuple(keep), split.measured, split.withheld + tuple(drop))


def _swap(c: Component, *, attack: str, fn, memo: dict) -> Component:
    return c if attack == "none" else transform(c, attack, fn, memo)


def _label(attack: str) -> str:
    return attack.removeprefix("quantize_")


def _relearn(name, loaded, fs, split, cfg, v, s, cache) -> dict:
    """Relearn the forget-shard model on one half; measure the other at each budget k.

    Judged at the curve's worst point (the budget where it knows most), not its last.
    """
    curve, base = [], loaded.forget_shard[name]
    tuned = _Curve(lambda: relearn_curve(base.model, split.relearn_texts, ks=v.relearn.ks,
                                         lr=v.relearn.lr, batch_size=v.relearn.batch_size,
                                         seed=v.seed, n_positions=cfg.model.n_positions,
                                         tokenizer=tokenizer_for(cfg.model)))  # fmt: skip
    for k in v.relearn.ks:
        comps = list(loaded.released)
        comps[fs.shard] = base.derived(f"{base.key}+relearn{k}", lambda _, k=k: tuned.at(k))
        subj = Subject(name, comps, rule=cfg.ensemble, cache=cache,
                       tokenizer=tokenizer_for(cfg.model))  # fmt: skip
        know = knowledge(subj, split.measured, {})
        expo = exposures(subj, split.measured, s)
        curve.append(
            {
                "k": k,
                "em": know["exact_match"],
                "exposure_bits": statistics.fmean(e["bits"] for e in expo) if expo else None,
                "examples": [{"id": e["id"], "known": e["known"]} for e in know["examples"]]
                + [{"id": e["id"], "bits": e["bits"]} for e in expo],
            }
        )
    worst = max(curve, key=lambda p: -1.0 if p["em"] is None else p["em"])
    bits = [p["exposure_bits"] for p in curve if p["exposure_bits"] is not None]
    return {"metrics": {"relearn_em": worst["em"], "relearn_exposure_bits": max(bits, default=None),
                        "relearn_steps": worst["k"]},
            "curve": curve}  # fmt: skip


class _Curve:
    """A relearning curve trained only when one of its models is first needed.

    Its models are asked for in ascending ``k``; training goes on from the last
    one asked for, so the model at ``k`` is the same whichever were skipped
    (their rows were read back).
    """

    def __init__(self, start: Callable[[], Iterator]) -> None:
        self.start, self.steps, self.last = start, None, None

    def at(self, k: int):
        if self.steps is None:
            self.steps = self.start()
        while self.last is None or self.last[0] < k:
            self.last = next(self.steps)
        if self.last[0] != k:
            raise ValueError(f"relearning model {k} asked for after {self.last[0]}")
        return self.last[1]


def _records_by_subject(fs: ForgetSet) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t in fs.forget:
        out.setdefault(t.subject_id, {})[t.text_id] = t.text
    return out


def _relative(results: dict) -> None:
    """PrivLeak and forget quality: statistics of a subject measured against the reference's."""
    ref = results[REFERENCE]
    for by_attack in results.values():
        for attack, r in by_attack.items():
            if "mia_auc_loss" not in r["metrics"]:
                continue
            base = ref[attack]
            mine, theirs = r["metrics"]["mia_auc_loss"], base["metrics"]["mia_auc_loss"]
            no_holdout = mine is None or theirs is None  # no held-out records: n/a
            r["metrics"]["privleak"] = None if no_holdout else auc.privleak(mine, theirs)
            r["metrics"]["forget_quality"] = forget_quality.forget_quality(
                r["examples"]["mia_forget"]["loss"], base["examples"]["mia_forget"]["loss"]
            )


def incontext_uplift(results: dict) -> dict[str, float | None]:
    ref = results[REFERENCE]["incontext"]["metrics"]["incontext_em"]
    return {n: (r["incontext"]["metrics"]["incontext_em"] - ref) if ref is not None else None
            for n, r in results.items()}  # fmt: skip


def _brief(r: dict) -> str:
    m = r["metrics"]
    return " ".join(f"{k} {_fmt(m.get(k))}" for k in
                    ("knowmem_em", "exposure_bits", "mia_auc_loss", "ppl_retain"))  # fmt: skip


def _curve_brief(r: dict) -> str:
    return " ".join(f"k{c['k']}:{_fmt(c['em'])}" for c in r["curve"])


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3g}"
