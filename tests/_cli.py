"""Run the ``exante`` CLI in-process, as a user would in a project directory."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from exante.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def exante(root: Path, *args: str) -> Result:
    """``exante -C root *args``: exit code, stdout and stderr (the cwd is restored after)."""
    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["-C", str(root), *args])
    finally:
        os.chdir(cwd)
    return Result(code, out.getvalue(), err.getvalue())
