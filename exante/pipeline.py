"""``dvc.yaml``, rendered from the source registry and ``params.yaml``.

DVC cannot loop over a range nor format a shard number, so the stages that
depend on the shard count, the forget shard, the unlearning methods or the
registry's generated sources are written out here; ``exante pipeline`` renders
the file again, and :func:`check_pipeline` refuses a ``dvc.yaml`` that no
longer matches its params (the stage that would run is not the stage meant).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lineage import corpus
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout, shard_name
from lineage.sources import Registry

DVC_FILE = Layout.name(LAYOUT.dvc_file)
REGISTRY = Layout.name(LAYOUT.registry)
CODE_DIRS = ("lineage", "training", "verify")
_VERIFY_CODE = [
    "verify/forget.py",
    "verify/baselines.py",
    "verify/provenance.py",
    "verify/seeds.py",
    "verify/unlearn",
    "verify/_registry.py",
]
_HEADER = """\
# The exante pipeline: sources → records → validation → signed manifest → policy gate
# → SISA training → release → verification → audit bundle. Every stage calls the
# `exante` CLI; deps list the package directories and exact params.
# Rendered by `exante pipeline` from data/sources.yaml and params.yaml: edit those and
# render again (a train or verify stage out of step with params is refused, exit 3).
"""
_NOTES = {
    "corpus": """\
The embedded demo's raw files (fictitious people, public-domain plays, ...), for the
sources the registry declares generated_by: corpus. Rows the deletion ledger denies
are never written (the deny set is a dep).""",
    "ingest": """\
One stage per source: editing one source re-runs only its ingest and what follows.
A deletion re-runs the ingest of the sources whose raw files it rewrote (the corpus
for generated ones); every ingest leaves out what the deletion ledger denies.""",
    "partition": """\
Base corpus + S shards × R slices. Unchanged shards keep byte-identical files,
so only the training stages of changed shards re-run.""",
    "train_base": """\
Timings change on every run: they live outside models/base, which later stages
depend on, so retraining on the same data leaves every stage downstream cached.""",
    "train": """\
Every shard (train.shards), train.workers at a time. Checkpoints persist and are
content-addressed: a shard whose file did not change finds every slice and trains
nothing, and after a deletion the clean slices are found and reused; `exante delete`
deletes the checkpoints that saw a denied record once the new release is attested.""",
    "report": """\
What the released ensemble knows (exact-match probes of retained people), a
one-screen summary, and the MLflow evidence: one parent run, a run per unit.""",
    "verify_register": """\
-- verification: the release against a retrain reference, under recovery attacks --
The forget set is drawn from params (verify.*): people of one shard, named here as
its file (sNN). The plan (policy + verify params + seeds) is signed first; each
baseline checks that registration, records its digest, params, code and inputs in
baseline.json, and is trained once and reused until its inputs change. The baselines
stage lists the code of verify.provenance.CODE and the whole train and verify params:
what their freshness check compares, so dvc reruns it whenever a baseline would be
refused as stale. A deletion elsewhere re-runs only the verify stage.
Pre-registration: kept byte for byte while the plan is unchanged (persist), so a
re-run does not invalidate the baselines built under it.""",
    "verify_baselines": """\
The baselines, train.workers at a time: the retrain reference; exact (the deletion
code path on a scratch copy of the forget shard's checkpoints); approx/<m>, post-hoc
unlearning of the released model per verify.methods; calib, the reference with each
of the K-1 seeds that calibration.references (policy) and train.seed imply; heldout,
a clean retrain with a seed calibration never saw (the power control must pass it);
planted, the reference with one forget record left in (it must fail). Outputs
persist: the command rebuilds exactly the baselines whose stamp is stale.""",
    "verify": """\
Every subject under every attack, judged by the pre-registered policy; a signed
report whose subjects are the tested release's files; MLflow evidence.""",
    "audit": """\
One signed, deterministic bundle of the evidence (no record content) and its HTML
report, with the signed compliance exports (EU summary, CycloneDX, SPDX) in it and
beside it in data/audit/exports. `exante delete` rebuilds it once the receipt is
signed and commits this stage.""",
}
# The stages whose text depends on params: out of step, they train or judge the wrong shard.
_CHECKED = ("train", "train_base", "verify_baselines")


class PipelineError(BadInputError):
    """The registry cannot be rendered as a pipeline, or dvc.yaml no longer matches params."""


def _uncached(path: str) -> dict:
    return {path: {"cache": False}}


def _corpus_dir(registry: Registry) -> str | None:
    """Where `exante corpus` writes, if the registry declares generated sources; else None."""
    generated = [s for s in registry.sources.values() if s.generated_by == "corpus"]
    dirs = {Path(s.location).parent.as_posix() for s in generated}
    misplaced = [
        f"sources.{s.id}.location: {s.location}"
        for s in generated
        if Path(s.location).name not in corpus.FILES
    ]
    if len(dirs) > 1 or misplaced:
        raise PipelineError(
            f"{REGISTRY}: a source generated_by: corpus must be one of the files `exante "
            f"corpus` writes ({', '.join(corpus.FILES)}), all in one directory",
            problems=misplaced or sorted(dirs),
        )
    return dirs.pop() if dirs else None


def _n(path: Path) -> str:
    return Layout.name(path)


def _front(raw: str | None, L: Layout, registry_: Registry | None = None) -> dict:
    """Ingest to release: the stages every project has (plus the demo's generator).

    The gate also judges the registered pretrained models: their entries are its
    params, and a model file inside the project is its dep (one outside is still
    checked by digest when training starts).
    """
    registry, records, denied = _n(L.registry), _n(L.records), _n(L.ledger_denied)
    stages = {}
    if raw:
        stages["corpus"] = {
            "cmd": f"exante corpus --out {raw}",
            "deps": ["lineage/corpus.py", denied],
            "params": ["corpus"],
            "outs": [f"{raw}/{name}" for name in corpus.FILES],
        }
    stages["ingest"] = {
        "foreach": "${sources}",
        "do": {
            "cmd": "exante ingest --source ${key}",
            "deps": ["lineage", "${item.location}"],
            "params": [{registry: ["sources.${key}"]}],
            "outs": [_n(L.records_file("${key}"))],
        },
    }
    stages["validate"] = {
        "cmd": "exante validate",
        "deps": ["lineage", records, registry],
        "outs": [_uncached(_n(L.validation_report))],
    }
    stages["manifest"] = {
        "cmd": "exante manifest",
        "deps": ["lineage", records, registry, _n(L.validation_report)],
        "outs": [
            _n(L.manifest),
            _n(L.manifest_leaves),
            {_n(L.manifest_history): {"persist": True}},
        ],
    }
    models = registry_.models.values() if registry_ else ()
    stages["gate"] = {
        "cmd": "exante gate",
        "deps": ["lineage", _n(L.policies), records, _n(L.manifest), _n(L.manifest_leaves),
                 *sorted({m.location for m in models if not Path(m.location).is_absolute()})],
        "params": ["gate", *([{registry: ["models"]}] if models else [])],
        "outs": [_n(L.gate)],
    }  # fmt: skip
    return stages


def _training(shards: int, L: Layout) -> dict:
    train_params = ["train.seed", "train.slices", "train.threads", "train.model"]
    return {
        "partition": {
            "cmd": "exante partition",
            "deps": [
                "lineage",
                "training/partition.py",
                "training/stages.py",
                _n(L.records),
                _n(L.gate),
            ],
            "params": ["train.seed", "train.shards", "train.slices"],
            "outs": [_n(L.shards)],
        },
        "train_base": {
            "cmd": "exante train base",
            "deps": ["lineage", "training", _n(L.base_file())],
            "params": ["train.seed", "train.threads", "train.workers", "train.model", "train.base"],
            "metrics": [_uncached(_n(L.unit_metrics("base")))],
            "outs": [_n(L.base)],
        },
        "train": {
            "cmd": "exante train shards",
            "deps": [
                "lineage",
                "training",
                _n(L.base),
                *(_n(L.shard_file(s)) for s in range(shards)),
            ],
            "params": [*train_params, "train.shard", "train.dp"],
            "metrics": [_uncached(_n(L.unit_metrics(shard_name(s)))) for s in range(shards)],
            "outs": [{_n(L.shard_dir(s)): {"persist": True}} for s in range(shards)],
        },
        "attest": {
            "cmd": "exante attest",
            "deps": ["lineage", "training", _n(L.base), _n(L.shard_models), _n(L.partition)],
            "params": ["train"],
            "outs": [_n(L.ensemble), _n(L.signature), _n(L.attestation)],
        },
    }


def _report(probes: list[str], L: Layout) -> dict:
    return {
        "cmd": "exante report",
        "deps": [
            "training",
            "verify/evidence.py",
            _n(L.ensemble),
            _n(L.attestation),
            *probes,
        ],
        "params": ["train", *(["verify.probes"] if probes else [])],
        "metrics": [_uncached(_n(L.report))],
        "outs": [_uncached(_n(L.evidence))],
    }


def _baselines(forget: int, methods: list[str], probes: list[str], L: Layout) -> dict:
    """Every verification baseline in one stage: the stamped code, the registration, the
    forget shard's files; `exante verify baseline all` rebuilds exactly the stale ones."""
    outs = ["retrain", "exact", *(f"approx/{m}" for m in methods), "calib", "heldout", "planted"]
    return {
        "cmd": "exante verify baseline all",
        "deps": [
            "lineage",
            "training",
            *_VERIFY_CODE,
            _n(L.verify_registration),
            _n(L.base),
            _n(L.shard_file(forget)),
            _n(L.holdout_file()),  # the non-members the forget set names
            *probes,
            _n(L.shard_dir(forget)),  # exact: the deletion path from its checkpoints
            _n(L.ensemble / shard_name(forget)),  # approx: unlearning of the released model
        ],
        "params": ["train", "verify"],
        "outs": [{_n(L.verify_models / o): {"persist": True}} for o in outs],
    }


def _verification(forget: int, methods: list[str], probes: list[str], L: Layout) -> dict:
    stages = {
        "verify_register": {
            "cmd": "exante verify register",
            "deps": [
                "verify/provenance.py",
                "verify/seeds.py",
                "verify/policy.py",
                _n(L.verification_policy),
            ],
            "params": ["train.seed", "verify"],
            "outs": [{_n(L.verify_registration): {"persist": True}}],
        },
        "verify_baselines": _baselines(forget, methods, probes, L),
    }
    stages["verify"] = {
        "cmd": "exante verify run",
        "deps": [
            "lineage",
            "training",
            "verify",
            _n(L.verification_policy),
            _n(L.ensemble),
            _n(L.attestation),
            _n(L.verify_registration),
            _n(L.verify_models),
            _n(L.shards),
            *probes,
        ],
        "params": ["train", "verify"],
        "metrics": [_uncached(_n(L.verification_files.summary))],
        "outs": [
            _n(L.verification_files.results),
            _n(L.verification_files.plots),
            _uncached(_n(L.verification_files.report)),
            _uncached(_n(L.verification_files.evidence)),
        ],
    }
    return stages


def _audit(L: Layout) -> dict:
    bundle, html = _n(L.audit_bundle), _n(L.audit_html)
    return {
        "cmd": f"exante audit bundle --out {bundle} --html {html}",
        "deps": [
            "lineage",
            "verify/audit",
            "verify/export",
            "verify/evidence.py",
            _n(L.policies),
            _n(L.registry),
            _n(L.ledger_denied),
            _n(L.manifest),
            _n(L.manifest_leaves),
            _n(L.records),
            _n(L.gate),
            _n(L.partition),
            _n(L.attestation),
            _n(L.evidence),
            _n(L.verification_files.report),
            _n(L.verification_files.evidence),
        ],
        "outs": [_uncached(bundle), _uncached(html), _uncached(_n(L.audit_exports))],
    }


def render(registry: Registry, params, *, code_deps: bool = True, layout: Layout = LAYOUT) -> dict:
    """The pipeline for this registry and these params, as dvc.yaml's parsed form.

    ``code_deps``: list exante's own code as deps (a project inside the exante source
    tree, such as the demo in the repository), so a code change re-runs its stages.
    A project elsewhere has no such paths; DVC would refuse them as missing.
    ``layout``: where the project keeps its files; every path a stage names comes from it.
    """
    raw = _corpus_dir(registry)
    probes = [params.verify.probes] if params.verify.probes else []
    forget, methods = params.verify.forget_shard, list(params.verify.methods)
    stages = {
        **_front(raw, layout, registry),
        **_training(params.train.shards, layout),
        "report": _report(probes, layout),
        **_verification(forget, methods, probes, layout),
        "audit": _audit(layout),
    }
    if not code_deps:
        stages = {name: _without_code(stage) for name, stage in stages.items()}
    return {"vars": [_n(layout.registry)], "stages": stages}


def _without_code(stage: dict) -> dict:
    if "do" in stage:
        return {**stage, "do": _without_code(stage["do"])}
    deps = [d for d in stage.get("deps", []) if Path(d).parts[0] not in CODE_DIRS]
    return {**stage, "deps": deps} if deps else {k: v for k, v in stage.items() if k != "deps"}


def has_code(root: Path) -> bool:
    """Whether ``root`` holds exante's packages (the source tree, or a copy of it)."""
    return all((Path(root) / d).is_dir() for d in CODE_DIRS)


def dump(pipeline: dict) -> str:
    """YAML text of a rendered pipeline, each stage under its explanatory comment."""
    out = [_HEADER, yaml.safe_dump({"vars": pipeline["vars"]}, sort_keys=False), "\nstages:\n"]
    for name, stage in pipeline["stages"].items():
        note = "".join(f"  # {line}\n" for line in _NOTES.get(name, "").splitlines())
        body = yaml.safe_dump({name: stage}, sort_keys=False, width=100)
        out.append(note + "".join(f"  {line}\n" for line in body.splitlines()) + "\n")
    return "".join(out).rstrip("\n") + "\n"


def _load(root: Path):
    from exante.params import load_params
    from lineage.sources import load_registry

    return load_registry(root / REGISTRY), load_params(root / LAYOUT.params)


def render_project(root: Path) -> dict:
    """The pipeline ``root``'s registry and params call for."""
    return render(*_load(root), code_deps=has_code(root))


def write_pipeline(root: Path) -> Path:
    """Render ``root``'s dvc.yaml from its registry and params (atomically)."""
    from lineage._canonical import atomic_write

    root = Path(root)
    text = dump(render_project(root))
    atomic_write(root / DVC_FILE, text.encode(), mode=0o644)
    return root / DVC_FILE


def check_pipeline(root: Path) -> None:
    """Refuse a dvc.yaml whose shard-dependent stages were rendered for other params."""
    root = Path(root)
    path = root / DVC_FILE
    if not path.is_file():
        return
    on_disk = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    wanted = render_project(root)["stages"]
    stale = [n for n in _CHECKED if n in on_disk and on_disk[n] != wanted.get(n)]
    if stale:
        raise PipelineError(
            f"{DVC_FILE} does not match {LAYOUT.params} and {REGISTRY} (train.shards, "
            "verify.forget_shard, verify.methods or generated sources changed since it was "
            "rendered): run `exante pipeline` to render it again",
            problems=[f"stage {n}" for n in stale],
        )
