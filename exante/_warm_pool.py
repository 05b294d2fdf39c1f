"""Worker processes forked by the warm process (:mod:`exante.warm`) for a forked stage's pools.

A stage's pool (:func:`training.executor.run_units`: the verification's
measuring parts, the baselines, several shards) spawns fresh interpreters,
each importing torch and the measuring code again (about 4 s each). Inside a
deletion's pipeline a forked stage asks the warm process for them instead,
as ``multiprocessing``'s forkserver start method does with its own server: the
warm process forks a worker that runs :func:`multiprocessing.spawn._main` on
the pickled process object, exactly what a spawned worker runs after its
start-up. The worker comes from the warm process, which never ran torch, not
from the stage, so it inherits no thread pool and no lock, as a spawned one.

Used only while the stage is still as it was forked (:func:`exante.warm.still_as_forked`);
else the pool spawns.
"""

from __future__ import annotations

import io
import os
import socket
from multiprocessing import context as mp_context
from multiprocessing import popen_fork, process, reduction, resource_tracker, spawn, util

from exante import warm

_INHERITED: list[int] = []  # in a worker: the descriptors its pickled objects refer to


class _DupFd:
    """A descriptor handed to the worker with the request (as forkserver's ``_DupFd``)."""

    def __init__(self, ind: int) -> None:
        self.ind = ind

    def detach(self) -> int:
        return _INHERITED[self.ind]


class _Popen(popen_fork.Popen):
    method = "warm"
    DupFd = _DupFd

    def __init__(self, process_obj, conn: socket.socket) -> None:
        self._fds: list[int] = []
        self._conn = conn
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj) -> None:
        prep = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        data_r, data_w = os.pipe()
        try:
            extra = [data_r, resource_tracker.getfd(), *self._fds]
            self.pid = warm.request(self._conn, "process", [], extra)
        except BaseException:
            self._conn.close()
            os.close(data_w)
            raise
        finally:
            os.close(data_r)
        self.sentinel = self._conn.fileno()
        parent_w = os.dup(data_w)  # the worker sees this process end by this pipe closing
        self.finalizer = util.Finalize(self, _close, (parent_w, self._conn))
        with open(data_w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                code = warm.recv_int(self._conn)
            except OSError:
                code = None
            self.returncode = 255 if code is None else code  # 255: the warm process died
        return self.returncode


def _close(fd: int, conn: socket.socket) -> None:
    os.close(fd)
    conn.close()


class _WarmProcess(process.BaseProcess):
    _start_method = "spawn"  # what the worker takes as its default, as a spawned one does

    @staticmethod
    def _Popen(process_obj):
        try:
            ours = warm.forked_fingerprint()
            conn = warm.connect(os.environ[warm.ENV], wait=warm.HEAVY_WAIT, ours=ours)
        except (KeyError, OSError):  # gone, or no longer the same: spawned as without it
            from multiprocessing.popen_spawn_posix import Popen

            return Popen(process_obj)
        return _Popen(process_obj, conn)


class WarmContext(mp_context.BaseContext):
    _name = "warm"
    Process = _WarmProcess


def context() -> WarmContext | None:
    """The context for a pool of this forked stage, or None (spawn) where the stage's
    interpreter or environment no longer matches the warm process's."""
    return WarmContext() if warm.still_as_forked() else None


def run_worker(fds: list[int]) -> int:
    """In a worker forked by the warm process: what a spawned worker runs after start-up."""
    data_r, tracker, *inherited = fds
    resource_tracker._resource_tracker._fd = tracker
    _INHERITED[:] = inherited
    return spawn._main(data_r, os.dup(data_r))
