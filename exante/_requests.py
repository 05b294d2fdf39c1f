"""Deletion requests: what a requester asks, read from a file, resolved to records.

Resolution checks every request before anything is written, and reports every
unknown record, subject or malformed id of every request together.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lineage._shape import shown
from lineage.errors import BadInputError
from lineage.ledger import Ledger
from lineage.records import Record
from lineage.stages import RECORDS

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")


class UnknownTargetError(BadInputError):
    """A request names a record or subject that is not in the records (or was deleted)."""


class RequestFileError(BadInputError):
    """A line of a ``--from-file`` requests file is not a request."""


@dataclass(frozen=True)
class RequestSpec:
    """What a requester asks: records and/or subjects, a reason (a reference, not prose)."""

    reason: str
    record_ids: tuple[str, ...] = ()
    subject_ids: tuple[str, ...] = ()
    request_id: str = field(default_factory=lambda: f"del-{uuid.uuid4().hex[:12]}")


def read_request_file(path: Path) -> list[RequestSpec]:
    """One JSON object a line: ``reason``, ``record_ids`` and/or ``subject_ids``, ``request_id``."""
    specs, problems = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestFileError(f"{path}: cannot read the requests file: {exc}") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                specs.append(_spec(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(f"line {n}: {exc}")
    if problems or not specs:
        raise RequestFileError(f"{path}: not a requests file:", problems=problems or ["no lines"])
    return specs


def _spec(d) -> RequestSpec:
    allowed = {"reason", "record_ids", "subject_ids", "request_id"}
    if not isinstance(d, dict) or not set(d) <= allowed or "reason" not in d:
        raise ValueError(f"expected an object with a reason and some of {sorted(allowed)}")
    ids = [d.get(k, []) for k in ("record_ids", "subject_ids")]
    if not all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in ids):
        raise ValueError("record_ids and subject_ids must be lists of strings")
    extra = {"request_id": d["request_id"]} if "request_id" in d else {}
    return RequestSpec(str(d["reason"]), tuple(ids[0]), tuple(ids[1]), **extra)


def resolve(
    specs: Sequence[RequestSpec], records: Sequence[Record], ledger: Ledger
) -> list[dict[str, str]]:
    """Each request's records (id → sha256); every unknown id of every request reported at once."""
    by_id = {r.record_id: r for r in records}
    deleted = {i: q.request_id for q in ledger.requests() for i in q.record_ids}
    problems, out = [], []
    known = {q.request_id for q in ledger.requests()}
    for spec in specs:
        if not spec.reason.strip():
            problems.append(f"{spec.request_id}: a reason is required")
        if not (spec.record_ids or spec.subject_ids):
            problems.append(f"{spec.request_id}: name at least one record or subject")
        if not _REQUEST_ID.fullmatch(spec.request_id):
            problems.append(f"request id {shown(spec.request_id)} is malformed: up to 128 "
                            "letters, digits and ._:@+-, from a letter or digit")  # fmt: skip
        if spec.request_id in known:
            problems.append(f"{spec.request_id}: a request with this id is already in the ledger")
        hashes = {}
        for rid in spec.record_ids:
            if rid in by_id:
                hashes[rid] = by_id[rid].sha256
            else:
                was = f" (deleted by request {deleted[rid]})" if rid in deleted else ""
                problems.append(f"record {rid!r} is not in {RECORDS}{was}")
        for sid in spec.subject_ids:
            theirs = {r.record_id: r.sha256 for r in records if sid in r.subject_ids}
            if not theirs:
                problems.append(f"subject {sid!r} has no records in {RECORDS}")
            hashes |= theirs
        out.append(hashes)
    if len({s.request_id for s in specs}) != len(specs):
        problems.append("two requests share one request id")
    if problems:
        raise UnknownTargetError(
            "refused the deletion request; nothing was written:", problems=problems
        )
    return out
