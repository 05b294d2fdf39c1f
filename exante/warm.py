"""A warm process that forks the stage commands of a deletion's pipeline.

Every stage of ``dvc repro`` is a new ``exante`` process, and each spent
seconds importing torch, transformers or Great Expectations before it did any
work: about 17 s of one deletion's wall time (docs/benchmarks.md). While a
deletion runs, :func:`start` launches one warm process that imports those
modules once and then forks a child for each stage command: the command
(``exante <stage>``, as ``dvc repro`` runs it) finds the socket named by
``$EXANTE_WARM``, hands over its arguments, directory, environment and
standard streams, forwards the signals it receives, and exits with the forked
stage's status. The forked stage runs the same code on the same inputs as a
fresh process; it only skips the imports. A forked stage's process pools
(:func:`training.executor.run_units`: the verification's parts, the
baselines) have their workers forked by the warm process too
(:mod:`exante._warm_pool`) instead of spawned. What the warm process did
(which commands it forked, what it preloaded) is in ``.exante/logs/warm-*.log``.

A command runs by itself, as it always did, whenever the warm process cannot
stand in for a fresh one: no socket (``$EXANTE_WARM`` unset, or ``off``), the
warm process gone or not serving, or an interpreter, module path, flag or
environment variable that differs from the warm process's (the variables the
shell and DVC set for each stage aside). A forked stage takes the command's
directory, umask, environment and ignored signals, gets the signal handlers a
fresh interpreter has, its own process group (its pool's workers join it; a
terminal's interrupt reaches the group through the command), and draws again
what a fresh process draws (``multiprocessing``'s key, numpy's global seed); the
hash seed stays the warm process's. It dies with the handler that reports its
status, and the handler kills it when its command goes away.

The warm process serves only while, after each import, it holds no thread of
Python's and no native thread that names itself, jemalloc's background thread
(pyarrow; jemalloc's fork handlers restart it) aside. Unnamed native threads
are allowed: after these imports they are OpenBLAS's pools (numpy, scipy),
which OpenBLAS stops before a fork and starts again when used (the test suite
lists the threads the imports leave). Modules that start other threads when
imported (MLflow's polars cleaner) are not preloaded. torch's own thread pool
starts at the first parallel operation, which the warm process never runs.

The socket is in a fresh 0700 directory, so only this user can ask the warm
process to run a command; it serves one deletion and exits when
:func:`start`'s caller stops it or dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys

ENV = "EXANTE_WARM"
SERVE = "_warm"  # argv[1] of the warm process: ``exante _warm LISTENER_FD ALIVE_FD LOG``
PRELOAD = (  # in the order the stages of a deletion need them
    "numpy",
    "pyarrow",
    "pyarrow.parquet",
    "great_expectations",
    "exante.cli",
    "lineage.stages",
    "lineage.validation",
    "torch",
    "transformers",
    "transformers.models.gpt2.modeling_gpt2",
    "training.stages",
    "training.sisa",
    "scipy.stats",
    "verify.stage",
    "verify.run",
    "verify.baselines",
)
# The commands that import some of them: they wait for the warm process while it
# imports. Any other command is forked only by a warm process free at once (it
# saves little, and would otherwise wait); else it runs by itself.
HEAVY = ("validate", "train", "attest", "report", "verify", "audit")
LIGHT_WAIT = 0.2  # seconds
HEAVY_WAIT = 120.0  # seconds: a warm process stuck this long in an import is not waited for
# Set for each stage by the shell or DVC; read by no module at import.
PER_COMMAND = ("SHLVL", "_", "PWD", "OLDPWD")
FORK_SAFE_THREADS = ("jemalloc_bg_thd",)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)  # fmt: skip
_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
REAP_EVERY = 5.0  # seconds: how often an idle warm process collects its ended handlers
MAX_FDS = 64  # descriptors one request may carry (a pool worker's queues and pipes)
_INT = struct.Struct("!i")


# ---------------------------------------------------------------- the command's side


def entry() -> None:
    """The ``exante`` console script: a stage forked by the warm process where one
    serves, else the command itself (:func:`exante.cli.entry`)."""
    if sys.argv[1:2] == [SERVE]:
        code = 70
        try:
            code = serve(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        except BaseException:  # kept in its log: commands run by themselves from now on
            import traceback

            with contextlib.suppress(OSError), open(sys.argv[4], "a", encoding="utf-8") as note:
                note.write(f"stopped by an error:\n{traceback.format_exc()}")
        finally:
            flush_streams()
            os._exit(code)  # without tearing the preloaded modules down (seconds)
    code = forward(sys.argv)
    if code is None:
        from exante.cli import entry as run

        run()
    sys.exit(code)


class NotServed(OSError):
    """No warm process can run this exactly as this process would (the caller runs it)."""


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` as a child of the warm process and return its exit status; None
    where no warm process can run it exactly as this process would."""
    path = os.environ.get(ENV, "")
    if not path.startswith("/"):
        return None
    wait = HEAVY_WAIT if argv[1:2] and argv[1] in HEAVY else LIGHT_WAIT
    try:
        conn, pid = launch(path, "command", argv, [], wait=wait)
    except OSError:  # NotServed, or no warm process
        return None
    # A terminal's interrupt and quit reach a whole process group: the stage's (its pool's
    # workers are in it); any other signal was sent to this process: to the stage only.
    for sig in FORWARDED:
        if signal.getsignal(sig) != signal.SIG_IGN:  # ignored here: ignored by the stage too
            group = sig in (signal.SIGINT, signal.SIGQUIT)
            signal.signal(sig, lambda s, _f, pid=pid, g=group: _kill(pid, s, group=g))
    try:
        code = recv_int(conn)
    except OSError:
        code = None
    if code is None:  # its handler died: the stage dies with it (a parent-death signal)
        _kill(pid, signal.SIGKILL, group=True)
        print(f"exante: the warm process's child {pid} ended without a status", file=sys.stderr)
        return 70
    if code < 0:  # killed by a signal: die of the same one, as the stage did
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def launch(path: str, kind: str, argv: list[str], extra: list[int], *, wait: float | None):
    """Have the warm process at ``path`` fork a ``kind`` (``command``: ``argv``; ``process``:
    a pool worker) with this process's standard streams, directory and environment and
    the ``extra`` descriptors; return the connection (its exit status arrives on it) and
    its pid. Raises :class:`NotServed` (nothing started) where the warm process differs
    from this one, or does not answer within ``wait`` seconds; OSError where none is there."""
    conn = connect(path, wait=wait)
    try:
        return conn, request(conn, kind, argv, extra)
    except BaseException:
        conn.close()
        raise


def connect(path: str, *, wait: float | None, ours: dict | None = None) -> socket.socket:
    """A connection to the warm process at ``path`` once it has shown it runs what this
    process would (:class:`NotServed` else, or where it does not answer within ``wait``):
    its fingerprint must be ``ours`` (this process's, by default)."""
    conn = _above_stdio(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        conn.connect(path)
        conn.settimeout(wait)
        theirs = _recv_message(conn)  # the warm process answers between two imports
        conn.settimeout(None)
        ours = json.loads(json.dumps(_fingerprint(os.environ))) if ours is None else ours
        if theirs is None or json.loads(theirs) != ours:
            raise NotServed(f"the warm process at {path} differs from this process")
    except BaseException:
        conn.close()
        raise
    return conn


def request(conn: socket.socket, kind: str, argv: list[str], extra: list[int]) -> int:
    """Ask the warm process on ``conn`` (from :func:`connect`) to fork; its pid."""
    fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
    ignored = [int(s) for s in _CATCHABLE if signal.getsignal(s) == signal.SIG_IGN]
    body = json.dumps({"kind": kind, "argv": argv, "cwd": os.getcwd(), "umask": _umask(),
                       "env": dict(os.environ), "fds": fds, "ignored": ignored,
                       "group": os.getpgrp()}).encode()  # fmt: skip
    socket.send_fds(conn, [_INT.pack(len(body))], fds + extra)
    conn.sendall(body)
    pid = recv_int(conn)
    if pid is None:
        raise NotServed("the warm process started nothing")
    return pid


def still_as_forked() -> bool:
    """Whether this is a command forked by the warm process that may have its pools'
    workers forked by it too: no variable it was forked with has changed or gone, and
    its module path still begins as it did. Variables that its own imports added
    (MLflow's jemalloc setting, optimum-quanto's inductor cache) and path entries they
    appended are a worker's too: it gets this process's environment, and
    ``multiprocessing`` gives it this module path before it unpickles anything, as it
    does a spawned one."""
    if _FORKED_AS is None:
        return False
    env, path = _FORKED_ENV, _FORKED_PATH
    return all(os.environ.get(k) == v for k, v in env.items()) and sys.path[: len(path)] == path


def forked_fingerprint() -> dict:
    """The fingerprint this command was forked with (see :func:`still_as_forked`)."""
    return json.loads(_FORKED_AS)


_FORKED_AS: str | None = None  # in a forked command: the fingerprint it was forked with
_FORKED_ENV: dict[str, str] = {}
_FORKED_PATH: list[str] = []
_IMPORTED_KEYS: frozenset[str] = frozenset()  # in a forked child: variables preloading set


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    """``sig`` to ``pid``, or to its process group (the process alone while it has none)."""
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _umask() -> int:
    """This process's umask, read without setting it (another thread may be creating files)."""
    with (
        contextlib.suppress(OSError, ValueError, StopIteration),
        open("/proc/self/status", encoding="ascii") as f,
    ):
        return int(next(x for x in f if x.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o077)  # kernels before 4.7: briefly the strictest mask, never a laxer one
    os.umask(mask)
    return mask


def _above_stdio(conn: socket.socket) -> socket.socket:
    """``conn`` on a descriptor above 2: where this process's stdin, stdout or stderr is
    closed, a new socket would take its number and be handed over as that stream."""
    if conn.fileno() > 2:
        return conn
    import fcntl

    high = fcntl.fcntl(conn.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
    conn.close()
    return socket.socket(fileno=high)


def _fingerprint(environ) -> dict:
    """What a fresh process's imports depend on: the interpreter, its flags, the module
    path and the environment (without the variables set per command)."""
    skip = (*PER_COMMAND, *_IMPORTED_KEYS)
    env = {k: v for k, v in environ.items() if k not in skip and not k.startswith("DVC_")}
    return {"executable": sys.executable, "flags": list(sys.flags), "path": sys.path, "env": env,
            "version": sys.version}  # fmt: skip


# ---------------------------------------------------------------- the warm process


def start(root, env: dict[str, str], log) -> tuple[object, dict[str, str]] | None:
    """Launch the warm process for commands run in ``root`` with ``env``; return a handle
    for :func:`stop` and the environment that points the commands at it, or None where
    the ``exante`` script is not found or ``$EXANTE_WARM`` is ``off``."""
    import shutil
    import subprocess
    import tempfile

    if env.get(ENV) == "off" or sys.platform != "linux":
        return None
    script = shutil.which("exante", path=env.get("PATH"))
    if script is None:
        return None
    log = os.path.abspath(log)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    where = tempfile.mkdtemp(prefix="exante-warm-")  # mode 0700: this user only
    path = os.path.join(where, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)  # fails where $TMPDIR makes the path too long: run without it
        listener.listen(64)  # commands queue from now on, while the warm process starts
    except OSError:
        listener.close()
        shutil.rmtree(where, ignore_errors=True)
        return None
    alive_r, alive_w = os.pipe()
    env = {**env, ENV: path}
    fds = [listener.fileno(), alive_r]
    try:
        # its own session: a stage gets a signal only through its command (forwarded)
        proc = subprocess.Popen([script, SERVE, *map(str, fds), str(log)], cwd=root, env=env,
                                pass_fds=fds, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    except OSError:
        os.close(alive_w)
        shutil.rmtree(where, ignore_errors=True)
        return None
    finally:
        os.close(alive_r)
        listener.close()
    return (proc, alive_w, where), env


def stop(handle) -> None:
    """End the warm process (closing its lifeline) and remove its socket."""
    import shutil

    proc, alive_w, where = handle
    os.close(alive_w)
    try:
        proc.wait(timeout=10)
    except Exception:
        proc.kill()
        proc.wait()
    shutil.rmtree(where, ignore_errors=True)


def serve(listener_fd: int, alive_fd: int, log: str) -> int:
    """The warm process: on the socket :func:`start` listens on, import :data:`PRELOAD`
    one module at a time while no command waits, and fork one handler per command,
    until ``alive_fd`` closes."""
    import importlib
    import time

    started = time.monotonic()
    before = dict(os.environ)
    fingerprint = json.dumps(_fingerprint(before)).encode()
    fresh = {s: signal.getsignal(s) for s in _CATCHABLE}  # before any module sets one
    listener = socket.socket(fileno=listener_fd)
    path = listener.getsockname()
    pending, served = list(PRELOAD), 0
    with open(log, "w", encoding="utf-8", buffering=1) as note:
        note.write(f"serving {path}\n")
        while True:
            wait = 0 if pending else REAP_EVERY
            ready, _, _ = select.select([listener, alive_fd], [], [], wait)
            _reap()
            if alive_fd in ready:  # the deletion is over (or died: its socket goes too)
                note.write(f"stopped after {served} connections, "
                           f"{len(PRELOAD) - len(pending)} modules preloaded\n")  # fmt: skip
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    os.rmdir(os.path.dirname(path))
                return 0
            if listener in ready:
                conn, _ = listener.accept()
                imported = {k: v for k, v in os.environ.items() if before.get(k) != v}
                flush_streams()
                if os.fork() == 0:
                    listener.close()
                    os.close(alive_fd)
                    code = 70
                    try:
                        code = _handle(conn, fingerprint, imported, fresh, note)
                    finally:
                        os._exit(code)
                conn.close()
                served += 1
                continue
            if not pending:  # woken only to collect ended handlers
                continue
            name = pending.pop(0)  # idle: import the next module
            try:
                importlib.import_module(name)
            except Exception as exc:  # an optional module missing: the stage imports it late
                note.write(f"not preloaded: {name}: {type(exc).__name__}: {exc}\n")
            unsafe = _unsafe_threads()
            if unsafe:
                note.write(f"stopped serving after importing {name}: threads that a fork "
                           f"would not survive: {unsafe}\n")  # fmt: skip
                listener.close()  # commands still queued run by themselves
                os.unlink(path)
                return 0
            if not pending:
                note.write(f"all {len(PRELOAD)} modules preloaded after "
                           f"{time.monotonic() - started:.1f} s\n")  # fmt: skip


def _reap() -> None:
    """Collect the handlers that have ended (this process never ignores SIGCHLD: an
    import that runs a child process must see its real status)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _unsafe_threads() -> list[str]:
    """Threads other than the main one that are not known to survive a fork."""
    import threading

    own = _comm("self")
    others = [t for t in os.listdir("/proc/self/task") if int(t) != os.getpid()]
    native = [n for n in (_comm(f"self/task/{t}") for t in others)
              if n not in ("", own, *FORK_SAFE_THREADS)]  # fmt: skip
    python = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    return native + python


def _comm(where: str) -> str:
    try:
        with open(f"/proc/{where}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:  # a thread that has just ended
        return ""


def _handle(conn: socket.socket, fingerprint: bytes, imported: dict[str, str],
            fresh: dict, note) -> int:  # fmt: skip
    """One command: send the fingerprint, receive the request and its streams, fork the
    stage, tell its pid, wait for it (killing it if the command goes away or this
    process fails), send its status."""
    try:
        conn.sendall(_INT.pack(len(fingerprint)) + fingerprint)
        data, fds, flags, _ = socket.recv_fds(conn, _INT.size, MAX_FDS)
    except OSError:
        data, fds, flags = b"", [], 0
    if flags & socket.MSG_CTRUNC:  # descriptors lost: the worker's would be misnumbered
        note.write(f"refused a request of more than {MAX_FDS} descriptors\n")
        return 0
    if len(data) != _INT.size:
        note.write("a command ran by itself: its interpreter or environment differs from "
                   "this process's, or it would not wait\n")  # fmt: skip
        return 0
    request = json.loads(_recv_exactly(conn, _INT.unpack(data)[0]))
    flush_streams()
    pid = os.fork()
    if pid == 0:
        conn.close()
        note.close()
        _become(request, fds, imported, fresh)  # never returns
    try:
        what = " ".join(request["argv"][1:]) if request["kind"] == "command" else "a pool worker"
        note.write(f"forked {pid}: {what}\n")
        for fd in fds:
            os.close(fd)
        conn.sendall(_INT.pack(pid))
        watched = [os.pidfd_open(pid), conn]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if watched[0] in ready:
                break
            if conn in ready and not conn.recv(1):  # the command is gone: so is its stage
                _kill(pid, signal.SIGKILL)
                watched.remove(conn)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        _kill(pid, signal.SIGKILL)  # never a stage left running that no command waits for
        raise
    code = os.waitstatus_to_exitcode(status)
    note.write(f"ended {pid}: " + (f"signal {-code}" if code < 0 else f"exit {code}") + "\n")
    with contextlib.suppress(OSError):
        conn.sendall(_INT.pack(code))
    return 0


def _become(request: dict, fds: list[int], imported: dict[str, str], fresh: dict) -> None:
    """In the forked child: take the caller's streams, directory, environment and signal
    dispositions, then run the command as ``exante`` would (or the pool worker as a
    spawned one), and exit as the interpreter does."""
    global _FORKED_AS, _FORKED_ENV, _FORKED_PATH, _IMPORTED_KEYS
    code = 1
    try:
        _die_with_parent()
        # its own process group (a pool worker: its stage's), which a terminal's interrupt
        # reaches through the command (:func:`forward`)
        with contextlib.suppress(OSError):  # a caller outside this session: left as it is
            os.setpgid(0, request["group"] if request["kind"] == "process" else 0)
        std, extra = fds[: len(request["fds"])], fds[len(request["fds"]) :]
        for target, fd in zip(request["fds"], std, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        for target in {0, 1, 2} - set(request["fds"]):
            os.close(target)
        ignored = set(request["ignored"])  # inherited by a fresh process from its parent
        for sig, how in fresh.items():  # as at the warm process's start (Python's own setup)
            if sig in ignored or how == signal.SIG_IGN:
                how = signal.SIG_IGN if sig in ignored else signal.SIG_DFL
            if how is not None:  # None: a handler not set from Python, left alone
                signal.signal(sig, how)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update({**request["env"], **imported})
        _IMPORTED_KEYS = frozenset(imported)
        _fresh_state(request["cwd"])
        _streams_as_started()
        if request["kind"] == "process":
            from exante._warm_pool import run_worker

            code = run_worker(extra)
            raise SystemExit(code)  # a spawned worker's exit: threads, atexit, then out
        _FORKED_AS = json.dumps(_fingerprint(os.environ))
        _FORKED_ENV, _FORKED_PATH = dict(os.environ), list(sys.path)
        from exante._warm_pool import context
        from training.executor import start_workers_with

        start_workers_with(context)
        sys.argv = list(request["argv"])
        from exante.cli import entry as run

        run(sys.argv[1:])  # exits through os._exit where it can
    except SystemExit as exc:
        code = _exit_code(exc.code)
        _finalize()
    except BaseException as exc:  # as the interpreter ends on an uncaught exception
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 1
        _finalize()
        if isinstance(exc, KeyboardInterrupt):  # dies of SIGINT, as Python does
            flush_streams()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flush_streams()
        os._exit(code)


def _finalize() -> None:
    """What the interpreter does at exit before tearing modules down: wait for the
    threads that are not daemons, then run the exit handlers."""
    import atexit
    import threading

    with contextlib.suppress(Exception):
        threading._shutdown()
    atexit._run_exitfuncs()


def _die_with_parent() -> None:
    """SIGKILL when the process that forked this one dies (Linux ``PR_SET_PDEATHSIG``): a
    stage never outlives the handler that reports its status to the command."""
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call
        os._exit(70)


def _fresh_state(cwd: str) -> None:
    """Per-process state a fresh interpreter would draw for itself, drawn again:
    ``multiprocessing``'s start directory and authentication key, numpy's global seed
    (``random`` reseeds itself after a fork). The hash seed cannot change: it is the
    warm process's, which nothing here depends on."""
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None:
        mp.ORIGINAL_DIR = cwd
        mp.current_process().authkey = os.urandom(32)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _streams_as_started() -> None:
    """Buffer the standard streams as Python does at start-up for these descriptors:
    stdout line-buffered on a terminal, stderr always, both written through when
    unbuffered (``$PYTHONUNBUFFERED``)."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))  # the same script: no -u
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        if stream is None or not _is_open(fd):
            continue
        line = not unbuffered and (fd == 2 or os.isatty(fd))
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(line_buffering=line, write_through=unbuffered)


def flush_streams() -> None:
    """Flush the standard streams (closed or None ones aside): before a fork, and
    before an exit that skips the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


# ---------------------------------------------------------------- the wire


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv_message(conn: socket.socket) -> bytes | None:
    head = _recv_exactly(conn, _INT.size)
    return None if head is None else _recv_exactly(conn, _INT.unpack(head)[0])


def recv_int(conn: socket.socket) -> int | None:
    data = _recv_exactly(conn, _INT.size)
    return None if data is None else _INT.unpack(data)[0]
