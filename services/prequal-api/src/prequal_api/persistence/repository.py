"""Reads and writes of the API. Never commits: the caller owns the unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from prequal_shared.models import Application, OutboxEvent


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    event_id: uuid.UUID
    topic: str
    key: bytes
    payload: bytes
    headers: dict[str, str]


_APPLICATION_COLUMNS = (
    "id",
    "pan_number",
    "applicant_name",
    "monthly_income_inr",
    "loan_amount_inr",
    "loan_type",
    "status",
)
# Built once: per request only the parameters change, so SQLAlchemy neither rebuilds the
# statement nor recomputes its cache key.
_ADD_APPLICATION_WITH_EVENT = (
    insert(OutboxEvent)
    .values(
        event_id=bindparam("event_id"),
        topic=bindparam("topic"),
        message_key=bindparam("message_key"),
        payload=bindparam("payload"),
        headers=bindparam("headers"),
    )
    .add_cte(
        insert(Application)
        .values({name: bindparam(f"a_{name}") for name in _APPLICATION_COLUMNS})
        .cte("new_application")
    )
)


async def add_application_with_event(
    conn: AsyncConnection, *, application: dict[str, Any], event: OutboxMessage
) -> None:
    """The application row and its outbox event in ONE statement (a data-modifying CTE):
    atomic on its own, so it needs no BEGIN/COMMIT round trips around it."""
    await conn.execute(
        _ADD_APPLICATION_WITH_EVENT,
        {
            **{f"a_{name}": application.get(name) for name in _APPLICATION_COLUMNS},
            "event_id": event.event_id,
            "topic": event.topic,
            "message_key": event.key,
            "payload": event.payload,
            "headers": event.headers,
        },
    )


async def get_status(
    conn: AsyncConnection, application_id: uuid.UUID
) -> tuple[str, int | None, datetime] | None:
    row = (
        await conn.execute(
            select(Application.status, Application.cibil_score, Application.updated_at).where(
                Application.id == application_id
            )
        )
    ).first()
    return None if row is None else (row.status, row.cibil_score, row.updated_at)


async def claim_unpublished(
    session: AsyncSession, *, limit: int, older_than_s: float
) -> list[OutboxMessage]:
    """Lock a batch of events still unpublished after `older_than_s` (the fast path had its
    chance); other relays skip locked rows instead of waiting for them."""
    rows = await session.execute(
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
        )
        .order_by(OutboxEvent.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [OutboxMessage(*row) for row in rows]


_MARK_PUBLISHED = (
    update(OutboxEvent)
    .where(OutboxEvent.event_id == func.any(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))))
    .values(published_at=func.now())
)


async def mark_published(conn: AsyncConnection | AsyncSession, event_ids: list[uuid.UUID]) -> None:
    await conn.execute(_MARK_PUBLISHED, {"ids": event_ids})


async def delete_published(session: AsyncSession, *, older_than_h: float, limit: int) -> int:
    """Forget events published long ago (the outbox is a queue, not an archive)."""
    result = await session.execute(
        text(
            "DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox"
            " WHERE published_at < now() - make_interval(secs => :seconds) LIMIT :limit)"
        ),
        {"seconds": older_than_h * 3600, "limit": limit},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_unpublished(session: AsyncSession) -> int:
    result = await session.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    return int(result or 0)
