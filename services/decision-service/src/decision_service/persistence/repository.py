"""Writes of the decision service. Flushes only: the caller owns the transaction."""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from prequal_shared.domain import ApplicationStatus
from prequal_shared.errors import UnknownApplicationError
from prequal_shared.models import Application, Decision, ProcessedEvent


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE_EVENT = "duplicate_event"
    ALREADY_DECIDED = "already_decided"


async def mark_processed(session: AsyncSession, *, consumer: str, event_id: uuid.UUID) -> bool:
    """Record that `consumer` handled `event_id`; False if it already had."""
    result = await session.execute(
        insert(ProcessedEvent)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ProcessedEvent.event_id)
    )
    return result.first() is not None


async def record_decision(
    session: AsyncSession,
    *,
    consumer: str,
    event_id: uuid.UUID,
    application_id: uuid.UUID,
    status: ApplicationStatus,
    cibil_score: int,
) -> Outcome:
    """Move a PENDING application to its decision, once; anything else changes nothing."""
    if not await mark_processed(session, consumer=consumer, event_id=event_id):
        return Outcome.DUPLICATE_EVENT
    moved = await session.execute(
        update(Application)
        .where(Application.id == application_id, Application.status == ApplicationStatus.PENDING)
        .values(status=status, cibil_score=cibil_score)
        .returning(Application.id)
    )
    if moved.first() is None:
        current = await session.scalar(
            select(Application.status).where(Application.id == application_id)
        )
        if current is None:
            msg = f"application {application_id} does not exist"
            raise UnknownApplicationError(msg)
        return Outcome.ALREADY_DECIDED
    await session.execute(
        insert(Decision).values(
            application_id=application_id, event_id=event_id, status=status, cibil_score=cibil_score
        )
    )
    return Outcome.APPLIED
