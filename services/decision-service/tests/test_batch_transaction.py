"""A batch of reports is one transaction (real PostgreSQL): when its last statement fails,
nothing of it stays, so that its redelivery finds every event new and every row PENDING."""

import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.messaging.breaker import create_breaker
from decision_service.messaging.handler import DecisionHandler
from prequal_devstack.testing import as_record, fetch_application, insert_application, report_event


async def test_a_batch_whose_audit_insert_fails_leaves_nothing_behind(engine: AsyncEngine) -> None:
    good, clashing = await insert_application(engine), await insert_application(engine)
    # An audit row already there for a PENDING application: the batch's audit insert, its
    # last statement, hits the primary key after the events were marked and the rows moved.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO decisions (application_id, event_id, status, cibil_score)"
                " VALUES (:id, :event_id, 'REJECTED', 300)"
            ),
            {"id": clashing, "event_id": uuid.uuid4()},
        )
    consumer = f"batch-test-{uuid.uuid4().hex[:8]}"
    handler = DecisionHandler(
        engine=engine,
        breaker=create_breaker(fail_max=5, reset_timeout_s=60),
        consumer_name=consumer,
    )
    reports = [report_event(good, score=790), report_event(clashing, score=790)]

    with pytest.raises(asyncpg.UniqueViolationError):
        await handler([as_record(report, offset=n) for n, report in enumerate(reports)])

    for application_id in (good, clashing):
        row = await fetch_application(engine, application_id)
        assert (row.status, row.cibil_score) == ("PENDING", None)
    async with engine.connect() as conn:
        marked = await conn.scalar(
            text("SELECT count(*) FROM processed_events WHERE consumer = :consumer"),
            {"consumer": consumer},
        )
    assert marked == 0
