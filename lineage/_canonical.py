"""Canonical bytes: the one way exante serializes anything it hashes or signs.

JSON with sorted keys, no insignificant whitespace, UTF-8; text normalized to
NFC with ``\\n`` line ends. Two machines that agree on these rules agree on
every digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` so that equal values give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def canonical_text(text: str) -> str:
    """NFC-normalize and use ``\\n`` line ends, so a record's digest is stable.

    ASCII text is already NFC, and text without ``\\r`` has nothing to replace:
    skipping that work is what keeps hashing a million records fast.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_sha256(text: str) -> str:
    """Digest of a record's canonical text."""
    if "\r" in text or not text.isascii():  # else already canonical: skip the call
        text = canonical_text(text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path, *, chunk: int = CHUNK) -> str:
    """Stream a file through SHA-256 in fixed-size chunks: memory does not grow with size."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
