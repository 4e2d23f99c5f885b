"""The breaker opens on a stopped PostgreSQL and recovers once it is back (real server)."""

import asyncio
from typing import Any

import pybreaker
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.messaging.breaker import create_breaker
from decision_service.messaging.handler import DecisionHandler
from prequal_devstack.testing import (
    StackInfo,
    as_record,
    fetch_application,
    insert_application,
    report_event,
    start_and_wait_for_the_pipeline,
)
from prequal_shared.config import CommonSettings
from prequal_shared.db import create_engine
from prequal_shared.errors import RetryLaterError, is_transient


async def test_breaker_opens_after_consecutive_failures_and_recovers(
    owned_stack: StackInfo, engine: AsyncEngine
) -> None:
    application_id = await insert_application(engine)
    service_engine = create_engine(
        CommonSettings(database_url=owned_stack.database_url, db_connect_timeout_s=1.0),
        application_name="breaker-test",
    )
    breaker = create_breaker(fail_max=3, reset_timeout_s=2.0)
    handler = DecisionHandler(
        engine=service_engine,
        breaker=breaker,
        consumer_name="breaker-test",
    )
    record = as_record(report_event(application_id, score=790))
    connects: list[Any] = []  # every attempt to connect, failed ones included
    event.listen(service_engine.sync_engine, "do_connect", lambda *args: connects.append(args))
    try:
        await asyncio.to_thread(owned_stack.stack.stop, "postgres")
        failures = []
        for _ in range(2):
            with pytest.raises(Exception) as failed:  # noqa: PT011 - any transient error
                await handler([record])
            failures.append(failed.value)
        assert all(is_transient(exc) and not isinstance(exc, RetryLaterError) for exc in failures)
        assert breaker.current_state == pybreaker.STATE_CLOSED

        with pytest.raises(RetryLaterError):  # the third failure trips it
            await handler([record])
        assert breaker.current_state == pybreaker.STATE_OPEN
        tried = len(connects)
        assert tried >= 3
        with pytest.raises(RetryLaterError) as open_error:  # open: refused without touching the DB
            await handler([record])
        assert len(connects) == tried
        assert 0 < open_error.value.retry_after <= 2.0
    finally:
        await start_and_wait_for_the_pipeline(owned_stack, "postgres")

    await asyncio.sleep(open_error.value.retry_after + 0.1)
    await handler([record])  # half-open trial succeeds and closes the circuit
    assert breaker.current_state == pybreaker.STATE_CLOSED
    row = await fetch_application(engine, application_id)
    assert (row.status, row.cibil_score) == ("PRE_APPROVED", 790)
    await service_engine.dispose()
