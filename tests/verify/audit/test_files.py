"""The bundle container: reproducible bytes, and reading that refuses what we never write."""

from __future__ import annotations

import io
import tarfile

import pytest

from verify.audit._files import PREFIX, BundleInputError, read_tar_gz, write_tar_gz
from verify.audit.bundle import content_leaks
from verify.audit.checks import verify_bundle


def test_the_same_files_give_the_same_bytes_in_any_insertion_order(tmp_path):
    files = {"b.json": b"{}", "a/x.txt": b"x" * 1000, "a/y.txt": b""}
    one = write_tar_gz(tmp_path / "1", files)
    two = write_tar_gz(tmp_path / "2", dict(reversed(files.items())))
    assert one == two
    path = tmp_path / "b.tar.gz"
    path.write_bytes(one)
    assert read_tar_gz(path) == files


def _tar(tmp_path, add) -> object:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        add(tar)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(raw.getvalue())
    return path


def _file(tar, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar) -> None:
    info = tarfile.TarInfo(f"{PREFIX}/link")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


@pytest.mark.parametrize(
    "add, why",
    [
        (lambda t: _file(t, f"{PREFIX}/../../evil"), "not a plain file"),
        (lambda t: _file(t, "/abs/path"), "not a plain file"),
        (lambda t: _file(t, "elsewhere/file"), "not a plain file"),
        (_link, "not a plain file"),
        (lambda t: (_file(t, f"{PREFIX}/a"), _file(t, f"{PREFIX}/a")), "appears twice"),
    ],
)
def test_reading_refuses_members_a_bundle_never_has(tmp_path, add, why):
    with pytest.raises(BundleInputError, match=why):
        read_tar_gz(_tar(tmp_path, add))


def test_a_secret_of_digits_must_stand_alone_to_count_as_a_leak():
    files = {"digest.txt": b"ab852315cd", "plain.txt": b"code is 852315.", "t.txt": b"Ann Lee"}
    assert content_leaks(files, [b"852315", b"Ann Lee"]) == [
        "plain.txt: b'852315'",
        "t.txt: b'Ann Lee'",
    ]


def test_a_public_key_that_cannot_be_read_is_bad_input(tmp_path):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(write_tar_gz(path, {"index.dsse.json": b"{}"}))
    with pytest.raises(BundleInputError, match="cannot read the public key"):
        verify_bundle(path, keys=[tmp_path / "missing.pub.pem"])
