"""Verification: metrics, recovery attacks, MLflow evidence and audit bundles.

May import :mod:`lineage` and :mod:`training`.
"""
