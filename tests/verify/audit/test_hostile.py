"""A hostile bundle gets exit 1 or 3 with a message, never a traceback, a pass, or a fake line.

Each case of the adversarial review (issue 20) has its test here, on a small
bundle built in seconds (:mod:`tests.verify.audit._bundle`) or on crafted
container bytes. The command runs in-process, as ``exante audit verify``.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import resource
import tarfile
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from exante.cli import main
from lineage._canonical import canonical_json
from lineage._shape import key_problems
from lineage.signing import sign_envelope
from tests.verify.audit import _bundle
from tests.verify.audit._bundle import RID, envelope, resign, statement
from verify.audit._files import INDEX, MAX_MEMBERS, MAX_TOTAL, PREFIX, write_tar_gz


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> _bundle.Small:
    return _bundle.build(tmp_path_factory.mktemp("small"))


def verify(path: Path, capsys, *keys: Path) -> tuple[int, str, str]:
    args = ["audit", "verify", str(path)] + [a for k in keys for a in ("--key", str(k))]
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 1, 3), err
    return code, out, err


def failed(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("  FAIL")]


def raw_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar with exactly these member names (no checks)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def good_raw(small) -> tuple[bytes, bytes]:
    """The clean bundle's gzip bytes and its tar inside."""
    data = resign(small.files, small.signer, Path(_tmp(small)) / "clean.tar.gz").read_bytes()
    return data, gzip.decompress(data)


def _tmp(small) -> Path:
    return small.pub.parent.parent.parent


def test_the_small_bundle_passes_every_check(small, tmp_path, capsys):
    code, out, _ = verify(resign(small.files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 0 and "8 of 8 checks passed" in out


# -- 1. crashes: names that collide, deep JSON, predicates of the wrong type --------------


@pytest.mark.parametrize(
    "names, why",
    [
        ([f"{PREFIX}/a", f"{PREFIX}/a/b"], "which is a file"),
        ([f"{PREFIX}/a/b", f"{PREFIX}/a"], "which is a file"),
        ([f"{PREFIX}/" + "n" * 300], "safe name"),
        ([f"{PREFIX}/d/" + "n" * 200 + "/" + "m" * 900], "safe name"),
        ([f"{PREFIX}/./a", f"{PREFIX}/a"], "safe name"),
    ],
    ids=["file-under-file", "file-then-parent", "long-component", "long-path", "dot"],
)
def test_member_names_that_cannot_coexist_are_bad_input(tmp_path, capsys, names, why):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(gz(raw_tar({n: b"{}" for n in names})))
    code, _, err = verify(path, capsys)
    assert code == 3 and str(path) in err and why in err


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_in_an_envelope_fails_its_check(small, tmp_path, capsys):
    files = dict(small.files) | {"data/gate/decision.dsse.json": DEEP}
    code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and "signatures:" in failed(out) and "nested too deeply" in out


def test_deeply_nested_json_in_a_signed_payload_fails_its_check(small, tmp_path, capsys):
    env = sign_envelope(DEEP, small.signer)
    files = dict(small.files) | {"data/gate/decision.dsse.json": json.dumps(env).encode()}
    code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and {"signatures:", "lineage:"} <= set(failed(out))


def test_a_deeply_nested_index_fails(small, tmp_path, capsys):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(write_tar_gz(path, dict(small.files) | {INDEX: DEEP}))
    code, out, _ = verify(path, capsys)
    assert code == 1 and "index:" in failed(out)


def _wrong(name: str, *keys: str, value=None):
    """Set ``predicate[k1][k2]...`` of signed file ``name`` to ``value`` (a list by default)."""

    def change(small, files):
        st = statement(files, name)
        target = st
        for key in ("predicate", *keys)[:-1]:
            target = target[key]
        target[("predicate", *keys)[-1]] = ["x"] if value is None else value
        env = sign_envelope(canonical_json(st), small.signer)
        files[name] = json.dumps(env).encode()

    return change


def _model_resources(small, files):
    sig = json.loads(files["models/ensemble.sig"])
    payload = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"] = "x"
    sig["dsseEnvelope"] = sign_envelope(canonical_json(payload), small.signer)
    files["models/ensemble.sig"] = json.dumps(sig).encode()


@pytest.mark.parametrize(
    "change, check",
    [
        (_wrong("data/manifests/v000001.dsse.json"), "manifest"),
        (_wrong("data/manifests/v000001.dsse.json", "merkle"), "manifest"),
        (_wrong("data/manifests/v000001.dsse.json", "merkle", "root", value=7), "manifest"),
        (_wrong("data/verification/report.dsse.json", "lineage"), "verification"),
        (_wrong("data/verification/report.dsse.json", "policy", value="p"), "verification"),
        (_wrong("data/verification/report.dsse.json", "policy", "path"), "verification"),
        (_wrong(_bundle.REPORT, "subjects", value=3), "deletions:"),
        (_wrong("data/gate/decision.dsse.json"), "lineage:"),
        (_wrong("models/attestation.dsse.json"), "model:"),
        (_model_resources, "model:"),
    ],
    ids=[
        "manifest",
        "merkle",
        "root",
        "lineage",
        "policy",
        "policy-path",
        "report-subjects",
        "decision",
        "attestation",
        "model-resources",
    ],
)
def test_a_signed_predicate_of_the_wrong_type_fails_its_check(small, tmp_path, capsys, change,
                                                              check):  # fmt: skip
    files = dict(small.files)
    change(small, files)
    code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and check in failed(out), out


def _unknown_key_type() -> bytes:
    """A PEM public key of an algorithm nobody knows (cryptography: UnsupportedAlgorithm)."""
    key = x25519.X25519PrivateKey.generate().public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = der.replace(bytes([0x2B, 0x65, 0x6E]), bytes([0x2B, 0x65, 0x63]))  # 1.3.101.99
    return b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"


def test_a_public_key_of_an_unknown_type_is_bad_input(small, tmp_path, capsys):
    files = dict(small.files) | {"policies/trusted_keys/k.pub.pem": _unknown_key_type()}
    path = resign(files, small.signer, tmp_path / "b.tar.gz")
    code, _, err = verify(path, capsys)
    assert code == 3 and "policies/trusted_keys/: no usable public keys" in err
    (tmp_path / "odd.pub.pem").write_bytes(_unknown_key_type())
    code, _, err = verify(path, capsys, tmp_path / "odd.pub.pem")
    assert code == 3 and "odd.pub.pem" in err and "exante-audit-" not in err


# -- 2. bytes outside the verified archive -------------------------------------------------


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def _forged_tar() -> bytes:
    return raw_tar({f"{PREFIX}/data/verification/results.json": b'{"forged": true}'})


CONTAINER = {
    "second gzip member": (lambda g, t: g + gz(_forged_tar()), "follow the gzip stream"),
    "a tar after the tar": (lambda g, t: gz(t + _forged_tar()), "does not end cleanly"),
    "junk appended": (lambda g, t: g + b"junk", "follow the gzip stream"),
    "zeros appended": (lambda g, t: g + bytes(512), "follow the gzip stream"),
    "cut tail": (lambda g, t: g[:-9], "cut short"),
    "cut tar": (lambda g, t: gz(t[: len(t) - 10240]), "not a readable audit bundle"),
    "no end blocks": (lambda g, t: gz(_pad(t.rstrip(b"\0"))), "does not end cleanly"),
    "bad crc": (lambda g, t: g[:-8] + bytes([g[-8] ^ 1]) + g[-7:], "corrupt gzip"),
    # the key is new each run, so the bytes differ: the flip may read as corrupt or as cut
    "corrupt deflate": (
        lambda g, t: g[:200] + bytes([g[200] ^ 0xFF]) + g[201:],
        "corrupt gzip|cut short|follow the gzip stream",
    ),
}


@pytest.mark.parametrize("case", CONTAINER)
def test_bytes_outside_the_one_archive_are_refused(small, tmp_path, capsys, case):
    change, why = CONTAINER[case]
    g, t = good_raw(small)
    path = tmp_path / "b.tar.gz"
    path.write_bytes(change(g, t))
    code, out, err = verify(path, capsys)
    assert code == 3 and re.search(why, err) and str(path) in err and "passed" not in out


def test_what_our_writer_emits_ends_as_the_reader_requires(small):
    _, t = good_raw(small)
    assert len(t) % 10240 == 0 and t.endswith(bytes(1024))


# -- 3. a decompression bomb ------------------------------------------------------------


def _bomb(path: Path, members: int, size: int) -> None:
    """A .tar.gz of ``members`` files of ``size`` zero bytes each, written a chunk at a time."""
    zero, comp = bytes(1 << 20), zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with path.open("wb") as out:
        for n in range(members):
            info = tarfile.TarInfo(f"{PREFIX}/z{n}")
            info.size = size
            out.write(comp.compress(info.tobuf(tarfile.GNU_FORMAT)))
            for _ in range(size >> 20):
                out.write(comp.compress(zero))
        out.write(comp.compress(bytes(10240)) + comp.flush())


def test_a_decompression_bomb_stops_at_the_cap(tmp_path, capsys):
    path = tmp_path / "bomb.tar.gz"
    _bomb(path, members=6, size=60 << 20)  # 360 MiB of zeros in under 4 MiB
    assert path.stat().st_size < 4 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = verify(path, capsys)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) << 10
    assert code == 3 and f"more than {MAX_TOTAL >> 20} MiB" in err
    assert grown < 2 * MAX_TOTAL  # stopped at the cap: no 360 MiB, no copies of it


def test_too_many_members_are_refused(tmp_path, capsys):
    path = tmp_path / "many.tar.gz"
    path.write_bytes(gz(raw_tar({f"{PREFIX}/f{n}": b"" for n in range(MAX_MEMBERS + 1)})))
    code, _, err = verify(path, capsys)
    assert code == 3 and f"more than {MAX_MEMBERS} members" in err


# -- 4. absent evidence fails; duplicate keys are refused -----------------------------------


def _drop(*names: str):
    def change(small, files):
        for name in [n for n in files if n.startswith(names)]:
            del files[name]

    return change


def _garbage_leaves(small, files):
    files["data/manifest.leaves"] = b"\x00garbage\n"


@pytest.mark.parametrize(
    "change, check, why",
    [
        (_drop("data/manifests/v000002."), "deletions:", "names manifest v2, which is not"),
        (_drop("data/manifests/"), "manifest", "no manifest versions"),
        (_drop("data/manifests/v000001.leaves"), "manifest", "v000001.leaves: missing"),
        (_drop("data/manifest.leaves"), "manifest", "data/manifest.leaves: missing"),
        (_garbage_leaves, "manifest", "not the leaves file the current manifest signed"),
        (_drop("data/ledger"), "deletions:", "a request the ledger does not hold"),
    ],
    ids=[
        "receipt-version-absent",
        "no-history",
        "no-old-leaves",
        "no-leaves",
        "garbage-leaves",
        "receipt-without-ledger",
    ],
)
def test_absent_evidence_fails_the_check(small, tmp_path, capsys, change, check, why):
    files = dict(small.files)
    change(small, files)
    code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and check in failed(out) and why in out, out


def test_duplicate_keys_in_a_signed_payload_or_envelope_are_refused(small, tmp_path, capsys):
    name = "data/gate/decision.dsse.json"
    payload = canonical_json(statement(small.files, name))
    twice = payload.replace(b'"manifest_version":2', b'"manifest_version":2,"manifest_version":1')
    assert twice != payload
    files = dict(small.files) | {name: json.dumps(sign_envelope(twice, small.signer)).encode()}
    code, out, _ = verify(resign(files, small.signer, tmp_path / "a.tar.gz"), capsys)
    assert code == 1 and "duplicate key" in out and "lineage:" in failed(out)
    env = small.files[name].replace(b'"payloadType"', b'"payload": "e30=",\n  "payloadType"', 1)
    files = dict(small.files) | {name: env}
    code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and "duplicate key" in out


# -- 5. nothing from the bundle reaches the terminal raw --------------------------------------

FAKE = "\x1b[2J\x1b[H\n  PASS  everything\n8 of 8 checks passed\n"


def test_a_member_name_with_control_characters_is_refused_and_escaped(tmp_path, capsys):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(gz(raw_tar({f"{PREFIX}/x{FAKE}": b"{}"})))
    code, out, err = verify(path, capsys)
    assert code == 3 and "\x1b" not in err + out and "\n  PASS" not in err
    assert ": not a plain file" in err


def test_names_in_check_problems_are_escaped(small, tmp_path, capsys):
    files = dict(small.files) | {"x": b"{}"}
    path = resign(files, small.signer, tmp_path / "b.tar.gz")
    index = json.loads(read_member(path, INDEX))
    st = json.loads(base64.b64decode(index["payload"]))
    st["subject"].append({"name": FAKE, "digest": {"sha256": "0" * 64}})
    files[INDEX] = json.dumps(sign_envelope(canonical_json(st), small.signer)).encode()
    path.write_bytes(write_tar_gz(path, files))
    code, out, _ = verify(path, capsys)
    assert code == 1 and "\x1b" not in out and "\n  PASS  everything" not in out
    assert out.count("checks passed") == 1 and "7 of 8 checks passed" in out


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(f"{PREFIX}/{name}").read()


# -- 6. which key signed, and whether anything pins it ----------------------------------------


def test_without_key_the_signer_is_named_and_said_to_be_unpinned(small, tmp_path, capsys):
    path = resign(small.files, small.signer, tmp_path / "b.tar.gz")
    code, out, _ = verify(path, capsys)
    assert code == 0 and f"index signed by: {small.signer.keyid}" in out and "NOT PINNED" in out
    code, out, _ = verify(path, capsys, small.pub)
    assert code == 0 and f"index signed by: {small.signer.keyid}" in out
    assert "NOT PINNED" not in out


# -- 7. messages ------------------------------------------------------------------------------


def test_a_bundle_without_an_index_is_bad_input_naming_it(small, tmp_path, capsys):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(write_tar_gz(path, {n: d for n, d in small.files.items() if n != INDEX}))
    code, _, err = verify(path, capsys)
    assert code == 3 and INDEX in err and "KeyError" not in err


def test_a_failed_check_carries_no_success_note(small, tmp_path, capsys):
    path = resign(small.files, small.signer, tmp_path / "b.tar.gz")
    files = dict(small.files) | {INDEX: read_member(path, INDEX), "policies/verification.yaml": b""}
    path.write_bytes(write_tar_gz(path, files))  # not re-signed: the index check fails
    code, out, _ = verify(path, capsys)
    line = next(x for x in out.splitlines() if x.startswith("  FAIL  index"))
    assert code == 1 and "matched" not in line and "policies/verification.yaml: modified" in out


def test_a_removed_middle_ledger_entry_is_reported_as_removed(small, tmp_path, capsys):
    files = dict(small.files)
    lines = files["data/ledger.jsonl"].splitlines()
    del lines[2]
    renumbered = [canonical_json(json.loads(x) | {"seq": n}) for n, x in enumerate(lines)]
    for kept in (lines, renumbered):  # a gap in seq; or renumbered, the chain broken there
        files["data/ledger.jsonl"] = b"".join(x + b"\n" for x in kept)
        code, out, _ = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
        assert code == 1 and "MissingLedgerEntryError" in out and "cut off" not in out
        assert "exante-audit-" not in out  # the private extraction's path is not shown


SECRET = "Ann Lee was born in Leeds and her code is 852315"


def test_an_error_never_echoes_a_signed_value(small, tmp_path, capsys):
    name = f"data/receipts/{RID}.dsse.json"
    st = statement(small.files, name)
    st["predicate"]["removed"][0]["non_inclusion"]["tree_size"] = SECRET
    st["predicate"]["schema_version"] = SECRET
    st["predicate"][SECRET] = 1
    signed = sign_envelope(canonical_json(st), small.signer)
    files = dict(small.files) | {name: json.dumps(signed).encode()}
    code, out, err = verify(resign(files, small.signer, tmp_path / "b.tar.gz"), capsys)
    assert code == 1 and "deletions:" in failed(out) and "Ann Lee" not in out + err
    assert "unknown field <text of 48 characters>" in out


def test_shape_messages_cap_and_escape_unknown_fields():
    (problem,) = key_problems({SECRET + "\x1b": 1}, [], what="x")
    assert "Ann" not in problem and "\x1b" not in problem
    assert key_problems({"rec/p01-x": 1}, [], what="x") == ["x has unknown field 'rec/p01-x'"]


def test_envelope_helper_round_trips(small):
    env = envelope(small.signer, {}, "t", {"a": 1})
    predicate = json.loads(base64.b64decode(json.loads(env)["payload"]))["predicate"]
    assert predicate == {"a": 1, "signed_at": predicate["signed_at"]}
