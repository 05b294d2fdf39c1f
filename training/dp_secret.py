"""The DP secret: the key that DP-SGD's noise and Poisson sampling are derived from.

DP-SGD is private only while nobody can regenerate its noise. Seeding the
noise from ``train.seed``, which ``params.yaml`` and the audit bundle publish,
would let anyone subtract it again. So the generators are keyed by 32 random
bytes kept beside the signing key (``.exante/keys/dp.secret``, mode 0600, or
``$EXANTE_DP_SECRET``), never in params, the bundle or MLflow:

    seed(shard, slice, stream) = HMAC-SHA256(secret, "<shard>/<slice>/<stream>")[:8]

The operator, who holds the secret, can replay any shard bit for bit (exact
deletion retrains it); nobody else can. The training attestation carries only
a commitment, ``sha256("exante-dp-secret-commitment\\0" || secret)``, which
shows which secret was used without revealing it. No torch here: the CLI
creates the secret with the signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lineage._canonical import atomic_write
from lineage.errors import KeyFileError
from lineage.layout import LAYOUT

SECRET_ENV = "EXANTE_DP_SECRET"
DEFAULT_SECRET_PATH = LAYOUT.dp_secret
SECRET_BYTES = 32
COMMITMENT_PREFIX = b"exante-dp-secret-commitment\x00"
STREAMS = frozenset({"noise", "sampling"})


class DPSecretError(KeyFileError):
    """The DP secret is missing or malformed (exit 3); `exante keys init` creates it."""


@dataclass(frozen=True)
class DPSecret:
    """32 secret bytes; ``repr`` never shows them."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != SECRET_BYTES:
            raise DPSecretError(f"a DP secret is exactly {SECRET_BYTES} bytes")

    def commitment(self) -> str:
        """What the attestation records: binds the secret, reveals nothing of it."""
        return hashlib.sha256(COMMITMENT_PREFIX + self.key).hexdigest()

    def seed(self, *, shard: int, slice_: int, stream: str) -> int:
        """A 64-bit generator seed for one stream of one slice run of one shard."""
        if stream not in STREAMS:
            raise ValueError(f"unknown DP stream {stream!r} (known: {sorted(STREAMS)})")
        mac = hmac.new(self.key, f"{shard}/{slice_}/{stream}".encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "big")


def dp_secret_path(root: Path = Path("."), explicit: Path | None = None) -> Path:
    """``explicit``, else ``$EXANTE_DP_SECRET``, else ``<root>/.exante/keys/dp.secret``."""
    return Path(root) / Path(explicit or os.environ.get(SECRET_ENV) or DEFAULT_SECRET_PATH)


def create_dp_secret(path: Path) -> bool:
    """Write 32 random bytes, mode 0600; False (and nothing written) if ``path`` exists.

    Never overwritten: a new secret could not replay the shards the old one trained.
    """
    path = Path(path)
    if path.exists():
        return False
    atomic_write(path, os.urandom(SECRET_BYTES), mode=0o600)
    return True


def load_dp_secret(path: Path) -> DPSecret:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DPSecretError(
            f"no DP secret at {path}: DP-SGD noise is keyed by it. Create it with "
            f"`exante keys init --if-missing` (or point ${SECRET_ENV} at yours), and back it "
            "up with the signing key: without it no shard can be replayed for an exact deletion"
        ) from None
    except OSError as exc:
        raise DPSecretError(f"cannot read the DP secret {path}: {exc.strerror or exc}") from None
    if len(data) != SECRET_BYTES:
        raise DPSecretError(
            f"{path} holds {len(data)} bytes, not the {SECRET_BYTES} of a DP secret; "
            "restore it from your backup"
        )
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise DPSecretError(f"{path} is readable by others; run `chmod 600 {path}`")
    return DPSecret(data)
