"""Reads and writes of the API. Never commits: the caller owns the unit of work."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Interval, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from prequal_shared.db import DriverConnection
from prequal_shared.models import OutboxEvent

_UUIDS = ARRAY(UUID(as_uuid=True))


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    event_id: uuid.UUID
    topic: str
    key: bytes
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class NewApplication:
    """A PENDING application and its outbox event, ready to be stored together."""

    id: uuid.UUID
    pan_number: str
    applicant_name: str | None
    monthly_income_inr: Decimal
    loan_amount_inr: Decimal
    loan_type: str | None
    event: OutboxMessage


# Any number of applications and their events in ONE statement: a data-modifying CTE over
# arrays, one array per column (`unnest` zips them into rows). One statement is atomic on its
# own, so it needs no BEGIN/COMMIT round trips; and the SQL text is the same for every batch
# size, so it is parsed and planned once per connection (asyncpg's statement cache, which
# prepares a statement again after 5 minutes).
_ADD_APPLICATIONS = """
    WITH new_applications AS (
        INSERT INTO applications
            (id, pan_number, applicant_name, monthly_income_inr, loan_amount_inr, loan_type)
        SELECT * FROM unnest(
            $1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::text[]
        )
    )
    INSERT INTO outbox (event_id, topic, message_key, payload, headers)
    SELECT event_id, topic, message_key, payload, CAST(headers AS jsonb) FROM unnest(
        $7::uuid[], $8::text[], $9::bytea[], $10::bytea[], $11::text[]
    ) AS event(event_id, topic, message_key, payload, headers)
"""


async def add_applications(conn: DriverConnection, applications: Sequence[NewApplication]) -> None:
    """Store the applications as PENDING, each with its outbox event, all or none.

    On asyncpg's connection (`prequal_shared.db.driver_connection`): a statement runs once per
    few requests at 1,000/s, and SQLAlchemy's execution path doubled its CPU."""
    await conn.execute(
        _ADD_APPLICATIONS,
        [a.id for a in applications],
        [a.pan_number for a in applications],
        [a.applicant_name for a in applications],
        [a.monthly_income_inr for a in applications],
        [a.loan_amount_inr for a in applications],
        [a.loan_type for a in applications],
        [a.event.event_id for a in applications],
        [a.event.topic for a in applications],
        [a.event.key for a in applications],
        [a.event.payload for a in applications],
        [json.dumps(a.event.headers) for a in applications],
    )


_GET_STATUS = "SELECT status, cibil_score, updated_at FROM applications WHERE id = $1"


async def get_status(
    conn: DriverConnection, application_id: uuid.UUID
) -> tuple[str, int | None, datetime] | None:
    """On asyncpg's connection: clients poll it, one statement a request."""
    row = await conn.fetchrow(_GET_STATUS, application_id)
    return None if row is None else (row[0], row[1], row[2])


async def claim_unpublished(
    session: AsyncSession,
    *,
    limit: int,
    older_than_s: float,
    skip_topics: Sequence[str] = (),
    skip_ids: Sequence[uuid.UUID] = (),
) -> list[OutboxMessage]:
    """Lock a batch of events still unpublished after `older_than_s` (the fast path had its
    chance), except those for `skip_topics`, those in `skip_ids` and those another relay holds
    (`hold`); other relays skip locked rows instead of waiting for them."""
    query = (
        select(
            OutboxEvent.event_id,
            OutboxEvent.topic,
            OutboxEvent.message_key,
            OutboxEvent.payload,
            OutboxEvent.headers,
        )
        .where(
            OutboxEvent.published_at.is_(None),
            OutboxEvent.created_at < func.now() - timedelta(seconds=older_than_s),
            or_(OutboxEvent.held_until.is_(None), OutboxEvent.held_until < func.now()),
        )
        .order_by(OutboxEvent.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if skip_topics:
        query = query.where(OutboxEvent.topic.not_in(skip_topics))
    if skip_ids:  # one array parameter, however many
        query = query.where(
            OutboxEvent.event_id != func.all(bindparam("skip_ids", list(skip_ids), type_=_UUIDS))
        )
    rows = await session.execute(query)
    return [OutboxMessage(*row) for row in rows]


_HOLD = text(
    # From now, not from the transaction's start: a sweep may commit its hold 15 s after.
    "UPDATE outbox SET held_until = clock_timestamp() + :hold WHERE event_id IN ("
    " SELECT event_id FROM outbox WHERE event_id = ANY(:ids) AND published_at IS NULL"
    # Not those the fast path sent a moment ago, acknowledged within milliseconds as a rule:
    # only those past `older_than`, nearing the sweeps' grace period.
    " AND created_at < now() - :older_than"
    # A hold with over half its time left is not written again: a long outage would otherwise
    # rewrite every held row at every sweep.
    " AND (held_until IS NULL OR held_until < now() + :hold / 2)"
    # Another relay's sweep may have claimed one (its hold came late): not waited for.
    " FOR UPDATE SKIP LOCKED)"
).bindparams(
    bindparam("ids", type_=_UUIDS),
    bindparam("older_than", type_=Interval),
    bindparam("hold", type_=Interval),
)


async def hold(
    conn: AsyncConnection, event_ids: list[uuid.UUID], *, older_than_s: float, for_s: float
) -> None:
    """Keep other relays' sweeps off these events for `for_s`: this relay's producer still
    holds them, unacknowledged."""
    await conn.execute(
        _HOLD,
        {
            "ids": event_ids,
            "older_than": timedelta(seconds=older_than_s),
            "hold": timedelta(seconds=for_s),
        },
    )


_RELEASE = text(
    "UPDATE outbox SET held_until = NULL WHERE event_id IN ("
    " SELECT event_id FROM outbox WHERE event_id = ANY(:ids) AND published_at IS NULL"
    " AND held_until IS NOT NULL"
    # One another relay has claimed is being swept already: not waited for.
    " FOR UPDATE SKIP LOCKED)"
).bindparams(bindparam("ids", type_=_UUIDS))


async def release(conn: AsyncConnection, event_ids: list[uuid.UUID]) -> None:
    """Let any relay's sweep take these events again: the producer gave up on them."""
    await conn.execute(_RELEASE, {"ids": event_ids})


_DELETE_ACKNOWLEDGED = "DELETE FROM outbox WHERE event_id = ANY($1::uuid[])"


async def delete_acknowledged(conn: DriverConnection, event_ids: list[uuid.UUID]) -> None:
    """Events Kafka acknowledged leave the outbox: it is a queue, not an archive (Kafka has
    them). A delete, not an update: it writes a few dozen bytes of WAL where an update wrote
    the whole row again with its index entries, and the table's live rows are only its
    backlog (vacuum and pruning reuse the space of the rest).

    On asyncpg's connection, as `add_applications`: the fast path deletes a few events per
    statement at 1,000/s."""
    await conn.execute(_DELETE_ACKNOWLEDGED, event_ids)


async def delete_marked(session: AsyncSession, *, limit: int) -> int:
    """Delete up to `limit` events that a version before this one marked published (it kept
    them for a day); this one deletes what it publishes, so only an upgrade leaves such rows."""
    result = await session.execute(
        text(
            "DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox"
            " WHERE published_at IS NOT NULL LIMIT :limit)"
        ),
        {"limit": limit},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_unpublished(session: AsyncSession) -> int:
    result = await session.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    return int(result or 0)
