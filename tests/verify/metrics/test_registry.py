"""The metric registry: every metric under its config name, each name claimed once."""

from __future__ import annotations

import pytest

from lineage.errors import BadInputError
from verify.metrics import METRICS, DuplicateMetricError, MetricInputError, register
from verify.metrics.verbatim import rouge_l

EXPECTED = {
    "auc", "exposure", "forget_quality", "knowmem_rank", "knowmem_rouge_l", "mia_loss",
    "mia_min_k", "mia_min_k_pp", "mia_zlib", "perplexity", "privleak", "verbmem_rouge_l",
}  # fmt: skip


def test_every_metric_registers_under_its_name():
    assert set(METRICS) == EXPECTED
    assert METRICS["verbmem_rouge_l"] is rouge_l


def test_a_taken_name_is_refused_and_the_holder_kept():
    with pytest.raises(DuplicateMetricError, match=r"'verbmem_rouge_l'.*verbatim\.rouge_l"):
        register("verbmem_rouge_l")(lambda a, b: 0.0)
    assert METRICS["verbmem_rouge_l"] is rouge_l


def test_registry_errors_are_bad_input():
    assert issubclass(DuplicateMetricError, MetricInputError)
    assert issubclass(MetricInputError, BadInputError)
    assert DuplicateMetricError.exit_code == 3


def test_register_returns_the_function_unchanged():
    def probe_metric() -> float:
        return 1.0

    try:
        assert register("test_probe_metric")(probe_metric) is probe_metric
        assert METRICS["test_probe_metric"] is probe_metric
    finally:
        METRICS.pop("test_probe_metric", None)
