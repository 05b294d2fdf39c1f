"""exante: compliant-before-training ML.

Layers, one way only: ``lineage`` (sources, records, hashing, Merkle, signing,
gate) ← ``training`` ← ``verify``. This package is the thin command line that
composes them (``exante.cli``) and parses ``params.yaml`` at the edge
(``exante.params``); ``exante.deletion`` conducts ``exante delete`` over its
helper modules (``_requests``, ``_cost``, ``_dvc``, ``_purge``, ``_receipts``).
"""

__version__ = "0.1.0"
