"""exante: compliant-before-training ML.

Layers, one way only: ``lineage`` (sources, records, hashing, Merkle, signing,
gate) ← ``training`` ← ``verify``. This package is the thin command line that
composes them (``exante.cli``) and parses ``params.yaml`` at the edge
(``exante.params``).
"""

__version__ = "0.1.0"
