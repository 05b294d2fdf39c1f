"""Lineage: what a model may be trained on, and the signed proof of it.

Layers, bottom up (none imports an ML framework or mlflow):

* ``layout`` — where a project keeps every file exante reads or writes (one object);
* ``_canonical``, ``merkle``, ``signing`` — canonical bytes, RFC 6962 Merkle
  trees with (non-)inclusion proofs, ECDSA P-256 DSSE/in-toto envelopes;
* ``sources``, ``records``, ``ingest``, ``corpus``, ``validation`` — the source
  registry and its terms, records with digests (and any terms of their own),
  the embedded default corpus, the Great Expectations suite; behind ingest,
  ``_readers`` (the formats, pyarrow and ``datasets`` imported lazily),
  ``_mapping`` (a source's fields applied a batch at a time), ``_runs``
  (sorting more records than fit in memory) and, for columnar sources,
  ``_arrow_rows`` and ``_arrow_runs`` (the same in Arrow, pyarrow loaded lazily);
* ``manifest``, ``policy``, ``gate`` — the signed manifest, policies as data,
  the signed gate decision;
* ``admission`` — the check training runs before it reads a record;
* ``stages`` — the pipeline stages the CLI and ``dvc repro`` call;
* ``ledger``, ``receipt`` — the signed, hash-chained deletion ledger and the
  requester's signed receipt with Merkle non-inclusion proofs;
* ``errors`` — one root, ``BadInputError`` (exit 3) and ``VerificationError`` (exit 1).
"""

from lineage.admission import verify_training_input
from lineage.errors import BadInputError, LineageError, VerificationError

__all__ = ["BadInputError", "LineageError", "VerificationError", "verify_training_input"]
