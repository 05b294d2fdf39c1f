"""The DP secret: DP-SGD noise is keyed by it, so only its holder can replay a shard.

A shard trained with DP-SGD is replayed bit for bit from the same secret (exact
deletion still holds), differs under another secret, and a missing secret is a
bad input that says to run ``exante keys init``. The attestation commits to the
secret without carrying it, and nothing that is published holds it.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

from lineage.records import Record
from lineage.signing import generate_key, load_signer, read_envelope
from tests._cli import exante
from training.attest import AttestInputError, attest_training
from training.config import DPConfig, ModelConfig, Schedule, TrainConfig
from training.dp_secret import (
    COMMITMENT_PREFIX,
    DEFAULT_SECRET_PATH,
    SECRET_ENV,
    DPSecret,
    DPSecretError,
    create_dp_secret,
    dp_secret_path,
    load_dp_secret,
)
from training.sisa import (
    config_digest,
    dp_noise_entry,
    dp_secret_for,
    final_checkpoint,
    train_shard,
)

pytestmark = pytest.mark.usefixtures("one_thread")

A, B = DPSecret(bytes(range(32))), DPSecret(bytes(range(100, 132)))
PRIVATE = TrainConfig(
    shards=1,
    slices=2,
    model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64),
    shard=Schedule(lr=3e-3, batch_size=8, max_epochs=1, target_loss=0.0),
    dp=DPConfig(enabled=True, target_epsilon=4.0),
)


def placed(n: int) -> list[tuple[int, Record]]:
    records = [
        Record.make(f"crm/p{i:03d}-{fact}", "crm", [f"p{i:03d}"], f"Person {i} {fact} is {i * 7}.")
        for i in range(n)
        for fact in ("city", "code")
    ]
    return [(i % 2, r) for i, r in enumerate(records)]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return st.load_file(final_checkpoint(directory) / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the secret itself ------------------------------------------------------------------


def test_keys_init_creates_the_secret_once_mode_0600(tmp_path: Path) -> None:
    first = exante(tmp_path, "keys", "init", "--dev")
    assert first.code == 0, first.err
    path = tmp_path / DEFAULT_SECRET_PATH
    data = path.read_bytes()
    assert len(data) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "DP secret" in first.out and "back it up" in first.out
    again = exante(tmp_path, "keys", "init", "--dev", "--if-missing")
    assert again.code == 0, again.err
    assert path.read_bytes() == data  # never overwritten
    assert load_dp_secret(path).key == data


def test_a_missing_short_or_readable_secret_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "dp.secret"
    with pytest.raises(DPSecretError, match="exante keys init") as err:
        load_dp_secret(path)
    assert err.value.exit_code == 3
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)
    with pytest.raises(DPSecretError, match="31 bytes"):
        load_dp_secret(path)
    path.write_bytes(b"x" * 32)
    path.chmod(0o644)
    with pytest.raises(DPSecretError, match="chmod 600"):
        load_dp_secret(path)


def test_the_secret_path_can_be_moved_by_the_environment(tmp_path, monkeypatch) -> None:
    assert dp_secret_path(tmp_path) == tmp_path / ".exante/keys/dp.secret"
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "elsewhere.secret"))
    assert dp_secret_path(tmp_path) == tmp_path / "elsewhere.secret"
    assert create_dp_secret(tmp_path / "elsewhere.secret")
    assert not create_dp_secret(tmp_path / "elsewhere.secret")


def test_seeds_are_hmac_per_shard_slice_and_stream_and_the_commitment_is_a_known_answer() -> None:
    import hashlib
    import hmac

    expected = hmac.new(A.key, b"3/1/noise", hashlib.sha256).digest()[:8]
    assert A.seed(shard=3, slice_=1, stream="noise") == int.from_bytes(expected, "big")
    seeds = {
        A.seed(shard=s, slice_=r, stream=x)
        for s in range(3)
        for r in range(3)
        for x in ("noise", "sampling")
    }
    assert len(seeds) == 18
    assert A.commitment() == hashlib.sha256(COMMITMENT_PREFIX + A.key).hexdigest()
    assert A.commitment() != B.commitment()
    assert A.key.hex() not in repr(A)


# -- a private shard: replayed by the holder, by nobody else ---------------------------------


def test_exact_deletion_replays_a_private_shard_bit_for_bit(tmp_path: Path) -> None:
    data = placed(8)
    first = train_shard(0, data, PRIVATE, base=None, out_dir=tmp_path / "shard", dp_secret=A)
    assert first.dp_noise == {
        "generator": "torch-keyed-hmac-sha256",
        "replayable": True,
        "secret_commitment": A.commitment(),
    }
    kept = [(s, r) for s, r in data if r.record_id != data[-1][1].record_id]  # in slice 1
    again = train_shard(0, kept, PRIVATE, base=None, out_dir=tmp_path / "shard", dp_secret=A)
    assert again.trained == [1]  # slice 0 is clean and reused
    scratch = train_shard(0, kept, PRIVATE, base=None, out_dir=tmp_path / "scratch", dp_secret=A)
    assert same(weights(tmp_path / "shard"), weights(tmp_path / "scratch"))
    other = train_shard(0, kept, PRIVATE, base=None, out_dir=tmp_path / "other", dp_secret=B)
    assert other.slices != scratch.slices  # a checkpoint is never reused under another secret
    assert not same(weights(tmp_path / "other"), weights(tmp_path / "scratch"))


def test_a_private_shard_without_the_secret_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(DPSecretError, match="exante keys init") as err:
        train_shard(0, placed(4), PRIVATE, base=None, out_dir=tmp_path / "shard")
    assert err.value.exit_code == 3
    assert not (tmp_path / "shard").exists()
    with pytest.raises(DPSecretError, match="no DP secret at"):
        dp_secret_for(PRIVATE, tmp_path)
    assert dp_secret_for(PRIVATE.model_copy(update={"dp": DPConfig()}), tmp_path) is None


def test_checkpoint_addresses_of_non_private_runs_are_unchanged() -> None:
    """secure_mode and min_steps enter the config digest only when set, so old checkpoints keep
    their address: the digest is the one computed before either existed."""
    cfg = PRIVATE.model_copy(update={"dp": DPConfig()})
    legacy = cfg.dp.model_dump(exclude={"secure_mode"})
    from lineage._canonical import canonical_json, sha256_hex

    schedule = cfg.shard.model_dump(exclude={"min_steps"})
    keep = {"seed": cfg.seed, "model": cfg.model.model_dump(), "schedule": schedule}
    assert config_digest(cfg, cfg.shard) == sha256_hex(canonical_json(keep | {"dp": legacy}))
    on = cfg.model_copy(update={"dp": DPConfig(secure_mode=True)})
    assert config_digest(on, on.shard) != config_digest(cfg, cfg.shard)


# -- what is published: a commitment, never the secret ----------------------------------------


def test_the_attestation_carries_the_commitment_not_the_secret(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt/model.safetensors").write_bytes(b"weights")
    generate_key(tmp_path / "k.pem", tmp_path / "trusted", name="k")
    kwargs = {
        "root": root,
        "signer": load_signer(tmp_path / "k.pem"),
        "out": root / "training.dsse.json",
        "manifest_sha256": "a" * 64,
        "decision_sha256": "b" * 64,
        "partition_sha256": "c" * 64,
        "params": PRIVATE.model_dump(mode="json"),
        "dp": {"s00": {"epsilon": 3.9, "delta": 1e-5, "accountant": "rdp"}},
    }
    files = {"s00": root / "ckpt/model.safetensors"}
    predicate = attest_training(files, **kwargs, dp_noise={"s00": dp_noise_entry(PRIVATE, A)})
    assert predicate["dp_noise"]["s00"]["secret_commitment"] == A.commitment()
    envelope = (root / "training.dsse.json").read_bytes()
    payload = base64.b64decode(read_envelope(root / "training.dsse.json", what="t")["payload"])
    for blob in (envelope, payload):
        assert A.key not in blob and A.key.hex().encode() not in blob
        assert base64.b64encode(A.key) not in blob
    assert json.loads(payload)["predicate"]["dp_noise"] == predicate["dp_noise"]
    without = attest_training(files, **kwargs)  # DP off: no noise entry at all
    assert "dp_noise" not in without
    leaked = {"s00": {**dp_noise_entry(PRIVATE, A), "secret": A.key.hex()}}
    with pytest.raises(AttestInputError, match="dp_noise"):
        attest_training(files, **kwargs, dp_noise=leaked)


def test_the_audit_bundle_never_carries_the_secret(tmp_path: Path) -> None:
    from verify.audit._files import REQUIRED, project_files

    root = tmp_path / "proj"
    for pattern in REQUIRED:  # one stand-in file per required pattern
        path = root / pattern.replace("*", "x")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
    create_dp_secret(root / DEFAULT_SECRET_PATH)
    secret = load_dp_secret(root / DEFAULT_SECRET_PATH)
    metrics = root / "models/shards/s00/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"dp_noise": dp_noise_entry(PRIVATE, secret)}))
    files = project_files(root)
    assert "models/shards/s00/metrics.json" in files
    assert not any(name.startswith(".exante") or "secret" in name for name in files)
    for data in files.values():
        assert secret.key not in data and secret.key.hex().encode() not in data


def test_cli_train_of_a_private_shard_without_the_secret_exits_3(project) -> None:
    """Before any slice trains, with what to do; the published seed is no fallback."""
    import yaml

    train = {"shards": 2, "slices": 2, "dp": {"enabled": True, "target_epsilon": 4.0}}
    (project.root / "params.yaml").write_text(yaml.safe_dump({"train": train}))
    assert exante(project.root, "partition").code == 0
    (project.root / DEFAULT_SECRET_PATH).unlink()
    result = exante(project.root, "train", "shard", "--shard", "0")
    assert result.code == 3, result.err
    assert "DPSecretError" in result.err and "exante keys init --if-missing" in result.err
    assert not (project.root / "models/shards/s00").exists()
