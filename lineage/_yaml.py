"""Reading a YAML configuration file (sources, policies, params) that a person edits by hand.

Whatever is in the file, the answer is its parsed value or one problem naming
what is wrong: invalid UTF-8, a YAML syntax error, an impossible date
(``2025-02-30``) or nesting deep enough to exhaust the parser's recursion are
all input mistakes (exit 3), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lineage.errors import BadInputError


def parse_yaml(path: Path) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, problem)`` such as ``"not valid UTF-8 (byte 7)..."``.

    ``FileNotFoundError`` passes through: callers differ on what a missing file means.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        return None, f"not readable ({exc.strerror or exc})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start}): save it as UTF-8 and run again"
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        return None, f"not valid YAML: {exc}"
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:
        # ValueError: a date such as 2025-02-30; RecursionError: absurdly deep nesting
        return None, f"not valid YAML: {type(exc).__name__}: {exc}"


def read_yaml(path: Path, *, error: type[BadInputError]) -> Any:
    """The parsed content of ``path``, or ``error`` naming the file and the problem."""
    value, problem = parse_yaml(path)
    if problem is not None:
        raise error(f"{path} is {problem}")
    return value
