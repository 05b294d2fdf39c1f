"""The forms of the ids exante reads: source ids, raw record and subject ids, record ids.

Every pattern is matched with ``fullmatch``: a ``$`` anchor also matches before
a trailing newline, and an id such as ``"p0001\\n"`` would then pass ingest and
escape a deletion that names ``p0001``. One module, so that ingest, the records
parser (used by the manifest, the gate and training alike) and the policy all
accept exactly the same ids.
"""

from __future__ import annotations

import re

SOURCE_ID = re.compile(r"[a-z0-9][a-z0-9_\-]*")
RAW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")
SOURCE_ID_FORM = "lowercase letters, digits, '_' and '-', starting with a letter or digit"
RAW_ID_FORM = "letters, digits, '.', '_', ':' and '-', starting with a letter or digit"
RECORD_ID_FORM = "<source id>/<raw id>"


def is_source_id(value) -> bool:
    return isinstance(value, str) and SOURCE_ID.fullmatch(value) is not None


def is_raw_id(value) -> bool:
    """A raw record id or a data-subject id: no whitespace, no newline, no '/'."""
    return isinstance(value, str) and RAW_ID.fullmatch(value) is not None


def is_record_id(value) -> bool:
    """``<source id>/<raw id>``, as ingest writes it."""
    if not isinstance(value, str):
        return False
    source, sep, raw = value.partition("/")
    return bool(sep) and is_source_id(source) and is_raw_id(raw)
