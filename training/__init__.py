"""SISA-sharded training behind the gate (tokenizer, models, partition, slices, DP).

May import :mod:`lineage`; never imports mlflow (training emits events, the
CLI and :mod:`verify` log them).
"""
