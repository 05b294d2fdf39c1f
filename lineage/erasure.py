"""What the deletion ledger denies, applied where records are made.

The ledger (:mod:`lineage.ledger`) is the authority; :func:`denials` reads it.
``data/ledger.denied.json`` is the deny set alone (sorted record and subject
ids), rewritten by each deletion: the corpus stage depends on it in
``dvc.yaml``, so a new request re-generates the demo's files while a status
change does not. An ingest stage depends on its source's raw files only: a
deletion rewrites the raw files that hold a denied row (:mod:`lineage.scrub`;
the corpus for generated sources), so exactly the sources it touched ingest
again, and the deletion then checks that no record file holds a denied record.
Both stages refuse to run when the file disagrees with the ledger, and every
ingest leaves out what it denies, so a record named in the ledger never comes
back through a re-generated corpus, a re-ingest or a restored raw file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lineage._canonical import atomic_write, canonical_json
from lineage.errors import LedgerEntryError
from lineage.gate import Denials
from lineage.layout import LAYOUT
from lineage.ledger import LEDGER
from lineage.stages import ledger_denials

DENIED = LAYOUT.ledger_denied


def denied_bytes(d: Denials) -> bytes:
    ids = {"record_ids": sorted(d.records), "subject_ids": sorted(d.subjects)}
    return canonical_json(ids) + b"\n"


def denials(root: Path) -> Denials:
    """The ledger's deny set, once the ledger verifies and ``data/ledger.denied.json`` agrees."""
    from lineage.ledger import verify_ledger
    from lineage.signing import load_trusted_keys
    from lineage.stages import TRUSTED

    root = Path(root)
    if (root / LEDGER).exists():  # a tampered ledger stops the stage: it could let records back
        verify_ledger(root, load_trusted_keys(root / TRUSTED))
    d = ledger_denials(root / LEDGER)
    path = root / DENIED
    written = path.read_bytes() if path.exists() else denied_bytes(Denials())
    if written != denied_bytes(d):
        raise LedgerEntryError(
            f"{DENIED} does not list what {LEDGER} denies (it is written by `exante delete`); "
            "run `exante ledger verify` and `exante delete --resume`"
        )
    return d


def write_denied(root: Path) -> Denials:
    """Rewrite the deny-set file from the ledger (called under the ledger lock)."""
    d = ledger_denials(Path(root) / LEDGER)
    atomic_write(Path(root) / DENIED, denied_bytes(d))
    return d


def is_denied(d: Denials, record_id: str, subject_ids: Iterable[str]) -> bool:
    return record_id in d.records or not d.subjects.isdisjoint(subject_ids)
