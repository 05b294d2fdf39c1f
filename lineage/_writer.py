"""A records file written on its own thread, its pages sent to disk as it grows.

Ingest's main thread reads a columnar source while worker threads map its
batches; writing the mapped lines on the main thread held the next read back
by the time the kernel takes to copy them into the page cache. Here the
writes go to a thread of their own, a bounded number of buffers and bytes
queued (so memory stays bounded), and every ``WRITEBACK`` bytes the kernel is asked to
start writing the pages out (``sync_file_range``, Linux), so the ``fsync``
that publishes the file waits for the last few MiB instead of all of it.
Nothing about what is written or when it is durable changes: the caller still
fsyncs before it renames the file into place.
"""

from __future__ import annotations

import collections
import ctypes
import os
import threading

DEPTH = 4  # buffers queued at most (a mapped batch's lines each: a few MiB) ...
BUDGET = 64 << 20  # ... and bytes (a merge step's buffer may be more: one may always wait)
WRITEBACK = 16 << 20  # bytes written between two requests to start writeback
_START_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of dirty pages, do not wait


def _sync_file_range():
    """libc's ``sync_file_range`` where the platform has it, else None (writeback as usual)."""
    if os.uname().sysname != "Linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range  # the process's own libc
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


class BackgroundWriter:
    """``out`` (a binary file) written by a thread; use as a context manager.

    ``write`` queues a buffer (the caller must not change it afterwards) and
    returns, waiting first while ``DEPTH`` buffers or ``BUDGET`` bytes wait
    (one buffer may always wait, whatever its size); an error the thread meets
    is raised by the next call here. Every other file method the sorter uses
    (``flush``, ``tell``, ``seek``, ``truncate``, ``fileno``) first waits until
    every queued buffer is written. Leaving the ``with`` block waits for the
    queue, stops the thread and raises what it met, if anything, unless an
    exception is already leaving.
    """

    def __init__(self, out) -> None:
        self._out = out
        self._pending: collections.deque = collections.deque()  # (buffer, bytes), oldest first
        self._queued = 0  # bytes in _pending
        self._closing = False
        self._change = threading.Condition()  # guards the three above
        self._error: BaseException | None = None
        self._written = self._started = out.tell()
        self._thread = threading.Thread(target=self._run, name="exante-write", daemon=True)
        self._thread.start()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        with self._change:
            self._closing = True
            self._change.notify_all()
        self._thread.join()
        if kind is None:
            self._raise()

    def _run(self) -> None:
        while True:
            with self._change:
                self._change.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return
                buf, size = self._pending[0]  # stays queued, so _drained waits for it
            if self._error is None:
                try:
                    self._write(buf, size)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc
            with self._change:
                self._pending.popleft()
                self._queued -= size
                self._change.notify_all()

    def _write(self, buf, size: int) -> None:
        self._out.write(buf)
        self._written += size
        if _SYNC_FILE_RANGE is not None and self._written - self._started >= WRITEBACK:
            self._out.flush()
            _SYNC_FILE_RANGE(
                self._out.fileno(), self._started, self._written - self._started, _START_WRITE
            )  # a hint: an error here (none is expected) leaves the final fsync to do it all
            self._started = self._written

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _drained(self):
        with self._change:
            self._change.wait_for(lambda: not self._pending)
        self._raise()
        return self._out

    def write(self, buf) -> None:
        self._raise()
        size = memoryview(buf).nbytes
        with self._change:
            self._change.wait_for(
                lambda: (
                    not self._pending
                    or (len(self._pending) < DEPTH and self._queued + size <= BUDGET)
                )
            )
            self._pending.append((buf, size))
            self._queued += size
            self._change.notify_all()

    def flush(self) -> None:
        self._drained().flush()

    def fileno(self) -> int:
        return self._drained().fileno()

    def tell(self) -> int:
        return self._drained().tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._drained().seek(offset, whence)
        self._written = self._started = position
        return position

    def truncate(self, size: int | None = None) -> int:
        return self._drained().truncate(size)
