"""Compliance exports of the signed lineage: what regulators and supply-chain tools read.

* :mod:`verify.export._facts` computes every number from signed artifacts only
  (manifest and leaves, gate decision, training attestation, verification
  report), verifying each signature first;
* one renderer per format: :mod:`~verify.export.eu_summary` (the EU AI Act
  public summary of training content, JSON + Markdown),
  :mod:`~verify.export.cyclonedx` (CycloneDX 1.6 ML-BOM) and
  :mod:`~verify.export.spdx` (SPDX 3.0.1, AI and Dataset profiles);
* :mod:`verify.export._build` signs each export (DSSE, in-toto Statement) and
  writes it; the audit bundle carries them under ``exports/``;
* :mod:`verify.export.check` is the ``exante audit verify`` check: it computes
  the facts again from a bundle and renders again, so an edited number fails.

Public names: :func:`build_exports`, :func:`write_exports`, :data:`FORMATS`,
:func:`check_exports`.
"""

from verify.export._build import FORMATS, build_exports, write_exports
from verify.export.check import check_exports

__all__ = ["FORMATS", "build_exports", "check_exports", "write_exports"]
