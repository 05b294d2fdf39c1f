"""The ``verify`` stage: baselines in, results, plots, a signed report and MLflow evidence out.

Everything lands in a temporary directory first and is renamed into
``data/verification`` at the end, so an interrupted run publishes nothing and
the previous verification stays whole.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json, file_sha256, sha256_hex
from lineage.errors import BadInputError
from lineage.layout import LAYOUT, Layout, VerificationFiles
from lineage.signing import Signer
from training import checkpoints
from training.stages import load_partition
from verify import plots
from verify.policy import load_policy
from verify.provenance import registration_digest
from verify.report import sign_report
from verify.run import incontext_uplift, run
from verify.verdicts import cell_outcome

OUT = LAYOUT.verification
SUBJECTS = LAYOUT.verification_subjects  # `exante verify subject`: one directory per name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SubjectNameError(BadInputError):
    """``exante verify subject --name`` is not a plain name."""


class SubjectModelError(BadInputError):
    """``exante verify subject PATH`` is not a model directory."""


def subject_model(path: Path) -> Path:
    """A model directory (config + weights, or a LoRA adapter), checked before anything runs."""
    adapter = ("adapter_config.json", "adapter_model.safetensors")
    if all((Path(path) / n).is_file() for n in adapter):
        return Path(path)  # measured merged into the base its config names
    missing = [n for n in ("config.json", "model.safetensors") if not (Path(path) / n).is_file()]
    if missing:
        raise SubjectModelError(
            f"{path} is not a model directory (missing {', '.join(missing)}): point at a "
            "forget-shard model saved with save_pretrained, or a LoRA adapter directory "
            "(adapter_config.json, adapter_model.safetensors)"
        )
    return Path(path)


def subject_name(name: str) -> str:
    """``external:<name>``: never one of the pipeline's own subjects."""
    if not _NAME.fullmatch(name):
        raise SubjectNameError(
            f"--name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, starting with a "
            "letter or digit)"
        )
    return f"external:{name}"


def run_verify(
    root: Path,
    params,
    signer: Signer,
    *,
    progress=print,
    paths: Layout = LAYOUT,
    fs=None,
    out: Path = OUT,
    evidence_root: Path | None = None,
    tags: dict | None = None,
    sign_release: bool = True,
    extra: dict[str, Path] | None = None,
) -> dict:
    """Verify, sign and log; ``fs`` (a real deletion's forget set) replaces the params one.

    ``extra`` adds subjects by forget-shard model directory (``exante verify subject``).

    ``out`` is where the results land under ``root``; MLflow evidence goes to the
    store of ``evidence_root`` (default ``root``), with ``tags`` added to the parent
    run and to the report's predicate. ``sign_release=False`` leaves the released
    files out of the report's subjects (their digests stay in the predicate): a
    deletion's report outlives the release it tested, which is then purged.
    """
    from verify.evidence import log_verification, tracking_uri

    root = Path(root)
    evidence_root = Path(evidence_root or root)
    policy = load_policy(root)  # read and hashed before anything is scored
    progress(f"policy {policy.path} sha256 {policy.sha256[:16]}…")
    out = root / out
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    results = run(root, params, policy, paths=paths, progress=progress,
                  fs=fs, extra=extra)  # fmt: skip
    staged, published = VerificationFiles(tmp), VerificationFiles(out)
    staged.plots.mkdir(parents=True)  # only once there is something to publish
    results["incontext_uplift"] = incontext_uplift(results["results"])
    attacks = ["none", *(a.removeprefix("quantize_") for a in params.verify.quantization)]
    figures = [
        plots.precision_plot(results["results"], attacks, staged.plots / "precision.png"),
        plots.relearn_plot(results["results"], staged.plots / "relearn.png"),
    ]
    atomic_write(staged.results, canonical_json(results))
    summary = _summary(results)
    atomic_write(staged.summary, json.dumps(summary, indent=2, sort_keys=True).encode())
    released = checkpoints.model_files(root / paths.ensemble)
    partition, _, partition_sha = load_partition(root, paths)
    lineage = {
        "manifest_payload_sha256": partition["manifest_payload_sha256"],
        "decision_payload_sha256": partition["decision_payload_sha256"],
        "partition_payload_sha256": partition_sha,
        "attestation_sha256": file_sha256(root / paths.attestation),
    }
    predicate = {
        "policy": results["policy"],
        "forget_set_sha256": results["forget_set"]["sha256"],
        "lineage": lineage,
        "params_sha256": sha256_hex(canonical_json(params.model_dump(mode="json"))),
        "registration_sha256": registration_digest(root),
        "reference": "retrain",
        "subjects": results["subjects"],
        "summary": results["summary"],
        "verdicts": results["verdicts"],
        "controls": results["controls"],
        "power": results["power"],
        "calibration": results["calibration"],
        "incontext_uplift": results["incontext_uplift"],
        "incontext_note": "facts put back in the prompt are read by any model, exactly deleted "
        "or not; in-context knowledge needs inference-time controls, not training-time deletion",
    }
    # subjects are named as they will lie once published, so sign the published layout
    predicate |= tags or {}
    files = [*(released if sign_release else []), staged.results, staged.summary,
             *figures]  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    files = [out / f.relative_to(tmp) if _under(f, tmp) else f for f in files]
    sign_report(root=root, files=files, predicate=predicate, signer=signer,
                out=published.report)  # fmt: skip
    tags = {"policy_sha256": policy.sha256, "forget_set_sha256": predicate["forget_set_sha256"],
            "params_sha256": predicate["params_sha256"],
            "report_sha256": file_sha256(published.report), **lineage,
            **(tags or {})}  # fmt: skip
    parent = log_verification(
        evidence_root, params=params.verify.model_dump(mode="json"), results=results, tags=tags,
        files={"plots": published.plots, "report": published.report,
               "results": published.summary},
    )  # fmt: skip
    evidence = {"tracking_uri": tracking_uri(evidence_root), "experiment": "exante-verification",
                "parent_run_id": parent, **tags}  # fmt: skip
    atomic_write(published.evidence, json.dumps(evidence, indent=2, sort_keys=True).encode())
    return results | {"evidence": evidence}


def _under(p: Path, d: Path) -> bool:
    try:
        p.relative_to(d)
        return True
    except ValueError:
        return False


def _summary(results: dict) -> dict:
    """A flat numbers file for ``dvc metrics``: per subject, key metrics and check counts."""
    out = {}
    for name, by_attack in results["results"].items():
        m = by_attack["none"]["metrics"]
        s = results["summary"].get(name, {})
        out[name] = {
            "knowmem_em": m["knowmem_em"], "exposure_bits": m["exposure_bits"],
            "privleak": m["privleak"], "ppl_retain": m["ppl_retain"],
            "failed_checks": len(s.get("failed", [])),
            "inconclusive_checks": len(s.get("inconclusive", [])),
        }  # fmt: skip
    return out


MARKS = {"pass": " ✓", "fail": " ✗", "inconclusive": " ?", "ineffective": " ~", "n/a": " –",
         "none": " ·"}  # fmt: skip


CELL_KEYS = {  # the statistic a table cell shows: knowledge where there are probes
    True: ("knowmem_em", "relearn_em", "incontext_em", "extraction"),
    False: ("verbmem_rouge_l", "relearn_em", "incontext_em", "extraction"),
}


def _has_probes(results: dict) -> bool:
    """Whether the corpus had probes (results before ``inputs`` existed always did)."""
    return bool(results.get("inputs", {}).get("probes", True))


def cell_statistic(results: dict) -> str:
    """What the table's cells show: knowledge exact match, or verbatim ROUGE-L without probes."""
    return ("forget-set knowledge (exact match)" if _has_probes(results)
            else "forget-set verbatim ROUGE-L")  # fmt: skip


def applicability(results: dict) -> list[str]:
    """Which checks were judged on this corpus, and which are n/a, by name and why."""
    by: dict[str, set] = {}
    why: dict[str, str] = {}
    for v in results["verdicts"]:
        by.setdefault(v["check"], set()).add(v["outcome"])
        if v["outcome"] == "n/a":
            why[v["check"]] = v["reason"]
    applied = sorted(c for c, o in by.items() if o != {"n/a"})
    absent = sorted(c for c, o in by.items() if o == {"n/a"})
    lines = [f"checks applied: {', '.join(applied) or 'none'}"]
    if absent:
        lines.append("not applicable to this corpus: "
                     + "; ".join(f"{c} ({why[c]})" for c in absent))  # fmt: skip
    measures = results.get("relearn_split", {}).get("measures")
    if measures and measures != "probes":
        lines.append(f"relearning and in-context measure: {measures}")
    return lines


def table(results: dict) -> list[str]:
    """The console table: subject × attack, the key statistic per cell and the verdict."""
    res, summary = results["results"], results["summary"]
    keys = CELL_KEYS[_has_probes(results)]
    attacks = list(next(iter(res.values())))
    by = {}
    for v in results["verdicts"]:
        by.setdefault((v["subject"], v["attack"]), []).append(v)
    width = max(len(n) for n in res) + 2
    lines = [f"{'subject':{width}s}" + "".join(f"{a:>13s}" for a in attacks) + "   verdict"]
    for name, by_attack in res.items():
        cells = []
        for a in attacks:
            m = by_attack[a]["metrics"]
            key = next(k for k in keys if k in m)
            cells.append(f"{_num(m[key])}{MARKS[cell_outcome(by.get((name, a), []))]}".rjust(13))
        verdict = summary[name]["verdict"] if name in summary else "calibration"
        lines.append(f"{name:{width}s}" + "".join(cells) + f"   {verdict}")
    return lines


def legend() -> str:
    return ("✓ pass · ✗ fail · ? inconclusive · ~ ineffective attack (not evidence) · "
            "– not applicable · · not judged")  # fmt: skip


def required_outcomes(results: dict) -> list[str]:
    """What must hold for the verification to support the release; each miss, in words."""
    summary, power = results["summary"], results.get("power", {})
    misses = []
    for name, want in (("exact", "pass"), ("retrain", "pass")):
        got = summary.get(name, {}).get("verdict")
        if got != want:
            misses.append(f"{name} is {got or 'missing'}, not {want}")
    for name in ("planted", "heldout"):
        p = power.get(name, {})
        if not p.get("ok"):
            misses.append(f"power control {name} is {p.get('verdict') or 'missing'}, "
                          f"not {p.get('must')}")  # fmt: skip
    return misses


def _num(x) -> str:
    return "—" if x is None else f"{x:.2f}"
