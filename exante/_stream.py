"""Run a child process with its output streamed: into a log file always, to a reader on request.

``exante delete`` runs the pipeline (``dvc repro``) as a child, and the shard
retrain runs inside that. Captured silently, minutes pass without a word; so
every line is written to a log under the project as it arrives, and handed to
``echo`` (the progress printer) when progress is on. ``PROGRESS_ENV`` tells an
``exante train`` child to print one line per epoch even though its stderr is a pipe.
"""

from __future__ import annotations

import os
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PROGRESS_ENV = "EXANTE_PROGRESS"
TAIL_LINES = 15


def run_streamed(
    cmd: Sequence[str],
    cwd: Path,
    *,
    log: Path,
    echo: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, list[str]]:
    """Run ``cmd``; return its exit code and its last lines (for an error message).

    stdout and stderr are merged in the order the child wrote them; the log is
    flushed line by line, so ``tail -f`` follows a long retrain.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(env)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                bufsize=1)  # fmt: skip
        for line in proc.stdout:
            out.write(line)
            out.flush()
            tail.append(line.rstrip("\n"))
            if echo is not None:
                echo(line.rstrip("\n"))
        code = proc.wait()
        out.write(f"# exit {code}\n")
    return code, [line for line in tail if line.strip()]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What :func:`run_streamed` gives its child: this environment, unbuffered, and ``extra``."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
