"""Group commit against the real PostgreSQL: concurrent submissions share a statement, each
caller learns the fate of its own application, and one refused row fails only itself."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
from asgi_correlation_id import correlation_id
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.contextvars import bind_contextvars, get_contextvars

from prequal_api.api.schemas import ApplicationIn
from prequal_api.domain.applications import new_application
from prequal_api.persistence import repository
from prequal_api.persistence.repository import NewApplication, OutboxMessage
from prequal_api.persistence.writer import ApplicationWriter
from prequal_devstack.testing import poll_until
from prequal_shared.db import DriverConnection


def application(income: str = "50000", loan_type: str | None = "HOME") -> NewApplication:
    new = new_application(
        ApplicationIn.model_validate(
            {
                "pan_number": "ABCDE1234F",
                "applicant_name": "Writer Test",
                "monthly_income_inr": "50000",
                "loan_amount_inr": "200000.50",
                "loan_type": loan_type,
            }
        ),
        correlation_id=f"writer-{uuid.uuid4()}",
        topic="loan_applications_submitted",
    )
    # As if validation had let a bad value through: only the database can refuse it.
    return dataclasses.replace(new, monthly_income_inr=Decimal(income))


@pytest.fixture
def committed() -> list[OutboxMessage]:
    """What the writer handed on to the relay, in order."""
    return []


@pytest.fixture
async def writer(
    engine: AsyncEngine, committed: list[OutboxMessage]
) -> AsyncIterator[ApplicationWriter]:
    writer = ApplicationWriter(
        engine.execution_options(isolation_level="AUTOCOMMIT"), on_committed=committed.extend
    )
    yield writer
    await writer.close()


async def stored(engine: AsyncEngine, ids: list[uuid.UUID]) -> list[tuple[object, ...]]:
    """(id, status, income, loan, loan_type, created_at, event headers) of the stored ones."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a.id, a.status, a.monthly_income_inr, a.loan_amount_inr, a.loan_type,"
                " a.created_at, o.headers FROM applications a"
                " JOIN outbox o ON o.message_key = convert_to(a.id::text, 'UTF8')"
                " WHERE a.id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return [tuple(row) for row in rows]


async def test_concurrent_submissions_are_committed_together_and_each_before_its_answer(
    engine: AsyncEngine, writer: ApplicationWriter
) -> None:
    applications = [application(loan_type=None if i % 2 else "HOME") for i in range(40)]
    await asyncio.gather(*[writer.add(a) for a in applications])

    rows = await stored(engine, [a.id for a in applications])
    assert len(rows) == 40  # every application with its outbox event
    by_id = {row[0]: row for row in rows}
    for a in applications:
        _, status, income, loan, loan_type, _, headers = by_id[a.id]
        assert (status, income, loan, loan_type) == (
            "PENDING",
            Decimal("50000.00"),
            Decimal("200000.50"),
            a.loan_type,
        )
        assert headers == a.event.headers
    # now() is the transaction's start, one timestamp per statement: the 40 callers of one
    # loop turn all joined the write the first of them started.
    assert len({row[5] for row in rows}) == 1


async def test_a_refused_application_fails_alone(
    engine: AsyncEngine, writer: ApplicationWriter, committed: list[OutboxMessage]
) -> None:
    good = [application() for _ in range(5)]
    bad = application(income="0")  # the income_positive check refuses it
    results = await asyncio.gather(
        *[writer.add(a) for a in [*good[:2], bad, *good[2:]]], return_exceptions=True
    )

    assert [type(result) for result in results] == [
        type(None),
        type(None),
        asyncpg.CheckViolationError,
        type(None),
        type(None),
        type(None),
    ]
    assert {row[0] for row in await stored(engine, [a.id for a in [*good, bad]])} == {
        a.id for a in good
    }
    # Only committed events go to the relay's fast path.
    assert [m.event_id for m in committed] == [a.event.event_id for a in good]


async def test_the_write_does_not_run_as_the_request_that_started_it(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write serves many requests: its log lines must not carry the correlation id of
    whichever request happened to start it, and keep the fields bound at start-up."""
    seen: list[tuple[str | None, object]] = []
    add = repository.add_applications

    async def noting_the_context(
        conn: DriverConnection, applications: list[NewApplication]
    ) -> None:
        seen.append((correlation_id.get(), get_contextvars().get("service")))
        await add(conn, applications)

    monkeypatch.setattr(repository, "add_applications", noting_the_context)

    async def submit(writer: ApplicationWriter, request_id: str) -> None:
        correlation_id.set(request_id)  # as the middleware does, in this request's task
        await writer.add(application())

    async def at_start_up() -> ApplicationWriter:  # the app's lifespan, in a task of its own
        bind_contextvars(service="prequal-api")  # as configure_logging does
        return ApplicationWriter(engine.execution_options(isolation_level="AUTOCOMMIT"))

    writer = await asyncio.create_task(at_start_up())
    try:
        await asyncio.gather(submit(writer, "first"), submit(writer, "second"))
    finally:
        await writer.close()
    assert seen  # the writes ran in the context the writer was made in
    assert set(seen) == {(None, "prequal-api")}


async def test_a_lone_submission_is_readable_as_soon_as_add_returns(
    engine: AsyncEngine, writer: ApplicationWriter
) -> None:
    lone = application()
    await writer.add(lone)
    assert len(await stored(engine, [lone.id])) == 1


async def test_a_submission_made_as_the_previous_write_ends_is_written(
    engine: AsyncEngine, writer: ApplicationWriter
) -> None:
    first, second = application(), application()
    await writer.add(first)
    # This caller resumes before the writer task that answered it has finished: a writer
    # still counted as running but about to stop would leave it waiting for ever. (In this
    # task: `wait_for` would run it in a new task, one loop turn later.)
    async with asyncio.timeout(5):
        await writer.add(second)
    assert len(await stored(engine, [first.id, second.id])) == 2


async def test_callers_get_their_answer_even_if_handing_events_on_fails(
    engine: AsyncEngine,
) -> None:
    def broken_relay(_: list[OutboxMessage]) -> None:
        raise RuntimeError("relay gone")

    writer = ApplicationWriter(
        engine.execution_options(isolation_level="AUTOCOMMIT"), on_committed=broken_relay
    )
    applications = [application() for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*[writer.add(a) for a in applications]), timeout=5)
    await writer.close()
    # Committed: the relay's sweep publishes them later.
    assert len(await stored(engine, [a.id for a in applications])) == 3


async def test_a_submission_cancelled_before_its_write_is_not_stored(
    engine: AsyncEngine, writer: ApplicationWriter
) -> None:
    """uvicorn cancels the requests still running when its graceful shutdown times out; their
    clients get an error, so their applications must not be stored behind their back."""
    first, cancelled, later = application(), application(), application()
    async with engine.connect() as blocker:
        # An uncommitted row with the first application's id: its insert (and so the
        # writer) waits on the primary key until this transaction ends.
        await blocker.execute(
            text(
                "INSERT INTO applications (id, pan_number, monthly_income_inr, loan_amount_inr)"
                " VALUES (:id, 'ABCDE1234F', 1, 1)"
            ),
            {"id": first.id},
        )
        blocker_pid = await blocker.scalar(text("SELECT pg_backend_pid()"))
        first_write = asyncio.create_task(writer.add(first))

        async def first_write_waits() -> bool:  # in flight, on the blocker's row lock
            async with engine.connect() as conn:
                return bool(
                    await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE :blocker = ANY(pg_blocking_pids(pid))"
                        ),
                        {"blocker": blocker_pid},
                    )
                )

        assert await poll_until(first_write_waits, timeout_s=10, interval_s=0.02)
        waiting = asyncio.create_task(writer.add(cancelled))
        await asyncio.sleep(0.05)
        waiting.cancel()
        later_write = asyncio.create_task(writer.add(later))
        await blocker.rollback()
    async with asyncio.timeout(10):
        await first_write
        await later_write
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert {row[0] for row in await stored(engine, [first.id, cancelled.id, later.id])} == {
        first.id,
        later.id,
    }
