"""The acknowledgement of a queued erasure request: signed at once, stating its receipt deadline.

GDPR Art. 12(3) gives a controller one month from receipt to act on a request.
``exante delete --enqueue`` records the request in the ledger, appends an ``ack``
entry with the deadline, and hands the requester this file: an in-toto
Statement v1 in DSSE whose subject is the request's ledger line (by digest) and
whose predicate states when it was received and by when the receipt is due.
The ledger's signed head changes with every append; this file does not, so a
requester can keep it and check it offline with exante's public key.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from lineage._shape import is_sha256, is_utc, key_problems
from lineage.errors import EnvelopeFormatError
from lineage.ledger import Ack, Request
from lineage.signing import (
    Signer,
    make_statement,
    read_statement,
    sign_envelope,
    subjects_of,
    write_envelope,
)

PREDICATE_TYPE = "https://exante.dev/attestations/deletion-acknowledgement/v1"
SCHEMA_VERSION = 1
WHAT = "deletion acknowledgement"
RULE = "GDPR Art. 12(3): act on the request within one month of receipt"
_KEYS = ("schema_version", "request_id", "received_at", "acknowledged_at", "deadline", "rule",
         "record_ids", "subject_ids", "ledger_entry_sha256")  # fmt: skip


def deadline_for(received: datetime, *, months: int, days: int = 0) -> datetime:
    """``received`` plus calendar months (clamped to the month's last day), plus days.

    One month from 31 January is 28 (or 29) February, as the calendar reads it,
    not 30 days.
    """
    month0 = received.month - 1 + months
    year, month = received.year + month0 // 12, month0 % 12 + 1
    day = min(received.day, calendar.monthrange(year, month)[1])
    return received.replace(year=year, month=month, day=day) + timedelta(days=days)


@dataclass(frozen=True)
class Acknowledgement:
    """What an acknowledgement states; :func:`verify_acknowledgement` returns it."""

    request_id: str
    received_at: str
    acknowledged_at: str
    deadline: str
    rule: str
    ledger_entry_sha256: str


def issue_acknowledgement(path: Path, signer: Signer, *, request: Request, ack: Ack) -> None:
    """Sign the acknowledgement of ``request`` (its ledger line) with ``ack``'s deadline."""
    predicate = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request.request_id,
        "received_at": request.received_at,
        "acknowledged_at": ack.at,
        "deadline": ack.deadline,
        "rule": ack.rule,
        "record_ids": list(request.record_ids),
        "subject_ids": list(request.subject_ids),
        "ledger_entry_sha256": request.sha256,
    }
    subjects = {f"ledger-entry:{request.request_id}": request.sha256}
    envelope = sign_envelope(make_statement(subjects, PREDICATE_TYPE, predicate), signer)
    write_envelope(path, envelope)


def verify_acknowledgement(path: Path, trusted: Mapping) -> Acknowledgement:
    """Check the signature and shape; return what it states."""
    statement = read_statement(path, trusted, PREDICATE_TYPE, what=WHAT,
                               schema_version=SCHEMA_VERSION)  # fmt: skip
    p = statement["predicate"]
    keys = set(_KEYS) | ({"signed_at"} & set(p))
    problems = key_problems(p, keys, what=WHAT)
    times = ("received_at", "acknowledged_at", "deadline")
    if not problems and not all(is_utc(p[k]) for k in times):
        problems.append("received_at, acknowledged_at and deadline must be UTC times")
    if not problems and (
        not is_sha256(p["ledger_entry_sha256"])
        or subjects_of(statement) != {f"ledger-entry:{p['request_id']}": p["ledger_entry_sha256"]}
    ):
        problems.append("its subject must be the request's ledger entry, by sha256")
    if problems:
        raise EnvelopeFormatError(f"{WHAT} {path} is malformed:", problems=problems)
    fields = ("request_id", *times, "rule", "ledger_entry_sha256")
    return Acknowledgement(*(p[k] for k in fields))
