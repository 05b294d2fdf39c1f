"""The deletion queue: acknowledge erasure requests at once, honour them in batches, on time.

``exante delete --enqueue`` resolves a request (refusing unknown ids before
anything is written), appends it to the ledger with an ``ack`` entry stating
its receipt deadline (``deletion.deadline_months``/``deadline_days`` in
params.yaml; GDPR Art. 12(3): one month of receipt), signs an acknowledgement
for the requester and returns: no retrain. ``exante delete --flush`` carries
every pending request to ``complete`` in one run (:func:`exante.deletion.finish_pending`):
one ``dvc repro``, so each affected shard retrains once, from the earliest
slice any request touches. ``exante ledger status`` lists what waits and
how long, against the deadline. All of it under the ledger lock; a flush that
is interrupted is finished by the next ``--flush`` (or ``--resume``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from exante.deletion import (
    ACKS,
    Context,
    RequestSpec,
    _recover,
    finish_pending,
    resolve,
)
from lineage.acknowledgement import RULE, deadline_for, issue_acknowledgement
from lineage.ledger import Ledger, append_ack, append_request, ledger_lock, verify_ledger
from lineage.records import read_all
from lineage.stages import RECORDS


@dataclass(frozen=True)
class Period:
    """How long a request may wait for its receipt (``deletion`` in params.yaml)."""

    months: int = 1
    days: int = 0

    @property
    def rule(self) -> str:
        if (self.months, self.days) == (1, 0):
            return RULE
        return f"{RULE}; policy: {self.months} months and {self.days} days (params deletion.*)"

    def deadline(self, received: datetime) -> datetime:
        return deadline_for(received, months=self.months, days=self.days)


def enqueue(ctx: Context, specs: Sequence[RequestSpec], period: Period) -> list[Path]:
    """Record and acknowledge each request; return the signed acknowledgements' paths."""
    with ledger_lock(ctx.root) as lock:
        _recover(ctx, lock)
        ledger = verify_ledger(ctx.root, ctx.trusted)
        resolved = resolve(specs, read_all(ctx.root / RECORDS), ledger)
        return [_acknowledge(ctx, lock, spec, hashes, period)
                for spec, hashes in zip(specs, resolved, strict=True)]  # fmt: skip


def _acknowledge(ctx: Context, lock, spec: RequestSpec, hashes, period: Period) -> Path:
    request = append_request(lock, ctx.signer, ctx.trusted, request_id=spec.request_id,
                             reason=spec.reason, record_hashes=hashes,
                             subject_ids=spec.subject_ids)  # fmt: skip
    due = period.deadline(datetime.fromisoformat(request.received_at))
    ack = append_ack(lock, ctx.signer, ctx.trusted, request_id=spec.request_id, deadline=due,
                     rule=period.rule)  # fmt: skip
    name = re.sub(r"[^A-Za-z0-9._-]", "_", spec.request_id)
    path = ctx.root / ACKS / f"{name}.dsse.json"
    issue_acknowledgement(path, ctx.signer, request=request, ack=ack)
    ctx.say(f"request {spec.request_id}: {len(hashes)} records queued; receipt due by "
            f"{ack.deadline}; acknowledgement → {path.relative_to(ctx.root)}")  # fmt: skip
    return path


def flush(ctx: Context) -> list[Path]:
    """Process every pending request together; return their receipts' paths."""
    return finish_pending(ctx, queued=True)


@dataclass(frozen=True)
class Pending:
    """A request not yet complete, and its receipt deadline."""

    request_id: str
    status: str
    received_at: datetime
    deadline: datetime

    def age(self, as_of: datetime) -> timedelta:
        return as_of - self.received_at

    def overdue(self, as_of: datetime) -> bool:
        return as_of > self.deadline


def pending(ledger: Ledger, period: Period) -> list[Pending]:
    """Every pending request, oldest first; one without an ack (sent straight to
    ``exante delete`` and interrupted) is due by the policy's period from receipt."""
    out = []
    for q in ledger.pending():
        received = datetime.fromisoformat(q.received_at)
        ack = ledger.ack(q.request_id)
        due = datetime.fromisoformat(ack.deadline) if ack else period.deadline(received)
        out.append(Pending(q.request_id, ledger.status_of(q.request_id), received, due))
    return out


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
