"""When a trusted key may sign: validity periods, revocation, and the signing time.

A key's metadata lives beside its public key as ``<name>.meta.yaml`` and names
the key by id, so a renamed file cannot lend its period to another key::

    keyid: 3f1c...            # sha256 of the public key (DER SubjectPublicKeyInfo)
    not_before: "2026-01-01T00:00:00+00:00"
    not_after: "2026-12-02T11:30:00+00:00"   # optional: set when the key is rotated out
    revoked_at: null                         # optional
    compromised: false                       # true: every signature by the key fails
    reason: ""

A key without metadata is valid always (projects from before rotation keep
verifying). DSSE carries no time, so the time a signature was made is the
``signed_at`` of the signed predicate: the signer's own claim. It cannot stop
whoever holds a key from backdating; that is what ``compromised: true`` is for
— a compromised key's signatures all fail, whatever time they claim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from lineage._canonical import atomic_write
from lineage.errors import KeyFileError

SIGNED_AT = "signed_at"
META_SUFFIX = ".meta.yaml"


def utc_text(t: datetime) -> str:
    """The one spelling of a time exante signs: UTC, whole seconds, ISO 8601."""
    return t.astimezone(UTC).replace(microsecond=0).isoformat()


def signing_time() -> str:
    """Now, or ``$SOURCE_DATE_EPOCH`` when set (reproducible builds sign a fixed time)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return utc_text(datetime.fromtimestamp(int(epoch), UTC))
        except (ValueError, OverflowError, OSError):
            raise KeyFileError(
                f"$SOURCE_DATE_EPOCH={epoch[:40]!r} is not a Unix time in seconds; fix or unset it"
            ) from None
    return utc_text(datetime.now(UTC))


def parse_utc(value) -> datetime | None:
    """A signed ``signed_at`` back as an aware time; None when absent or not a UTC time."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None and t.utcoffset().total_seconds() == 0 else None


class _Meta(BaseModel):
    """The file's shape; a misspelled field is an error, not a key valid forever."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyid: str = Field(pattern=r"^[0-9a-f]{64}$")  # Rust regex: $ is the true end
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None
    compromised: bool = False
    reason: str = ""


@dataclass(frozen=True)
class KeyValidity:
    """When one trusted key may have signed; see the module docstring."""

    keyid: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    compromised: bool = False
    reason: str = ""

    @property
    def limited(self) -> bool:
        """Whether the signing time matters at all."""
        return any((self.not_before, self.not_after, self.revoked_at, self.compromised))

    def problem(self, signed_at: datetime | None) -> str | None:
        """Why a signature claiming ``signed_at`` does not count; None when it does."""
        why = f" ({self.reason})" if self.reason else ""
        if self.compromised:
            return f"the key was revoked as compromised{why}: every signature by it is void"
        if not self.limited:
            return None
        if signed_at is None:
            return (
                "the statement carries no signed_at (made before exante recorded signing "
                "times), and this key has a validity period or was revoked: only keys without "
                "limits verify such statements; re-sign it with a current key"
            )
        at = utc_text(signed_at)
        if self.revoked_at is not None and signed_at >= self.revoked_at:
            return f"signed at {at}, after the key was revoked at {utc_text(self.revoked_at)}{why}"
        if self.not_before is not None and signed_at < self.not_before:
            return f"signed at {at}, before the key became valid ({utc_text(self.not_before)})"
        if self.not_after is not None and signed_at > self.not_after:
            return (
                f"signed at {at}, after the key's validity ended ({utc_text(self.not_after)}); "
                "it was rotated out"
            )
        return None

    def to_yaml(self) -> bytes:
        doc = {
            "keyid": self.keyid,
            "not_before": self.not_before and utc_text(self.not_before),
            "not_after": self.not_after and utc_text(self.not_after),
            "revoked_at": self.revoked_at and utc_text(self.revoked_at),
            "compromised": self.compromised,
            "reason": self.reason,
        }
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


def read_meta(path: Path) -> KeyValidity:
    try:
        doc = yaml.safe_load(Path(path).read_bytes())
        meta = _Meta.model_validate(doc)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyFileError(f"key metadata {path} is unreadable: {exc}; fix or remove it") from None
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()]
        raise KeyFileError(f"key metadata {path} is malformed:", problems=problems) from None
    return KeyValidity(**meta.model_dump())


def read_all_meta(directory: Path) -> dict[str, tuple[Path, KeyValidity]]:
    """Every ``*.meta.yaml`` under ``directory``, by key id; two files for one key are refused."""
    out: dict[str, tuple[Path, KeyValidity]] = {}
    for path in sorted(Path(directory).glob(f"*{META_SUFFIX}")):
        v = read_meta(path)
        if v.keyid in out:
            raise KeyFileError(
                f"{path} and {out[v.keyid][0]} both describe key {v.keyid[:16]}; keep one"
            )
        out[v.keyid] = (path, v)
    return out


def write_meta(path: Path, validity: KeyValidity) -> None:
    atomic_write(Path(path), validity.to_yaml())
