"""Shape checks for JSON that exante signs and reads back.

Each answers yes or no, so that a validator can collect every problem of a
document before it raises one error naming them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import pairwise

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9._:/@+-]+")


def is_sha256(value) -> bool:
    """64 lowercase hex characters: the only spelling of a digest exante writes."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def is_count(value) -> bool:
    """A non-negative int (JSON ``true`` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_strs(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_sorted_set(values: list) -> bool:
    """Sorted without repeats: one canonical spelling for a set."""
    return all(a < b for a, b in pairwise(values))


def is_utc(value) -> bool:
    """An ISO 8601 time in UTC (a naive time could be any zone)."""
    try:
        return datetime.fromisoformat(value).utcoffset() == timedelta(0)
    except (TypeError, ValueError):
        return False


def key_problems(document: dict, keys: Iterable[str], *, what: str) -> list[str]:
    """Missing and unknown keys: a misspelled field is an error, not a silent default."""
    keys = set(keys)
    return [f"{what} lacks {k!r}" for k in sorted(keys - document.keys())] + [
        f"{what} has unknown field {shown(k)}" for k in sorted(document.keys() - keys)
    ]


def shown(value, limit: int = 64) -> str:
    """``value`` as an error message may quote it: an id or digest, else only its kind.

    Messages about untrusted files quote ids and digests, never content: a
    string is quoted only if it looks like an id (ASCII letters, digits and
    ``._:/@+-``, at most ``limit`` long), so neither a person's text nor a
    control character reaching a terminal can come through.
    """
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:limit]
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    if _ID.fullmatch(value) and len(value) <= limit:
        return f"'{value}'"
    return f"<text of {len(value)} characters>"


def named(value) -> str:
    """A path or id from an untrusted file, as :func:`shown` would quote it, without the quotes."""
    text = shown(value)
    return text[1:-1] if text.startswith("'") else text
