"""The outbox relay's sweep publishes what a crashed process committed but never published."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_api.api.schemas import ApplicationIn
from prequal_api.domain.applications import ApplicationIntake
from prequal_api.persistence.writer import ApplicationWriter
from prequal_devstack.testing import StackInfo, fetch_application, poll_until
from prequal_shared.models import OutboxEvent


async def in_outbox(engine: AsyncEngine, event_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE event_id = :id"), {"id": event_id}
        )
    return bool(found)


async def test_an_event_left_in_the_outbox_is_published_by_the_sweep(
    stack: StackInfo, engine: AsyncEngine
) -> None:
    # As a request that committed and then died before its fast path ran.
    intake = ApplicationIntake(
        ApplicationWriter(engine.execution_options(isolation_level="AUTOCOMMIT")),
        topic="loan_applications_submitted",
    )
    new = await intake.submit(
        ApplicationIn.model_validate(
            {
                "pan_number": "FGHIJ5678K",
                "monthly_income_inr": "90000",
                "loan_amount_inr": "1000",
            }
        ),
        correlation_id=f"orphan-{uuid.uuid4()}",
    )
    application_id, event = new.id, new.event
    async with engine.begin() as conn:
        await conn.execute(
            update(OutboxEvent)
            .where(OutboxEvent.event_id == event.event_id)
            .values(created_at=text("now() - interval '1 minute'"))
        )

    async def decided() -> str | None:
        row = await fetch_application(engine, application_id)
        return None if row.status == "PENDING" else str(row.status)

    # The running API's relay sweeps every 2 s.
    assert await poll_until(decided, timeout_s=30, interval_s=0.5) == "REJECTED"
    assert not await in_outbox(engine, event.event_id)  # published, so deleted


async def test_events_an_earlier_relay_marked_published_are_deleted(
    stack: StackInfo, engine: AsyncEngine
) -> None:
    """An earlier relay marked published events and kept them a day; after an upgrade, the
    relay deletes them, however recent."""
    marked = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, topic, message_key, payload, headers,"
                " created_at, published_at) VALUES (:id, 'loan_applications_submitted',"
                " 'k', 'v', '{}', :at, :at)"
            ),
            {"id": marked, "at": datetime.now(UTC) - timedelta(minutes=5)},
        )

    async def deleted() -> bool:
        return not await in_outbox(engine, marked)

    # The running API's relay looks every 2 s.
    assert await poll_until(deleted, timeout_s=30, interval_s=0.5)
