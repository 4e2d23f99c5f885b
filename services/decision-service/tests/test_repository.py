"""Recording decisions on the real database: once, and never over a decided row."""

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.persistence.repository import Outcome, record_decision
from prequal_devstack.testing import fetch_application, insert_application
from prequal_shared.db import create_session_factory
from prequal_shared.domain import ApplicationStatus
from prequal_shared.errors import UnknownApplicationError
from prequal_shared.models import Decision, ProcessedEvent


async def record(
    engine: AsyncEngine,
    application_id: uuid.UUID,
    event_id: uuid.UUID,
    status: ApplicationStatus,
    score: int,
) -> Outcome:
    async with create_session_factory(engine).begin() as session:
        return await record_decision(
            session,
            consumer="test",
            event_id=event_id,
            application_id=application_id,
            status=status,
            cibil_score=score,
        )


async def decisions_for(engine: AsyncEngine, application_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(Decision)
                .where(Decision.application_id == application_id)
            )
            or 0
        )


async def test_a_pending_application_is_decided_once(engine: AsyncEngine) -> None:
    application_id = await insert_application(engine)
    event_id = uuid.uuid4()
    before = await fetch_application(engine, application_id)

    assert (
        await record(engine, application_id, event_id, ApplicationStatus.PRE_APPROVED, 790)
        is Outcome.APPLIED
    )
    row = await fetch_application(engine, application_id)
    assert (row.status, row.cibil_score) == ("PRE_APPROVED", 790)
    assert row.updated_at > before.updated_at

    # The same event again, and another report for the same application, change nothing.
    assert (
        await record(engine, application_id, event_id, ApplicationStatus.REJECTED, 300)
        is Outcome.DUPLICATE_EVENT
    )
    assert (
        await record(engine, application_id, uuid.uuid4(), ApplicationStatus.REJECTED, 300)
        is Outcome.ALREADY_DECIDED
    )
    again = await fetch_application(engine, application_id)
    assert (again.status, again.cibil_score, again.updated_at) == (
        "PRE_APPROVED",
        790,
        row.updated_at,
    )
    assert await decisions_for(engine, application_id) == 1


async def test_an_unknown_application_is_a_permanent_error_and_leaves_no_trace(
    engine: AsyncEngine,
) -> None:
    event_id = uuid.uuid4()
    with pytest.raises(UnknownApplicationError):
        await record(engine, uuid.uuid4(), event_id, ApplicationStatus.REJECTED, 610)
    async with engine.connect() as conn:
        seen = await conn.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.event_id == event_id)
        )
    assert seen == 0  # so a replay after the cause is fixed is applied
