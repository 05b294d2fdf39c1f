"""Your own corpus, end to end: ``exante init``, a source whose columns exante never saw.

Each format (parquet, CSV, a directory of text files, a ``datasets`` dataset saved
to disk) goes the whole way in a project made by ``exante init``: ``dvc repro`` to a
signed release and a verification whose table says which checks applied (no
probes, no canaries, no public text here: those are n/a by name; the held-out
split, chosen by a keyed hash, gives the non-members), a deletion that retrains
only the shard that held the person and leaves no copy of their text anywhere,
and an audit bundle that verifies offline. Real git, DVC, MLflow, signatures and
models; tiny sizes.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import contains, merge_into
from tests.test_pipeline import run

PEOPLE = [f"cust-{i:03d}" for i in range(1, 41)]
WORDS = ["kayak", "paddle", "teal", "harbour", "lantern", "copper", "kettle", "walnut", "saddle",
         "ember", "quill", "thistle", "marble", "orchid", "pewter", "juniper", "falcon", "cobalt",
         "meadow", "tartan"]  # fmt: skip
# tiny models that memorize their shard (so the planted-leak control can be caught)
TRAIN = {
    "shards": 3,
    "slices": 2,
    "workers": 2,
    "threads": 1,
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 64, "local_path": None},
    "base": {"max_epochs": 1},
    "shard": {"max_epochs": 80, "slice_epochs": 3, "slice_work": "epochs", "target_loss": 0.05,
              "lr": 0.003},
}  # fmt: skip
VERIFY = {
    "forget_shard": 1, "forget_people": 2, "holdout_people": 4, "retain_records": 8,
    "methods": ["ga"], "quantization": ["quantize_rtn_int4"], "relearn": {"ks": [0, 2]},
    "extraction": {"budget": 4}, "max_new_tokens": 16, "unlearn": {"steps": 10},
}  # fmt: skip


def tickets() -> list[dict]:
    """Three short support tickets per customer, words in an order no other ticket has."""
    rng = random.Random(5)
    out = []
    for i, person in enumerate(PEOPLE):
        for j in range(3):
            words = " ".join(rng.choice(WORDS) for _ in range(3))
            out.append({"ticket_ref": f"T{i:03d}{j}", "customer_code": person,
                        "message_body": f"{person}: {words}, order {i * 7 + j}.",
                        "channel": rng.choice(["mail", "phone"])})  # fmt: skip
    return out


def write_source(root: Path, fmt: str, rows: list[dict]) -> dict:
    """The raw data in ``fmt`` and its registry fields (location, format, mapping)."""
    import datasets
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    raw = root / "data/raw"
    raw.mkdir(parents=True, exist_ok=True)
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    fields = {"id": "ticket_ref", "text": "message_body", "subjects": "customer_code"}
    if fmt == "parquet":
        pq.write_table(pa.table(cols), raw / "tickets.parquet")
        return {"location": "data/raw/tickets.parquet", "format": "parquet", "fields": fields}
    if fmt == "csv":
        pacsv.write_csv(pa.table(cols), raw / "tickets.csv")
        return {"location": "data/raw/tickets.csv", "format": "csv", "fields": fields}
    if fmt == "hf":
        datasets.Dataset.from_dict(cols).save_to_disk(str(raw / "tickets"))
        return {"location": "data/raw/tickets", "format": "hf", "fields": fields}
    for r in rows:  # dir: one file per ticket, no subjects (records stand for themselves)
        (raw / "tickets" / r["customer_code"]).mkdir(parents=True, exist_ok=True)
        (raw / "tickets" / r["customer_code"] / f"{r['ticket_ref']}.txt").write_text(
            r["message_body"], encoding="utf-8"
        )
    return {"location": "data/raw/tickets", "format": "dir", "read": {"pattern": "**/*.txt"}}


def source(placed: dict) -> dict:
    # a directory of files names no data subject: records a rights holder may have taken
    # down one by one (validation refuses personal data whose records name nobody)
    personal = placed["format"] != "dir"
    return placed | {
        "description": "Support tickets of our own helpdesk.",
        "license": "LicenseRef-Acme-Support",
        "terms": {"summary": "First-party support data, used to train our assistant.",
                  "permits_ml_training": True},
        "consent_basis": "consent" if personal else "none",
        "contains_personal_data": personal,
        "tdm_opt_out": False,
        "acquired": {"date": "2026-06-01", "method": "helpdesk export"},
        "jurisdiction": "EU",
        "retention": "P5Y",
        "holdout": 0.2,  # a fifth of the customers: never trained, the non-members
    }  # fmt: skip


def build(parent: Path, fmt: str) -> Path:
    run(["exante", "init", "proj"], parent)
    root = parent / "proj"
    registry = yaml.safe_load((root / "data/sources.yaml").read_text())
    registry["sources"] = {"tickets": source(write_source(root, fmt, tickets()))}
    (root / "data/sources.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    policy = yaml.safe_load((root / "policies/default.yaml").read_text())
    policy["licenses"]["research"].append("LicenseRef-Acme-Support")  # our own license, allowed
    (root / "policies/default.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    merge_into(params, {"train": TRAIN, "verify": VERIFY})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["exante", "pipeline"], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run(["exante", "keys", "init", "--dev"], root)
    (root / "repro.log").write_text(run(["dvc", "repro"], root).stdout)
    run(["dvc", "push"], root)
    return root


# minutes each (training, eight verification baselines, a deletion): opt-in, `make test-all`
FORMATS = [pytest.param(f, marks=pytest.mark.slow) for f in ("parquet", "csv", "dir", "hf")]


@pytest.fixture(scope="module", params=FORMATS)
def own(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, build(tmp_path_factory.mktemp(f"own-{request.param}"), request.param)


def results(root: Path) -> dict:
    return json.loads((root / "data/verification/results.json").read_text())


def test_repro_signs_a_release_trained_on_no_held_out_customer(own):
    _, root = own
    assert (root / "models/ensemble.sig").is_file()
    assert run(["exante", "check"], root).returncode == 0
    held = [json.loads(x)["record"] for x in (root / "data/shards/holdout.jsonl").read_text()
            .splitlines()]  # fmt: skip
    assert held
    owners = {tuple(r["subject_ids"]) or (r["record_id"],) for r in held}
    trained = [
        json.loads(x)["record"]
        for s in range(3)
        for x in (root / f"data/shards/s{s:02d}.jsonl").read_text().splitlines()
    ]
    assert not [r for r in trained if (tuple(r["subject_ids"]) or (r["record_id"],)) in owners]
    # the mapping kept the unmapped column out
    assert "channel" not in (root / "data/records/tickets.jsonl").read_text()


def test_the_verification_says_which_checks_applied(own):
    _, root = own
    r = results(root)
    assert r["inputs"]["probes"] is False and r["inputs"]["holdout"] is True
    assert r["inputs"]["public"] is False
    na = {(v["check"], v["reason"]) for v in r["verdicts"] if v["outcome"] == "n/a"}
    assert ("knowmem_em", "no fact to probe in this forget set") in na
    assert ("ppl_public", "no public text held out from training (verify.public_play) in "
            "this forget set") in na  # fmt: skip
    judged = {v["check"] for v in r["verdicts"] if v["outcome"] in ("pass", "fail")}
    assert {"privleak", "record_leak", "verbmem_rouge_l"} & judged
    # no probes: relearning re-teaches one half's records and measures the other half's
    # continuations, judged like any check
    assert r["relearn_split"]["measures"].startswith("continuations")
    assert r["relearn_split"]["relearn"] and r["relearn_split"]["measured"]
    assert "relearn_em" not in {c for c, _ in na}
    relearned = r["results"]["exact"]["relearn"]["metrics"]["relearn_em"]
    assert relearned is not None
    s = r["summary"]
    assert s["exact"]["verdict"] == "pass", s["exact"]
    assert s["retrain"]["verdict"] == "pass", s["retrain"]
    assert r["power"]["planted"]["ok"] and r["power"]["heldout"]["ok"], r["power"]
    check = run(["exante", "verify", "check"], root, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    log = (root / "repro.log").read_text()
    assert "forget-set verbatim ROUGE-L per subject × attack" in log
    applied = next(x for x in log.splitlines() if "checks applied:" in x)
    assert "record_leak" in applied and "knowmem_em" not in applied
    na = next(x for x in log.splitlines() if "not applicable to this corpus:" in x)
    assert "knowmem_em (no fact to probe in this forget set)" in na
    assert "relearning and in-context measure: continuations" in log


def test_a_deletion_retrains_one_shard_and_leaves_no_copy_anywhere(own):
    _, root = own
    rows = [json.loads(x) for x in (root / "data/records/tickets.jsonl").read_text().splitlines()]
    placed = {
        json.loads(x)["record"]["record_id"]: s
        for s in range(3)
        for x in (root / f"data/shards/s{s:02d}.jsonl").read_text().splitlines()
    }
    victim = next(r for r in rows if r["record_id"] in placed)
    gone = [r for r in rows if (set(r["subject_ids"]) & set(victim["subject_ids"]))
            or r["record_id"] == victim["record_id"]]  # fmt: skip
    shard = placed[victim["record_id"]]
    before = weights(root)
    who = (["--subject", victim["subject_ids"][0]] if victim["subject_ids"]
           else ["--record", victim["record_id"]])  # fmt: skip
    out = run(["exante", "delete", *who, "--reason", "Art. 17 request 7"], root)
    after = weights(root)
    assert [s for s in range(3) if after[s] != before[s]] == [shard], out.stdout
    receipt = sorted((root / "data/receipts").glob("*.dsse.json"))[-1]
    assert run(["exante", "receipt", "verify", str(receipt)], root).returncode == 0
    needles = [r["text"].encode() for r in gone]
    assert [p for p in _files(root) if any(contains(_read(p), n) for n in needles)] == []
    # anything written outside the project since it was built (datasets caches, temp files)
    since = (root / "params.yaml").stat().st_mtime
    outside = [p for t in (Path(tempfile.gettempdir()), Path.home()) for p in _files(t, since)]
    assert [p for p in outside if any(contains(_read(p), n) for n in needles)] == []
    audit = run(["exante", "audit", "verify", "data/audit/bundle.tar.gz"], root, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def weights(root: Path) -> dict[int, bytes]:
    """Each released shard model's weights."""
    return {s: (root / f"models/ensemble/s{s:02d}/model.safetensors").read_bytes()
            for s in range(3)}  # fmt: skip


def _files(top: Path, since: float = 0.0):
    """Every regular file under ``top`` (modified since ``since``), outside .git and venvs."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in (".git", "node_modules", ".venv")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                fresh = p.stat().st_mtime >= since
            except OSError:
                continue
            if fresh and p.is_file() and not p.is_symlink():
                yield p


def _read(p: Path) -> bytes:
    try:
        data = p.read_bytes()
    except OSError:
        return b""
    return gzip.decompress(data) if p.name.endswith(".tar.gz") else data


@pytest.mark.slow  # about a minute: twelve shards trained and attested
def test_twelve_shards_train_and_attest(tmp_path):
    """S ≥ 10: the rendered pipeline names s00…s11 and every shard trains and is attested."""
    run(["exante", "init", "proj"], tmp_path)
    root = tmp_path / "proj"
    registry = yaml.safe_load((root / "data/sources.yaml").read_text())
    registry["sources"] = {"tickets": source(write_source(root, "parquet", tickets()))}
    (root / "data/sources.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    policy = yaml.safe_load((root / "policies/default.yaml").read_text())
    policy["licenses"]["research"].append("LicenseRef-Acme-Support")
    (root / "policies/default.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    tiny = TRAIN | {"shards": 12, "shard": TRAIN["shard"] | {"max_epochs": 1, "slice_epochs": 1}}
    merge_into(params, {"train": tiny, "verify": VERIFY | {"forget_shard": 11}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["exante", "pipeline"], root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run(["exante", "keys", "init", "--dev"], root)
    run(["dvc", "repro", "attest"], root)
    assert json.loads((root / "models/ensemble/ensemble.json").read_text())["shards"] == 12
    from training.stages import load_partition

    predicate, _, _ = load_partition(root)
    assert [k for k in predicate["counts"] if k.startswith("s")] == [f"s{s:02d}" for s in range(12)]
    assert predicate["counts"]["holdout"] > 0
    assert [p.name for p in sorted((root / "models/ensemble").glob("s*"))] == [
        f"s{s:02d}" for s in range(12)
    ]
    assert (root / "models/ensemble.sig").is_file()
