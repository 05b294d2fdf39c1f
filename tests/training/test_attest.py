"""Training attestations and OpenSSF model signatures: round trips, tampering, keys, the CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lineage._canonical import file_sha256
from lineage.errors import (
    ArtifactDigestError,
    EnvelopeFormatError,
    KeyFileError,
    SignatureMismatchError,
    UntrustedKeyError,
)
from lineage.signing import (
    generate_key,
    load_signer,
    load_trusted_keys,
    make_statement,
    read_envelope,
    sign_envelope,
    write_envelope,
)
from training.attest import (
    LIBRARIES,
    PREDICATE_TYPE,
    AttestInputError,
    ModelSignatureError,
    attest_training,
    code_revision,
    library_versions,
    sign_model_dir,
    verify_model_dir,
    verify_training_attestation,
)

MANIFEST, DECISION, PARTITION = "a" * 64, "b" * 64, "c" * 64
PARAMS = {"lr": 0.001, "shards": 2, "slices": (0, 1)}
DP = {"0": {"epsilon": 3.5, "delta": 1e-5, "accountant": "rdp"}, "1": None}
SHARD0 = "checkpoints/shard0/slice1.pt"
SHARD1 = "checkpoints/shard1/slice1.pt"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ok.key.pem`` (public key in ``trusted/``) and ``stranger.key.pem`` (in ``elsewhere/``)."""
    d = tmp_path_factory.mktemp("keys")
    generate_key(d / "ok.key.pem", d / "trusted", name="ok")
    generate_key(d / "stranger.key.pem", d / "elsewhere", name="stranger")
    return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root holding two tiny checkpoint files."""
    for name in (SHARD0, SHARD1):
        path = tmp_path / "proj" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(f"weights in {name}".encode())
    return tmp_path / "proj"


def attest(root: Path, keys: Path, *, key: str = "ok", **overrides) -> dict:
    kwargs = {
        "root": root,
        "signer": load_signer(keys / f"{key}.key.pem"),
        "out": root / "training.dsse.json",
        "manifest_sha256": MANIFEST,
        "decision_sha256": DECISION,
        "partition_sha256": PARTITION,
        "params": PARAMS,
        "dp": DP,
    }
    files = {"shard0": root / SHARD0, "shard1": root / SHARD1}
    return attest_training(files, **{**kwargs, **overrides})


def verify(root: Path, keys: Path) -> dict:
    trusted = load_trusted_keys(keys / "trusted")
    return verify_training_attestation(root / "training.dsse.json", root=root, trusted=trusted)


def statement_of(path: Path) -> dict:
    return json.loads(base64.b64decode(read_envelope(path, what="test")["payload"]))


def test_attestation_round_trip_returns_the_signed_predicate(root, keys):
    predicate = attest(root, keys)
    assert verify(root, keys) == predicate
    statement = statement_of(root / "training.dsse.json")
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [
        {"name": SHARD0, "digest": {"sha256": file_sha256(root / SHARD0)}},
        {"name": SHARD1, "digest": {"sha256": file_sha256(root / SHARD1)}},
    ]


def test_predicate_binds_data_params_code_libraries_and_dp(root, keys):
    predicate = attest(root, keys)
    assert predicate["schema_version"] == 1
    assert predicate["manifest_payload_sha256"] == MANIFEST
    assert predicate["decision_payload_sha256"] == DECISION
    assert predicate["partition_payload_sha256"] == PARTITION
    assert predicate["params"] == {"lr": 0.001, "shards": 2, "slices": [0, 1]}  # JSON types
    assert predicate["code_revision"] == code_revision(root)
    assert predicate["library_versions"] == library_versions()
    assert predicate["dp"] == DP
    assert predicate["checkpoints"] == {"shard0": SHARD0, "shard1": SHARD1}
    assert predicate["created_at"].endswith("+00:00")


def test_a_modified_checkpoint_is_named(root, keys):
    attest(root, keys)
    (root / SHARD1).write_bytes(b"retrained behind the gate's back")
    with pytest.raises(ArtifactDigestError, match=re.escape(f"{SHARD1}: modified")) as err:
        verify(root, keys)
    assert SHARD0 not in str(err.value)


def test_a_deleted_checkpoint_is_named(root, keys):
    attest(root, keys)
    (root / SHARD0).unlink()
    with pytest.raises(ArtifactDigestError, match=re.escape(f"{SHARD0}: missing")):
        verify(root, keys)


def test_every_differing_checkpoint_is_reported_together(root, keys):
    attest(root, keys)
    (root / SHARD0).unlink()
    (root / SHARD1).write_bytes(b"x")
    with pytest.raises(ArtifactDigestError) as err:
        verify(root, keys)
    assert [p.split(" ")[:2] for p in err.value.problems] == [
        [f"{SHARD0}:", "missing"],
        [f"{SHARD1}:", "modified"],
    ]


def test_an_untrusted_signer_is_refused(root, keys):
    attest(root, keys, key="stranger")
    with pytest.raises(UntrustedKeyError):
        verify(root, keys)


def test_an_edited_predicate_breaks_the_signature(root, keys):
    attest(root, keys)
    path = root / "training.dsse.json"
    envelope = read_envelope(path, what="test")
    statement = statement_of(path)
    statement["predicate"]["dp"]["0"]["epsilon"] = 0.1
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    write_envelope(path, envelope)
    with pytest.raises(SignatureMismatchError):
        verify(root, keys)


def test_signed_subject_names_cannot_escape_the_root(root, keys):
    predicate = attest(root, keys)
    payload = make_statement({"../outside.pt": "0" * 64}, PREDICATE_TYPE, predicate)
    envelope = sign_envelope(payload, load_signer(keys / "ok.key.pem"))
    write_envelope(root / "training.dsse.json", envelope)
    with pytest.raises(EnvelopeFormatError, match="escape"):
        verify(root, keys)


def test_bad_inputs_are_all_reported_and_nothing_is_written(root, keys, tmp_path):
    stray = tmp_path / "stray.pt"
    stray.write_bytes(b"outside")
    with pytest.raises(AttestInputError) as err:
        attest_training(
            {"in": root / SHARD0, "out": stray, "gone": root / "nope.pt"},
            root=root,
            signer=load_signer(keys / "ok.key.pem"),
            out=root / "training.dsse.json",
            manifest_sha256="not-hex",
            decision_sha256=DECISION,
            partition_sha256=PARTITION,
            params=PARAMS,
            dp={"0": {"epsilon": float("inf"), "delta": 1e-5, "accountant": "rdp"}, "1": {}},
        )
    text = str(err.value)
    for expected in ("outside the project root", "nope.pt", "manifest_sha256", "epsilon", "'1'"):
        assert expected in text
    assert len(err.value.problems) == 5
    assert not (root / "training.dsse.json").exists()


def test_params_must_be_json(root, keys):
    with pytest.raises(AttestInputError, match="JSON"):
        attest(root, keys, params={"fn": object()})


# -- code revision and libraries --------------------------------------------------


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_code_revision_reads_head_and_dirtiness(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    assert code_revision(repo) == {"git_commit": None, "dirty": None}
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "v1")
    head = git(repo, "rev-parse", "HEAD").strip()
    assert code_revision(repo) == {"git_commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("ignored\n")
    assert code_revision(repo)["dirty"] is False
    (repo / "train.py").write_text("print('v2')\n")
    assert code_revision(repo) == {"git_commit": head, "dirty": True}


def test_library_versions_names_installed_libraries():
    versions = library_versions()
    assert versions["model-signing"] == "1.1.1"
    assert {"torch", "transformers", "cryptography"} <= set(versions)
    assert set(versions) <= set(LIBRARIES)


# -- OpenSSF model signing ---------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=259, n_positions=32)
    path = tmp_path_factory.mktemp("saved") / "model"
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture
def model(saved_model: Path, tmp_path: Path) -> Path:
    """A fresh copy of a tiny saved GPT-2 for each test to tamper with."""
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def cli_verify(model: Path, signature: Path, public_key: Path) -> subprocess.CompletedProcess:
    """``model_signing verify key``, the console script installed beside this Python."""
    script = Path(sys.executable).with_name("model_signing")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "model_signing"]
    args = ["verify", "key", str(model), "--signature", str(signature)]
    return subprocess.run(
        [*cli, *args, "--public_key", str(public_key)], capture_output=True, text=True
    )


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("inside", [False, True], ids=["sig-outside", "sig-inside"])
def test_model_signature_verifies_here_and_with_the_model_signing_cli(model, keys, inside):
    sig = model / "model.sig" if inside else model.parent / "model.sig"
    sign_model_dir(model, private_key=keys / "ok.key.pem", signature=sig)
    public = keys / "trusted" / "ok.pub.pem"
    verify_model_dir(model, public_key=public, signature=sig)
    result = cli_verify(model, sig, public)
    assert result.returncode == 0, result.stderr
    assert "Verification succeeded" in result.stdout


def test_one_changed_weight_byte_fails_here_and_in_the_cli(model, keys):
    sig = model.parent / "model.sig"
    public = keys / "trusted" / "ok.pub.pem"
    sign_model_dir(model, private_key=keys / "ok.key.pem", signature=sig)
    flip_one_byte(model / "model.safetensors")
    with pytest.raises(ModelSignatureError, match="do not use it") as err:
        verify_model_dir(model, public_key=public, signature=sig)
    assert err.value.problems == ("model.safetensors: modified",)
    result = cli_verify(model, sig, public)
    assert result.returncode == 1
    assert "Verification failed" in result.stderr


def test_an_added_file_fails(model, keys):
    sig = model.parent / "model.sig"
    sign_model_dir(model, private_key=keys / "ok.key.pem", signature=sig)
    (model / "adapter.safetensors").write_bytes(b"smuggled")
    with pytest.raises(ModelSignatureError, match=r"adapter\.safetensors"):
        verify_model_dir(model, public_key=keys / "trusted" / "ok.pub.pem", signature=sig)


def test_the_wrong_public_key_fails(model, keys):
    sig = model.parent / "model.sig"
    sign_model_dir(model, private_key=keys / "ok.key.pem", signature=sig)
    wrong = keys / "elsewhere" / "stranger.pub.pem"
    with pytest.raises(ModelSignatureError, match="signer's public key"):
        verify_model_dir(model, public_key=wrong, signature=sig)


def test_an_edited_signature_fails(model, keys):
    sig = model.parent / "model.sig"
    sign_model_dir(model, private_key=keys / "ok.key.pem", signature=sig)
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(ModelSignatureError, match="edited"):
        verify_model_dir(model, public_key=keys / "trusted" / "ok.pub.pem", signature=sig)


def test_missing_signature_and_bad_keys_say_what_is_wrong(model, keys, tmp_path):
    public = keys / "trusted" / "ok.pub.pem"
    with pytest.raises(ModelSignatureError, match="sign the model first"):
        verify_model_dir(model, public_key=public, signature=tmp_path / "none.sig")
    with pytest.raises(KeyFileError):
        verify_model_dir(model, public_key=tmp_path / "none.pem", signature=tmp_path / "x.sig")
    with pytest.raises(KeyFileError):
        sign_model_dir(model, private_key=tmp_path / "none.pem", signature=tmp_path / "x.sig")
    with pytest.raises(AttestInputError):
        sign_model_dir(
            tmp_path / "no-model", private_key=keys / "ok.key.pem", signature=tmp_path / "x.sig"
        )
