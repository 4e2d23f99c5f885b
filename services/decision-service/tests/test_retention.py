"""Records of applied events are forgotten past retention, and only those, on the real database.

Each test records events under a consumer name of its own, so neither the stack's own decision
service (which prunes its consumer group's records) nor another test can touch them.
"""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.persistence.retention import ProcessedEventsRetention
from prequal_devstack.testing import StackInfo, TopicFactory, free_port, poll_until
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
        create_session_factory(engine), consumer=consumer, retention_h=DECADE_H, batch_size=2
    )
    await record_events(engine, consumer, *[timedelta(days=3700 + i) for i in range(5)])
    kept = await record_events(
        engine,
        consumer,
        timedelta(days=3600),  # just inside ten years
        timedelta(0),
    )
    # Another consumer's records are its own business.
    [other] = await record_events(engine, f"{consumer}-other", timedelta(days=3700))

    # Five rows past retention, two per batch: three batches, the last one short.
    assert await retention.prune() == 5
    assert await remaining(engine, consumer) == set(kept)
    assert await retention.prune() == 0
    assert await remaining(engine, f"{consumer}-other") == {other}


async def test_the_service_prunes_its_consumer_groups_records_while_it_runs(
    stack: StackInfo, topics: TopicFactory, engine: AsyncEngine, service_process: Any
) -> None:
    group = f"test-decision-{uuid.uuid4().hex[:8]}"
    [stale] = await record_events(engine, group, timedelta(days=7400))
    [fresh] = await record_events(engine, group, timedelta(days=1))
    process = service_process(
        "decision_service",
        {
            "TOPIC_CREDIT_REPORTS": await topics.create("reports"),
            "TOPIC_DLQ": await topics.create("dlq"),
            "DECISION_CONSUMER_GROUP": group,
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            "DATABASE_URL": stack.database_url,
            "DECISION_OPS_PORT": str(free_port()),
            "PROCESSED_EVENTS_RETENTION_H": str(2 * DECADE_H),
        },
    )
    await process.wait_for_log('"started"')

    async def stale_forgotten() -> bool:
        return stale not in await remaining(engine, group)

    assert await poll_until(stale_forgotten)
    await process.wait_for_log('"forgot old processed events"')
    assert await remaining(engine, group) == {fresh}
    # The pruning task stops with the service, which exits cleanly.
    assert process.terminate() == 0
