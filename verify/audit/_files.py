"""Which project files go into a bundle, and reading a bundle back safely."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from lineage._shape import named
from lineage.errors import BadInputError, VerificationError
from lineage.layout import LAYOUT, VerificationFiles

PREFIX = "exante-audit"
INDEX = "index.dsse.json"
REPORT = "report.html"
MAX_FILE = 64 << 20  # a bundle holds metadata: a larger member is not one we wrote
MAX_TOTAL = 256 << 20  # inflated size of the whole tar: past it, reading stops (a bomb)
MAX_MEMBERS = 10_000  # a bundle has tens of files, a few per deletion
_MAX_PART, _MAX_NAME = 255, 1024  # bytes per path component (NAME_MAX), characters in all
_CHUNK = 1 << 20  # inflate this much at a time

_L = LAYOUT


def _verified(v: VerificationFiles) -> tuple[Path, ...]:
    return v.report, v.results, v.summary, v.evidence, v.plots / "*.png"


# Project-relative paths (globs) a bundle must carry; the pipeline writes all of them.
REQUIRED = tuple(
    _L.name(p)
    for p in (
        _L.registry,
        _L.manifest,
        _L.manifest_leaves,
        _L.manifest_history / "v*.dsse.json",
        _L.gate_decision,
        _L.gate_summary,
        _L.partition,
        _L.attestation,
        _L.signature,
        _L.ensemble / "ensemble.json",
        _L.evidence,
        *_verified(_L.verification_files),
        _L.dvc_file,
        _L.dvc_lock,
        _L.params,
        _L.policies / "*.yaml",
        _L.trusted / "*.pub.pem",
    )
)
# A deletion's receipt, as a bundle member's name (a regular expression, fullmatch).
RECEIPT = re.escape(_L.name(_L.receipts)) + r"/[^/]+\.dsse\.json"
# Present once something has happened (a deletion, a validation run, a shard trained).
OPTIONAL = tuple(
    _L.name(p)
    for p in (
        _L.manifest_history / "v*.leaves",
        _L.gate_allowed,
        _L.validation_report,
        _L.ledger,
        _L.ledger_head,
        _L.ledger_denied,
        _L.receipts / "*.dsse.json",
        *_verified(VerificationFiles(_L.request_verifications / "*")),  # exante delete --verify
        _L.base / "metrics.json",
        _L.shard_models / "s*" / "metrics.json",
        _L.shard_models / "s*" / "slices.json",
        _L.trusted / "*.meta.yaml",  # key validity and revocation (exante keys rotate)
    )
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
    """A bundle's files by name, refusing anything a bundle writer would not have written.

    The whole container is read: exactly one gzip member (its CRC and length
    checked) holding exactly one tar archive, followed by nothing but its zero
    end-of-archive blocks. ``tar -xzf`` would extract bytes hidden after either;
    a verifier must not pass a file whose every byte it has not judged.
    """
    try:
        if Path(path).stat().st_size > MAX_TOTAL:
            raise BundleInputError(
                f"{path}: larger than {MAX_TOTAL >> 20} MiB; not an audit bundle"
            )
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleInputError(f"{path}: cannot read the audit bundle: {exc.strerror}") from None
    raw = _gunzip(path, data)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            files = _members(path, tar)
            end = tar.offset
    except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
        raise BundleInputError(f"{path}: not a readable audit bundle (.tar.gz): {exc}") from None
    _check_tar_end(path, raw, end)
    return files


def _gunzip(path: Path, data: bytes) -> bytes:
    """One gzip member, inflated a chunk at a time, stopping as soon as it exceeds ``MAX_TOTAL``."""
    inflate, out = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), bytearray()
    try:
        chunk = inflate.decompress(data, _CHUNK)
        while True:
            out += chunk
            if len(out) > MAX_TOTAL:
                raise BundleInputError(
                    f"{path}: inflates to more than {MAX_TOTAL >> 20} MiB; an audit bundle "
                    "holds metadata only (a decompression bomb?)"
                )
            if inflate.eof or (not inflate.unconsumed_tail and len(chunk) < _CHUNK):
                break
            chunk = inflate.decompress(inflate.unconsumed_tail, _CHUNK)
    except zlib.error as exc:
        raise BundleInputError(
            f"{path}: not a readable audit bundle (.tar.gz): corrupt gzip data ({exc})"
        ) from None
    if not inflate.eof:
        raise BundleInputError(f"{path}: the gzip stream is cut short; the bundle is incomplete")
    if inflate.unused_data:
        raise BundleInputError(
            f"{path}: {len(inflate.unused_data)} bytes follow the gzip stream (a second member "
            "or appended data); a bundle is exactly one gzip member"
        )
    return bytes(out)


def _check_tar_end(path: Path, raw: bytes, end: int) -> None:
    """After the last member: two zero blocks, then only zero record padding."""
    tail = raw[end:]
    if len(tail) < 2 * tarfile.BLOCKSIZE or tail.count(0) != len(tail) or len(raw) % 512:
        raise BundleInputError(
            f"{path}: the tar archive does not end cleanly ({len(tail)} bytes after its "
            "last member are not its end-of-archive blocks); data is hidden after it, "
            "or it was cut short"
        )


def _members(path: Path, tar: tarfile.TarFile) -> dict[str, bytes]:
    members, problems = [], []
    for n, m in enumerate(tar, 1):
        if n > MAX_MEMBERS:
            raise BundleInputError(f"{path}: more than {MAX_MEMBERS} members; not an audit bundle")
        name = _member_name(m.name)
        if name is None or not m.isfile():
            problems.append(f"{named(m.name)}: not a plain file under {PREFIX}/ with a safe name")
        elif m.size > MAX_FILE:
            problems.append(f"{named(m.name)}: {m.size} bytes, larger than any bundle file")
        else:
            members.append((name, m))
    problems += _name_clashes([name for name, _ in members])
    if problems:
        more = [f"and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise BundleInputError(
            f"{path}: not a well-formed audit bundle:", problems=problems[:20] + more
        )
    return {name: tar.extractfile(m).read() for name, m in members}


def _name_clashes(names: list[str]) -> list[str]:
    """Names that could not all be files of one directory tree: repeats, a file under a file."""
    seen, problems = set(), []
    for name in names:
        if name in seen:
            problems.append(f"{named(name)}: appears twice")
        seen.add(name)
    for name in sorted(seen):
        parents = {p.as_posix() for p in PurePosixPath(name).parents}
        if clash := sorted(parents & seen):
            problems.append(f"{named(name)}: under {named(clash[0])}, which is a file")
    return problems


def _member_name(name: str) -> str | None:
    """The bundle-relative name, if ``name`` is one a bundle writer writes; else None."""
    p = PurePosixPath(name)
    if p.is_absolute() or len(p.parts) < 2 or p.parts[0] != PREFIX or p.as_posix() != name:
        return None
    parts = p.parts[1:]
    if any(x in ("..", ".") or len(x.encode("utf-8", "surrogatepass")) > _MAX_PART for x in parts):
        return None
    if len(name) > _MAX_NAME or not name.isprintable() or "\\" in name:
        return None
    return PurePosixPath(*parts).as_posix()
