"""The README's walk-through, run as it stands: a parquet file to a verified deletion.

The block after ``<!-- walkthrough -->`` in README.md is executed by bash in an
empty directory, with ``$REVIEWS`` naming a parquet file of 60 authors' reviews
(three each) and the default params: it must run to the end, every command
succeeding (``exante verify check`` included: exact deletion passes, the reference
passes, both power controls hold).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the default params: minutes of training and verification

WORDS = ["sturdy", "zipper", "faded", "cosy", "seams", "snug", "roomy", "scratchy", "bright",
         "wobbly", "sleek", "heavy", "thin", "warm", "loose", "stiff"]  # fmt: skip


def walkthrough() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)\n```", text, re.S)
    assert block, "README.md has no walk-through block"
    return block.group(1)


def reviews(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(11)
    rows = [
        {"review_id": f"r{i:03d}{j}", "author": f"author-{i:03d}",
         "body": f"author-{i:03d} says: {' '.join(rng.choice(WORDS) for _ in range(3))}; "
                 f"order {1000 + 7 * i + j} arrived."}
        for i in range(1, 61) for j in range(3)
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    data = tmp_path / "reviews.parquet"
    reviews(data)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "REVIEWS": str(data), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=work, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    project = work / "reviews"
    assert list((project / "data/receipts").glob("*.dsse.json"))
    assert "author-007 says" not in (project / "data/records/reviews.jsonl").read_text()
