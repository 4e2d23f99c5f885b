"""Records of applied events are forgotten past retention, and only those, on the real database.

Ages are in decades so that only this test's rows are that old: the stack's own rows in the
shared database are left alone.
"""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.persistence.retention import ProcessedEventsRetention
from prequal_devstack.testing import StackInfo, free_port, poll_until
from prequal_shared.db import create_session_factory
from prequal_shared.models import ProcessedEvent

DECADE_H = 10 * 365 * 24.0


async def record_events(engine: AsyncEngine, consumer: str, *ages: timedelta) -> list[uuid.UUID]:
    """One processed event per age, stamped that long ago (by PostgreSQL's clock)."""
    ids = [uuid.uuid4() for _ in ages]
    async with engine.begin() as conn:
        for event_id, age in zip(ids, ages, strict=True):
            await conn.execute(
                insert(ProcessedEvent).values(
                    consumer=consumer, event_id=event_id, processed_at=func.now() - age
                )
            )
    return ids


async def remaining(engine: AsyncEngine, consumer: str) -> set[uuid.UUID]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == consumer)
        )
        return set(rows)


async def test_prune_forgets_every_event_past_retention_in_batches(engine: AsyncEngine) -> None:
    consumer = f"test-retention-{uuid.uuid4().hex[:8]}"
    retention = ProcessedEventsRetention(
        create_session_factory(engine), retention_h=DECADE_H, batch_size=2
    )
    await retention.prune()  # whatever an interrupted earlier run left behind
    await record_events(engine, consumer, *[timedelta(days=3700 + i) for i in range(5)])
    kept = await record_events(
        engine,
        consumer,
        timedelta(days=3600),  # just inside ten years
        timedelta(0),
    )

    # Five rows past retention, two per batch: three batches, the last one short.
    assert await retention.prune() == 5
    assert await remaining(engine, consumer) == set(kept)
    assert await retention.prune() == 0


async def test_the_service_prunes_while_it_runs(
    stack: StackInfo, engine: AsyncEngine, service_process: Any
) -> None:
    consumer = f"test-retention-{uuid.uuid4().hex[:8]}"
    [stale] = await record_events(engine, consumer, timedelta(days=7400))
    [fresh] = await record_events(engine, consumer, timedelta(days=1))
    process = service_process(
        "decision_service",
        {
            "DECISION_CONSUMER_GROUP": f"test-decision-{uuid.uuid4().hex[:8]}",
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            "DATABASE_URL": stack.database_url,
            "DECISION_OPS_PORT": str(free_port()),
            "PROCESSED_EVENTS_RETENTION_H": str(2 * DECADE_H),
        },
    )
    await process.wait_for_log('"started"')

    async def stale_forgotten() -> bool:
        return stale not in await remaining(engine, consumer)

    assert await poll_until(stale_forgotten)
    await process.wait_for_log('"forgot old processed events"')
    assert await remaining(engine, consumer) == {fresh}
    # The pruning task stops with the service, which exits cleanly.
    assert process.terminate() == 0
