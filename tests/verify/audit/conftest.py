"""The small bundle (``_bundle.py``) carries no compliance exports.

Exports are rendered from the pipeline's full predicates (registry terms in the
manifest, gate counts, the attestation's params, the verification report),
which the small bundle leaves out on purpose. Its tests therefore run the
verifier without the exports check; that check has its own tests in
``tests/verify/export`` and runs on the real pipeline's bundle in
``tests/test_audit.py``.
"""

from __future__ import annotations

import pytest

from verify.audit import checks
from verify.export import check_exports

SMALL_BUNDLE_CHECKS = [(name, fn) for name, fn in checks.CHECKS if fn is not check_exports]


@pytest.fixture(autouse=True)
def _without_the_exports_check(monkeypatch):
    assert len(SMALL_BUNDLE_CHECKS) == len(checks.CHECKS) - 1  # the exports check is registered
    monkeypatch.setattr(checks, "CHECKS", SMALL_BUNDLE_CHECKS)
