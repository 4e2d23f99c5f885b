"""Reads and writes of the API. Never commits: the caller owns the unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from prequal_shared.models import Application, OutboxEvent


async def add_application_with_event(
    conn: AsyncConnection,
    *,
    application: dict[str, Any],
    event_id: uuid.UUID,
    topic: str,
    key: bytes,
    payload: bytes,
    headers: dict[str, str],
) -> None:
    """The application row and its outbox event in ONE statement (a data-modifying CTE):
    atomic on its own, so it needs no BEGIN/COMMIT round trips around it."""
    new_application = insert(Application).values(**application).cte("new_application")
    await conn.execute(
        insert(OutboxEvent)
        .values(event_id=event_id, topic=topic, message_key=key, payload=payload, headers=headers)
        .add_cte(new_application)
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


async def claim_unpublished(session: AsyncSession, *, limit: int) -> list[OutboxEvent]:
    """Lock a batch of unpublished events; other relays skip them instead of waiting."""
    result = await session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result)


async def mark_published(session: AsyncSession, event_ids: list[uuid.UUID]) -> None:
    await session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.event_id.in_(event_ids))
        .values(published_at=text("now()"))
    )


async def count_unpublished(session: AsyncSession) -> int:
    result = await session.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    return int(result or 0)
