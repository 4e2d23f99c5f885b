"""Writes of the decision service. Never commits: the caller owns the transaction.

A batch of decisions is applied with a handful of set-based statements, whatever its size:
dedupe by event id, move only PENDING rows, write one audit row per decided application.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from prequal_shared.db import DriverConnection
from prequal_shared.domain import ApplicationStatus
from prequal_shared.errors import TransientError


@dataclass(frozen=True, slots=True)
class PendingDecision:
    event_id: uuid.UUID
    application_id: uuid.UUID
    status: ApplicationStatus
    cibil_score: int
    monthly_income_inr: Decimal
    loan_amount_inr: Decimal
    """The amounts the decision was made on: they must be the stored application's."""


@dataclass(slots=True)
class BatchOutcome:
    applied: list[PendingDecision] = field(default_factory=list)
    """The decisions that moved their application from PENDING (the very objects given: a
    batch may hold several reports for one application, and only one of them is applied)."""
    duplicate_events: list[uuid.UUID] = field(default_factory=list)
    """Events this consumer had already applied (redelivery, relay or replay): ignored."""
    already_decided: list[uuid.UUID] = field(default_factory=list)
    """Applications that were not PENDING any more: left as they were."""
    unknown_applications: set[uuid.UUID] = field(default_factory=set)
    """Applications that do not exist: their events were not recorded as processed."""
    contradicted: list[PendingDecision] = field(default_factory=list)
    """Reports whose amounts are not the stored application's: not applied, not recorded (a
    copy of the same event with the right amounts still is)."""


# On asyncpg's connection (`prequal_shared.db.driver_connection`), in the batch's transaction:
# through SQLAlchemy's session and its execution path, a batch cost 0.42-0.50 ms more CPU
# (docs/performance.md, nineteenth look).
_KNOWN = (
    "SELECT id, monthly_income_inr, loan_amount_inr FROM applications WHERE id = ANY($1::uuid[])"
)
_MARK_PROCESSED = (
    "INSERT INTO processed_events (consumer, event_id) "
    "SELECT $1, unnest($2::uuid[]) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
_DECIDE = (
    "UPDATE applications AS a SET status = d.status, cibil_score = d.cibil_score "
    "FROM unnest($1::uuid[], $2::varchar[], $3::int[]) AS d(id, status, cibil_score) "
    "WHERE a.id = d.id AND a.status = 'PENDING' "
    "RETURNING a.id"
)
_AUDIT = (
    "INSERT INTO decisions (application_id, event_id, status, cibil_score) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::int[])"
)


_READ_ONLY = "SELECT current_setting('transaction_read_only') = 'on'"


async def record_decisions(
    conn: DriverConnection, *, consumer: str, decisions: Sequence[PendingDecision]
) -> BatchOutcome:
    """Apply a batch of decisions, each at most once, never over a decided application.
    `conn` is in the caller's transaction."""
    outcome = BatchOutcome()
    if not decisions:
        return outcome
    requested = list({d.application_id for d in decisions})
    stored = {row[0]: (row[1], row[2]) for row in await conn.fetch(_KNOWN, requested)}
    outcome.unknown_applications = set(requested) - stored.keys()
    if outcome.unknown_applications and await conn.fetchval(_READ_ONLY):
        # A standby (connected to during a failover) may not have replayed the application
        # yet: "unknown" there is not an answer, and those reports went to the DLQ.
        msg = "the database is read-only (a standby?): cannot tell if the applications exist"
        raise TransientError(msg)
    candidates: list[PendingDecision] = []
    for d in decisions:
        if d.application_id not in stored:
            continue
        if stored[d.application_id] == (d.monthly_income_inr, d.loan_amount_inr):
            candidates.append(d)
        else:
            outcome.contradicted.append(d)
    if not candidates:
        return outcome

    event_ids = list(dict.fromkeys(d.event_id for d in candidates))
    fresh = {row[0] for row in await conn.fetch(_MARK_PROCESSED, consumer, event_ids)}
    first_per_application: dict[uuid.UUID, PendingDecision] = {}
    for decision in candidates:
        if decision.event_id not in fresh:
            outcome.duplicate_events.append(decision.event_id)
        elif decision.application_id in first_per_application:
            outcome.already_decided.append(decision.application_id)
        else:
            first_per_application[decision.application_id] = decision
    if not first_per_application:
        return outcome

    chosen = list(first_per_application.values())
    moved = {
        row[0]
        for row in await conn.fetch(
            _DECIDE,
            [d.application_id for d in chosen],
            [d.status.value for d in chosen],
            [d.cibil_score for d in chosen],
        )
    }
    applied = [d for d in chosen if d.application_id in moved]
    outcome.applied = applied
    outcome.already_decided.extend(
        d.application_id for d in chosen if d.application_id not in moved
    )
    if applied:
        await conn.execute(
            _AUDIT,
            [d.application_id for d in applied],
            [d.event_id for d in applied],
            [d.status.value for d in applied],
            [d.cibil_score for d in applied],
        )
    return outcome


_FORGET = text(
    "DELETE FROM processed_events WHERE consumer = :consumer AND event_id IN ("
    " SELECT event_id FROM processed_events"
    " WHERE consumer = :consumer AND processed_at < now() - make_interval(secs => :seconds)"
    " ORDER BY processed_at LIMIT :limit)"
)


async def forget_processed_events(
    session: AsyncSession, *, consumer: str, older_than_h: float, limit: int
) -> int:
    """Delete up to `limit` of `consumer`'s oldest records of applied events, older than
    `older_than_h`.

    Safe to forget once Kafka can no longer redeliver the event (past the topic's retention);
    even then a replay cannot decide twice, since only PENDING rows move."""
    result = await session.execute(
        _FORGET, {"consumer": consumer, "seconds": older_than_h * 3600, "limit": limit}
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
