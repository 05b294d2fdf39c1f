"""bench/bench_shard_throughput.py at test size: both loops train, and the ratio is printed.

The figure the issue asks for (a GPU, GPT-2 124M-sized, inductor) needs a GPU machine;
here the baseline compiles with ``aot_eager`` (no C++ code generation) on the CPU.
"""

from __future__ import annotations

import re

import pytest

from bench.bench_shard_throughput import main


@pytest.mark.usefixtures("one_thread")
def test_the_bench_trains_both_loops_and_prints_their_ratio(capsys) -> None:
    assert main(["--tiny", "--device", "cpu", "--backend", "aot_eager"]) == 0
    out = capsys.readouterr().out
    rates = [float(x.replace(",", "")) for x in re.findall(r"([\d,]+) tokens/s", out)]
    assert len(rates) == 2 and all(r > 0 for r in rates), out
    tokens = [int(x.replace(",", "")) for x in re.findall(r"\(([\d,]+) tokens,", out)]
    assert tokens[0] > tokens[1] > 0  # (b) leaves its warm-up step out
    ratio = float(re.search(r"ratio \(a\)/\(b\): ([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(rates[0] / rates[1], rel=0.01)
