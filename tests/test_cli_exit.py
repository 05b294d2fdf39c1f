"""The ``exante`` command's exit: exit handlers and output kept, the module teardown skipped."""

from __future__ import annotations

import subprocess
import sys

FAKE = """
import atexit, sys, threading, time
import exante.cli as cli

class Teardown:
    def __del__(self):
        print("module teardown ran")

KEPT = Teardown()  # a module global: only the interpreter's teardown would collect it

def fake_main(argv=None):
    atexit.register(lambda: print("exit handler ran"))
    sys.stdout.write("x" * 100_000)  # buffered, not flushed yet
    if THREAD:
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
    return 7

cli.main = fake_main
cli.entry()
"""


def _run(thread: bool) -> subprocess.CompletedProcess:
    code = f"THREAD = {thread}\n" + FAKE
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_entry_runs_exit_handlers_flushes_output_and_skips_the_teardown():
    out = _run(thread=False)
    assert out.returncode == 7, out.stderr
    assert out.stdout == "x" * 100_000 + "exit handler ran\n"  # no "module teardown ran"


def test_entry_waits_for_a_running_thread_by_exiting_normally():
    out = _run(thread=True)
    assert out.returncode == 7, out.stderr
    assert out.stdout.startswith("x" * 100_000)
    assert "thread done" in out.stdout and "exit handler ran" in out.stdout


def test_entry_exits_normally_under_a_profiler(tmp_path):
    """``python -m cProfile -o`` writes its output after the script: the exit must let it."""
    script = tmp_path / "fake.py"
    script.write_text("THREAD = False\n" + FAKE)
    prof = tmp_path / "out.prof"
    out = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(script)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "exit handler ran\n" in out.stdout, out.stderr  # cProfile swallows the exit code
    assert prof.is_file() and prof.stat().st_size > 0
