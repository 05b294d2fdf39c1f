"""Audit bundles: everything an auditor needs, signed, with no record content.

* :mod:`verify.audit.bundle` collects the project's signed artifacts, exports
  the MLflow evidence, writes a signed index and a deterministic ``.tar.gz``;
* :mod:`verify.audit.checks` verifies a bundle offline, with nothing but the
  bundle and the trusted public keys;
* :mod:`verify.audit.html` renders the self-contained report for a person.

Public names: :func:`build_bundle`, :func:`verify_bundle`, :class:`AuditError`.
"""

from verify.audit.bundle import AuditError, BundleInputError, BundleLeakError, build_bundle
from verify.audit.checks import verify_bundle

__all__ = ["AuditError", "BundleInputError", "BundleLeakError", "build_bundle", "verify_bundle"]
