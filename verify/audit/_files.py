"""Which project files go into a bundle, and reading a bundle back safely."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path, PurePosixPath

from lineage.errors import BadInputError, VerificationError

PREFIX = "exante-audit"
INDEX = "index.dsse.json"
REPORT = "report.html"
MAX_FILE = 64 << 20  # a bundle holds metadata: a larger member is not one we wrote

# Project-relative paths (globs) a bundle must carry; the pipeline writes all of them.
REQUIRED = (
    "data/sources.yaml",
    "data/manifest.dsse.json",
    "data/manifest.leaves",
    "data/manifests/v*.dsse.json",
    "data/gate/decision.dsse.json",
    "data/gate/summary.json",
    "data/shards/partition.dsse.json",
    "models/attestation.dsse.json",
    "models/ensemble.sig",
    "models/ensemble/ensemble.json",
    "models/evidence.json",
    "data/verification/report.dsse.json",
    "data/verification/results.json",
    "data/verification/summary.json",
    "data/verification/evidence.json",
    "data/verification/plots/*.png",
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    "policies/*.yaml",
    "policies/trusted_keys/*.pub.pem",
)
# Present once something has happened (a deletion, a validation run, a shard trained).
OPTIONAL = (
    "data/manifests/v*.leaves",
    "data/gate/allowed.leaves",
    "data/reports/validation.json",
    "data/ledger.jsonl",
    "data/ledger.head.dsse.json",
    "data/ledger.denied.json",
    "data/receipts/*.dsse.json",
    "data/receipts/verification/*/report.dsse.json",  # exante delete --verify
    "data/receipts/verification/*/results.json",
    "data/receipts/verification/*/summary.json",
    "data/receipts/verification/*/evidence.json",
    "data/receipts/verification/*/plots/*.png",
    "models/base/metrics.json",
    "models/shards/s*/metrics.json",
    "models/shards/s*/slices.json",
    "policies/trusted_keys/*.meta.yaml",  # key validity and revocation (exante keys rotate)
)


class AuditError(VerificationError):
    """Root of the audit errors: a bundle could not be built or does not verify."""


class BundleInputError(BadInputError, AuditError):
    """The project lacks what a bundle needs, or a bundle file is not a bundle."""

    exit_code = 3


def project_files(root: Path) -> dict[str, bytes]:
    """Every file a bundle carries, by project-relative POSIX path, in sorted order."""
    root, out, missing = Path(root), {}, []
    for pattern, required in [(p, True) for p in REQUIRED] + [(p, False) for p in OPTIONAL]:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if required and not found:
            missing.append(pattern)
        out.update({p.relative_to(root).as_posix(): p.read_bytes() for p in found})
    if missing:
        raise BundleInputError(
            f"{root}: cannot build an audit bundle, the pipeline's outputs are missing. "
            "Run `dvc repro` (or `make run`) first:",
            problems=missing,
        )
    return dict(sorted(out.items()))


def write_tar_gz(path: Path, files: dict[str, bytes]) -> bytes:
    """A byte-reproducible .tar.gz: sorted names, fixed mtimes, owners and modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"{PREFIX}/{name}")
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def read_tar_gz(path: Path) -> dict[str, bytes]:
    """A bundle's files by name, refusing anything a bundle writer would not have written."""
    try:
        with tarfile.open(fileobj=io.BytesIO(Path(path).read_bytes()), mode="r:gz") as tar:
            return _members(path, tar)
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise BundleInputError(f"{path}: not a readable audit bundle (.tar.gz): {exc}") from None


def _members(path: Path, tar: tarfile.TarFile) -> dict[str, bytes]:
    files, problems = {}, []
    for m in tar.getmembers():
        name = _member_name(m.name)
        if name is None or not m.isfile():
            problems.append(f"{m.name!r}: not a plain file under {PREFIX}/")
        elif m.size > MAX_FILE:
            problems.append(f"{m.name!r}: {m.size} bytes, larger than any bundle file")
        elif name in files:
            problems.append(f"{m.name!r}: appears twice")
        else:
            files[name] = tar.extractfile(m).read()
    if problems:
        raise BundleInputError(f"{path}: not a well-formed audit bundle:", problems=problems)
    return files


def _member_name(name: str) -> str | None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) < 2 or p.parts[0] != PREFIX:
        return None
    return PurePosixPath(*p.parts[1:]).as_posix()
