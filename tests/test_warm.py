"""The warm process that forks a deletion's stage commands (exante/warm.py).

A command it forks must behave as the same command run by itself: output,
exit status, signals. Where it cannot stand in exactly, the command runs by
itself. (Every deletion of the test suite goes through it: tests/test_deletion.py
compares the shard it retrained bit for bit with one a fresh process trains.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from exante import warm

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the warm process is Linux-only")

# Heavy commands wait for the warm process, so they are always forked by it.
BAD_BUNDLE = ["audit", "verify", "missing.tar.gz"]  # bad input: exit 3
COMMANDS = [["--help"], ["no-such-command"], BAD_BUNDLE, ["verify", "check"]]


@pytest.fixture
def server(tmp_path):
    """A warm process for commands run in ``tmp_path``: (its env, its log, a stop function,
    its pid)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(warm.ENV, None)
    log = tmp_path / "warm.log"
    started = warm.start(tmp_path, env, log)
    assert started is not None, "the exante script is not on PATH"
    handle, warm_env = started
    stopped = []

    def stop():
        if not stopped:
            stopped.append(warm.stop(handle))

    yield warm_env, log, stop, handle[0].pid
    stop()


def _run(argv, cwd, env, **kw):
    return subprocess.run(["exante", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, **kw)  # fmt: skip


def _forked(log: Path) -> list[str]:
    return [x.split(": ", 1)[1] for x in log.read_text().splitlines() if x.startswith("forked ")]


def _preloaded(log: Path, timeout: float = 300) -> None:
    """Wait until the warm process has imported everything (then it is free at once)."""
    deadline = time.monotonic() + timeout
    while not log.exists() or "modules preloaded after" not in log.read_text():
        assert time.monotonic() < deadline, "the warm process did not finish importing"
        time.sleep(0.1)


def test_a_forked_command_answers_as_the_command_run_by_itself(tmp_path, server):
    warm_env, log, stop, _ = server
    cold_env = {k: v for k, v in warm_env.items() if k != warm.ENV}
    _preloaded(log)  # light commands too are forked by a free warm process
    time.sleep(warm.REAP_EVERY + 0.5)  # and it has woken idle, to collect ended handlers
    results = []
    for argv in COMMANDS:
        cold = _run(argv, tmp_path, cold_env)
        forked = _run(argv, tmp_path, warm_env)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            cold.returncode, cold.stdout, cold.stderr), argv  # fmt: skip
        results.append(cold.returncode)
    assert results == [0, 2, 3, 3]
    assert "missing.tar.gz" in _run(BAD_BUNDLE, tmp_path, warm_env).stderr
    shut = " ".join(["exante", *BAD_BUNDLE, "<&-", ">&-"])  # stdin and stdout closed
    closed, alone = (subprocess.run(shut, shell=True, cwd=tmp_path, env=e, capture_output=True,
                                    text=True) for e in (warm_env, cold_env))  # fmt: skip
    assert (closed.returncode, closed.stderr) == (alone.returncode, alone.stderr)
    assert alone.returncode == 3 and "missing.tar.gz" in alone.stderr
    stop()
    forked = _forked(log)
    assert forked == [" ".join(a) for a in COMMANDS] + [" ".join(BAD_BUNDLE)] * 2, log.read_text()
    assert log.read_text().splitlines()[-1].startswith("stopped after ")


def test_a_command_whose_environment_differs_runs_by_itself(tmp_path, server):
    warm_env, log, stop, _ = server
    other = {**warm_env, "EXANTE_SOMETHING_ELSE": "1"}  # a variable a module might read
    out = _run([*BAD_BUNDLE[:2], "other.tar.gz"], tmp_path, other)
    assert out.returncode == 3 and "other.tar.gz" in out.stderr
    per_stage = {**warm_env, "DVC_STAGE": "x", "DVC_ROOT": str(tmp_path), "SHLVL": "9"}
    assert _run(BAD_BUNDLE, tmp_path, per_stage).returncode == 3
    stop()
    assert _forked(log) == [" ".join(BAD_BUNDLE)]  # the one with DVC's per-stage variables
    assert "ran by itself" in log.read_text()


def test_without_a_warm_process_a_command_runs_by_itself(tmp_path, monkeypatch):
    for value in ("off", str(tmp_path / "no-socket"), ""):
        monkeypatch.setenv(warm.ENV, value)
        assert warm.forward(["exante", *BAD_BUNDLE]) is None
        assert _run(BAD_BUNDLE, tmp_path, dict(os.environ)).returncode == 3
    monkeypatch.setenv(warm.ENV, "off")
    assert warm.start(tmp_path, dict(os.environ), tmp_path / "log") is None


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _stage_of(server_pid: int, timeout: float = 120) -> int:
    """The forked stage (the one child of the warm process's child for a command), once
    it waits for its standard input (its imports done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = [s for h in _children(server_pid) for s in _children(h)]
        if stages and _reading_a_pipe(stages[0]):
            return stages[0]
        time.sleep(0.05)
    raise AssertionError(f"no forked stage appeared: {_children(server_pid)}")


def _wchan_works() -> bool:
    """Whether /proc/PID/wchan names what a blocked process waits in (kernels may hide it)."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if _reading_a_pipe(proc.pid):
                return True
            time.sleep(0.05)
        return False
    finally:
        proc.kill()
        proc.wait()


def _ended(log: Path, pid: int) -> str:
    return next(x.split(": ", 1)[1] for x in log.read_text().splitlines()
                if x.startswith(f"ended {pid}:"))  # fmt: skip


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="no /proc/PID/task/TID/children on this kernel")  # fmt: skip
def test_signals_reach_the_forked_stage_and_a_killed_command_takes_it_along(tmp_path, server):
    warm_env, log, stop, server_pid = server
    if not _wchan_works():
        pytest.skip("/proc/PID/wchan does not say where a process waits on this kernel")
    waiting = ["audit", "verify", "/dev/stdin"]  # reads its standard input until it closes

    def started():
        proc = subprocess.Popen(["exante", *waiting], cwd=tmp_path, env=warm_env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        return proc, _stage_of(server_pid)

    def gone(pid: int) -> None:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"{pid} is still running"
            time.sleep(0.05)

    proc, stage = started()  # SIGTERM to the command: forwarded, the stage dies of it
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    gone(stage)
    assert _ended(log, stage) == "signal 15"

    proc, stage = started()  # SIGINT: the stage's KeyboardInterrupt, exit 130 as by itself
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert b"interrupted" in proc.stderr.read()
    assert _ended(log, stage) == "exit 130"

    proc, stage = started()  # the stage killed: its command dies of the same signal
    os.kill(stage, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL

    proc, stage = started()  # SIGKILL cannot be forwarded: the warm process kills the stage
    proc.kill()
    proc.wait(timeout=60)
    gone(stage)

    proc, stage = started()  # the warm process's child dies: the stage with it, the command 70
    (handler,) = [h for h in _children(server_pid) if stage in _children(h)]
    os.kill(handler, signal.SIGKILL)
    assert proc.wait(timeout=60) == 70
    assert b"ended without a status" in proc.stderr.read()
    gone(stage)
    stop()
    assert len(_forked(log)) == 5


def _reading_a_pipe(pid: int) -> bool:
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


THREADS = """
import importlib, json, os
import exante.warm as w

def unnamed():
    own = w._comm("self")
    return sum(w._comm(f"self/task/{t}") == own for t in os.listdir("/proc/self/task")) - 1

import numpy, scipy.linalg  # OpenBLAS's pools (numpy's and scipy's own)
blas = unnamed()
[importlib.import_module(m) for m in w.PRELOAD]
print(json.dumps([w._unsafe_threads(), blas, unnamed()]))
"""


def test_the_preloaded_modules_leave_no_thread_a_fork_would_not_survive():
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    unsafe, blas, unnamed = json.loads(out.stdout)
    assert unsafe == []
    assert unnamed == blas  # the only unnamed native threads are OpenBLAS's


def test_a_python_thread_is_one_a_fork_would_not_survive():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="busy", daemon=True)
    t.start()
    try:
        assert "busy" in warm._unsafe_threads()
    finally:
        stop.set()
        t.join()
    assert "busy" not in warm._unsafe_threads()


POOL = """
import json, math, os, socket, sys
from exante import warm
from training.executor import UnitFailedError, run_units, start_workers_with
from exante._warm_pool import context

# This interpreter is not the exante script, so its module path differs from the warm
# process's: take the warm process's interpreter and path as ours, as a forked stage's
# would be; the environment compared is still this process's own.
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(os.environ[warm.ENV])
theirs = json.loads(warm._recv_message(conn))
conn.close()
own = warm._fingerprint
warm._fingerprint = lambda environ: {**theirs, "env": own(environ)["env"]}
warm._FORKED_AS = json.dumps(warm._fingerprint(os.environ))
warm._FORKED_ENV, warm._FORKED_PATH = dict(os.environ), list(sys.path)
start_workers_with(context)
print(os.getpid())
print(json.dumps(run_units(math.factorial, [(5,), (6,), (7,)], workers=2)))
print(json.dumps(sorted(set(run_units(os.getppid, [(), (), ()], workers=2)))))
try:
    run_units(int, [("1",), ("not a number",)], workers=2)
except UnitFailedError as exc:
    print(json.dumps([exc.exit_code, str(exc).splitlines()[0]]))
os.environ["ADDED_BY_AN_IMPORT"] = "1"  # as MLflow's: a worker gets it with the rest
sys.path.append("/nonexistent")
print(json.dumps(run_units(os.getenv, [("ADDED_BY_AN_IMPORT",)] * 2, workers=2)))
print(json.dumps(sorted(set(run_units(os.getppid, [(), ()], workers=2)))))
os.environ["HOME"] = "/elsewhere"  # a variable it was forked with changed: the pool spawns
print(json.dumps(sorted(set(run_units(os.getppid, [(), ()], workers=2)))))
"""


def test_a_forked_stage_s_pool_workers_are_forked_by_the_warm_process(tmp_path, server):
    warm_env, log, stop, _ = server
    out = subprocess.run([sys.executable, "-c", POOL], cwd=tmp_path, env=warm_env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = (json.loads(x) for x in out.stdout.splitlines())
    me, results, parents, failed, added, still, spawned = lines
    assert results == [120, 720, 5040]
    assert me not in parents  # each worker's parent: the warm process's child that forked it
    assert failed == [70, "1: invalid literal for int() with base 10: 'not a number'"]
    assert added == ["1", "1"] and me not in still  # forked by the warm process still
    assert spawned == [me]
    stop()
    assert _forked(log).count("a pool worker") >= 4, log.read_text()  # 1 or 2 per pool


def test_a_warm_process_whose_deletion_died_removes_its_socket(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != warm.ENV}
    (proc, alive_w, where), _ = warm.start(tmp_path, env, tmp_path / "warm.log")
    assert Path(where, "socket").exists()
    os.close(alive_w)  # as when the deletion is killed: its end of the lifeline closes
    assert proc.wait(timeout=60) == 0
    assert not Path(where).exists()
