"""The records file written on its own thread: the same bytes, errors raised, nothing left."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

import lineage._writer as writer_module
from lineage._arrow_rows import ArrowLines
from lineage._runs import stage_sorted
from lineage._writer import BackgroundWriter
from tests.lineage.test_readers import keyed_lines


def _as_lines(pairs: list[tuple[str, bytes]]) -> ArrowLines:
    keys = pa.array([k for k, _ in pairs], pa.string())
    return ArrowLines(keys, pa.array([line + b"\n" for _, line in pairs], pa.binary()))


class _Full(io.BytesIO):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, buf) -> int:
        if self.tell() + len(memoryview(buf)) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(buf)


def test_writes_land_in_order_and_every_file_method_sees_them(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb+") as out, BackgroundWriter(out) as w:
        for i in range(50):
            w.write(f"{i:03d},".encode())
        assert w.tell() == 200  # waits for the queue first
        w.seek(0)
        w.truncate()
        w.write(pa.py_buffer(b"again "))  # an Arrow buffer, as the sorter writes
        w.write(b"and more")
        w.flush()
        assert os.pread(w.fileno(), 100, 0) == b"again and more"


def test_a_failed_write_is_raised_in_the_caller_and_later_writes_are_dropped() -> None:
    out = _Full(room=10)
    with pytest.raises(OSError, match="No space left"), BackgroundWriter(out) as w:
        w.write(b"12345")
        w.write(b"67890abc")  # fails in the thread
        w.write(b"never")
        w.flush()  # raises here, if no write did before
    assert out.getvalue() == b"12345"


def test_the_thread_s_error_is_raised_on_leaving_the_block() -> None:
    out = _Full(room=3)
    with pytest.raises(OSError, match="No space left"), BackgroundWriter(out) as w:
        w.write(b"12345")  # queued: the error comes from the thread, after the block
    assert out.getvalue() == b""


def test_writeback_is_started_as_the_file_grows(tmp_path: Path, monkeypatch) -> None:
    """With a small step, every step asks the kernel to write its range out; bytes unchanged."""
    if writer_module._SYNC_FILE_RANGE is None:
        pytest.skip("no sync_file_range on this platform: writeback is left to the kernel")
    calls = []
    real = writer_module._SYNC_FILE_RANGE

    def spy(fd: int, start: int, size: int, flags: int) -> int:
        calls.append((start, size))
        assert real(fd, start, size, flags) == 0
        return 0

    monkeypatch.setattr(writer_module, "_SYNC_FILE_RANGE", spy)
    monkeypatch.setattr(writer_module, "WRITEBACK", 1000)
    with open(tmp_path / "f", "wb") as out, BackgroundWriter(out) as w:
        for _ in range(10):
            w.write(b"x" * 400)
    assert (tmp_path / "f").read_bytes() == b"x" * 4000
    assert calls == [(0, 1200), (1200, 1200), (2400, 1200)]  # each range once, in order


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_a_write_failing_mid_ingest_leaves_no_file(tmp_path: Path, monkeypatch, order) -> None:
    """The staged records file and every spilled run are gone; the error is the disk's."""
    _, chunks = keyed_lines(3000, order, seed=11)
    written = []

    def failing(self, buf, size: int) -> None:
        if written:
            raise OSError(errno.EIO, "Input/output error")
        written.append(len(memoryview(buf)))
        self._out.write(buf)

    monkeypatch.setattr(BackgroundWriter, "_write", failing)
    fds = _open_files()
    with pytest.raises(OSError, match="Input/output error"):
        stage_sorted(tmp_path / "r.jsonl", map(_as_lines, chunks), run_bytes=20_000)
    assert list(tmp_path.iterdir()) == []  # the staged file
    assert _open_files() == fds  # the runs: anonymous files, gone once closed


def _open_files() -> set[str]:
    """What this process's descriptors point at, where Linux shows them."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return set()
    out = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):  # closed while listed (the listing's own descriptor)
            out.add(os.readlink(fd))
    return out


def test_queued_bytes_stay_within_the_budget(monkeypatch) -> None:
    """Many buffers, a slow disk: never more than the budget waits, unless one buffer alone."""
    monkeypatch.setattr(writer_module, "BUDGET", 1000)
    seen = []

    class Slow(io.BytesIO):
        def write(self, buf) -> int:
            seen.append(w._queued)  # includes the buffer being written
            time.sleep(0.001)
            return super().write(buf)

    out = Slow()
    with BackgroundWriter(out) as w:
        for size in [300] * 20 + [2500] + [300] * 5:
            w.write(b"x" * size)
    assert out.getvalue() == b"x" * (300 * 25 + 2500)
    assert max(seen) == 2500 and all(q <= 1000 for q in seen if q != 2500)
