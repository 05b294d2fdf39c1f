"""Where a verification's rules and baselines came from: the registration and baseline stamps.

Pre-registration means the rules exist, signed, before any model they judge.
:func:`register` signs an in-toto Statement over ``policies/verification.yaml``
(its subject) and the verify params (with the calibration and held-out seeds
they imply); every baseline build first checks it (:func:`check_registration`)
and records its digest. Each baseline then carries a :func:`stamp`: the params,
the code and the inputs it was built from, so a baseline built under anything
else is found (:func:`differences`) and refused or rebuilt, never judged.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lineage._canonical import canonical_json, file_sha256, sha256_hex
from lineage.errors import BadInputError, LineageError
from lineage.layout import LAYOUT
from lineage.signing import (
    SIGNED_AT,
    TRUSTED_KEYS_DIR,
    load_trusted_keys,
    make_statement,
    read_statement,
    sign_envelope,
    write_envelope,
)
from verify.policy import LoadedPolicy
from verify.seeds import calibration_seeds, heldout_seed

REGISTRATION = LAYOUT.verify_registration
PREDICATE_TYPE = "https://exante.dev/attestations/verification-registration/v1"
SCHEMA_VERSION = 1
WHAT = "verification registration"
# The code a baseline is built by: what its DVC stages list as deps, no more, so that
# editing the judging (verify/run.py, verify/policy.py) does not stale the baselines.
CODE = ("lineage", "training", "verify/forget.py", "verify/baselines.py", "verify/provenance.py",
        "verify/seeds.py", "verify/unlearn", "verify/_registry.py")  # fmt: skip


class RegistrationError(BadInputError):
    """The verification is not registered, or its policy or params changed since."""


class StaleBaselineError(BadInputError):
    """A baseline was built under other params, code, inputs or registration."""


# -- registration -----------------------------------------------------------------------


def plan(params, policy: LoadedPolicy) -> dict:
    """What a registration fixes: the policy file, the verify params and the seeds they imply."""
    v = params.verify.model_dump(mode="json")
    k = policy.policy.calibration.references
    return {
        "schema_version": SCHEMA_VERSION,
        "policy": {"path": policy.path, "sha256": policy.sha256},
        "verify_params": v,
        "verify_params_sha256": sha256_hex(canonical_json(v)),
        "train_seed": params.train.seed,
        "calibration_seeds": calibration_seeds(params.train.seed, k),
        "heldout_seed": heldout_seed(params.train.seed),
    }


def register(root: Path, params, policy: LoadedPolicy, signer) -> tuple[dict, bool]:
    """Sign the plan to ``REGISTRATION``; keep the signed file when it registers this plan already.

    Returns the registered predicate and whether a new statement was written.
    Keeping an unchanged registration keeps its digest, so the baselines built
    under it stay fresh.
    """
    root, want = Path(root), plan(params, policy)
    path = root / REGISTRATION
    if path.is_file():
        try:
            have = _registered(root)
        except LineageError:  # unreadable or untrusted: replaced by a good one below
            have = None
        if have is not None and _without_time(have) == want:
            return have, False
    payload = make_statement({policy.path: policy.sha256}, PREDICATE_TYPE, want)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_envelope(path, sign_envelope(payload, signer))
    return json.loads(payload)["predicate"], True


def check_registration(root: Path, policy: LoadedPolicy, *, params=None) -> dict:
    """The signed registration, checked against the policy on disk (and ``params`` if given).

    A bad signature is a :class:`~lineage.errors.VerificationError` (exit 1); a
    missing registration, or one for another policy or params, is a
    :class:`RegistrationError` (exit 3) that says how to register.
    """
    root = Path(root)
    if not (root / REGISTRATION).is_file():
        raise RegistrationError(
            f"{REGISTRATION} is missing: the verification must be registered before any baseline "
            "is built or judged; run `exante verify register` (dvc stage verify_register)"
        )
    got = _registered(root)
    problems = []
    registered = str((got.get("policy") or {}).get("sha256"))
    if registered != policy.sha256:
        problems.append(f"{policy.path}: sha256 {policy.sha256[:16]}… on disk, "
                        f"{registered[:16]}… registered")  # fmt: skip
    if params is not None:
        want = plan(params, policy)
        problems += [f"params.yaml: {k} differs from the registered one" for k in
                     ("verify_params_sha256", "train_seed") if got.get(k) != want[k]]  # fmt: skip
    if problems:
        raise RegistrationError(
            f"the verification plan changed after it was registered ({REGISTRATION}): rules or "
            "params moved after registration are not pre-registered. Restore them, or register "
            "anew with `exante verify register` and rebuild every baseline under it (`dvc repro`):",
            problems=problems,
        )
    return got


def registration_digest(root: Path) -> str:
    return file_sha256(Path(root) / REGISTRATION)


def _registered(root: Path) -> dict:
    trusted = load_trusted_keys(Path(root) / TRUSTED_KEYS_DIR)
    statement = read_statement(Path(root) / REGISTRATION, trusted, PREDICATE_TYPE, what=WHAT,
                               schema_version=SCHEMA_VERSION)  # fmt: skip
    return statement["predicate"]


def _without_time(predicate: dict) -> dict:
    return {k: v for k, v in predicate.items() if k != SIGNED_AT}


# -- baseline stamps ------------------------------------------------------------------


def code_digest(entries: Sequence[str] = CODE) -> str:
    """sha256 over the Python sources in ``entries`` as they are on disk (a dirty tree included)."""
    top = Path(__file__).resolve().parents[1]
    files = []
    for entry in entries:
        p = top / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return sha256_hex(canonical_json({f.relative_to(top).as_posix(): file_sha256(f)
                                      for f in files}))  # fmt: skip


def git_head(root: Path) -> str | None:
    """The checked-out commit, for the record only (a dirty tree has uncommitted code)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# How units are scheduled, not what they compute: a baseline trains to the same bits
# under any of these (the thread count, which does change bits, is stamped).
HOW = ("workers", "executor", "ray_address")


def stamp(root: Path, params, inputs: dict) -> dict:
    """What a baseline was built from: params, code, inputs (name → sha256) and registration."""
    p = {"train": params.train.model_dump(mode="json", exclude=set(HOW)),
         "verify": params.verify.model_dump(mode="json")}  # fmt: skip
    return {
        "params": p,
        "params_sha256": sha256_hex(canonical_json(p)),
        "code": {"sha256": code_digest(), "git_head": git_head(Path(root))},
        "inputs": dict(sorted(inputs.items())),
        "registration_sha256": registration_digest(root),
    }


def differences(recorded: dict | None, current: dict) -> list[str]:
    """What differs between a baseline's recorded stamp and the current one, by name."""
    if not isinstance(recorded, dict) or not set(current) <= set(recorded):
        return ["no provenance recorded (built by an older exante)"]
    out = [
        f"params {section}.{k}"
        for section in ("train", "verify")
        for k in _changed(_dict(recorded["params"], section), current["params"][section])
    ]
    if _dict(recorded, "code").get("sha256") != current["code"]["sha256"]:
        out.append(f"code ({', '.join(CODE)})")
    out += [f"input {k}" for k in _changed(_dict(recorded, "inputs"), current["inputs"])]
    if recorded["registration_sha256"] != current["registration_sha256"]:
        out.append(f"registration ({REGISTRATION})")
    return out


def _dict(d, key: str) -> dict:
    value = d.get(key) if isinstance(d, dict) else None
    return value if isinstance(value, dict) else {}


def _changed(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
