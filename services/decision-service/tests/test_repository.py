"""Recording decisions on the real database: once, and never over a decided row."""

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from decision_service.persistence.repository import (
    BatchOutcome,
    PendingDecision,
    record_decisions,
)
from prequal_devstack.testing import StackInfo, fetch_application, insert_application
from prequal_shared.db import driver_connection
from prequal_shared.domain import ApplicationStatus
from prequal_shared.errors import TransientError
from prequal_shared.models import Decision, ProcessedEvent

P, R = ApplicationStatus.PRE_APPROVED, ApplicationStatus.REJECTED


async def record(engine: AsyncEngine, *decisions: PendingDecision) -> BatchOutcome:
    async with driver_connection(engine) as conn, conn.transaction():
        return await record_decisions(conn, consumer="test", decisions=decisions)


def decision(
    application_id: uuid.UUID,
    status: ApplicationStatus,
    score: int,
    event_id: uuid.UUID | None = None,
    *,
    income: str = "50000",
    loan: str = "200000",
) -> PendingDecision:
    """A decision made on `income` and `loan` (by default insert_application's amounts)."""
    return PendingDecision(
        event_id=event_id or uuid.uuid4(),
        application_id=application_id,
        status=status,
        cibil_score=score,
        monthly_income_inr=Decimal(income),
        loan_amount_inr=Decimal(loan),
    )


async def decisions_for(engine: AsyncEngine, *application_ids: uuid.UUID) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(Decision)
            .where(Decision.application_id.in_(application_ids))
        )
    return int(count or 0)


async def test_a_pending_application_is_decided_once(engine: AsyncEngine) -> None:
    application_id = await insert_application(engine)
    first = decision(application_id, P, 790)
    before = await fetch_application(engine, application_id)

    outcome = await record(engine, first)
    assert outcome.applied == [first]
    row = await fetch_application(engine, application_id)
    assert (row.status, row.cibil_score) == ("PRE_APPROVED", 790)
    assert row.updated_at > before.updated_at

    # The same event again, and another report for the same application, change nothing.
    again = await record(engine, first)
    assert again.duplicate_events == [first.event_id]
    assert again.applied == []
    contrary = await record(engine, decision(application_id, R, 300))
    assert contrary.already_decided == [application_id]
    after = await fetch_application(engine, application_id)
    assert (after.status, after.cibil_score, after.updated_at) == (
        "PRE_APPROVED",
        790,
        row.updated_at,
    )
    assert await decisions_for(engine, application_id) == 1


async def test_a_mixed_batch_in_one_transaction(engine: AsyncEngine) -> None:
    a = await insert_application(engine)
    b = await insert_application(engine)
    decided = await insert_application(engine, status="REJECTED", cibil_score=610)
    unknown = uuid.uuid4()
    first_a = decision(a, P, 790)
    unknown_event = decision(unknown, R, 610)

    outcome = await record(
        engine,
        first_a,
        first_a,  # the same event twice in one batch
        decision(a, R, 300),  # a second report for a in the same batch: the first wins
        decision(b, R, 640),
        decision(decided, P, 900),
        unknown_event,
    )

    # The decisions given, so that the caller can tell which of a's two reports was applied.
    assert [d.application_id for d in outcome.applied] == [a, b]
    assert outcome.applied[0] is first_a
    assert outcome.unknown_applications == {unknown}
    assert set(outcome.already_decided) == {a, decided}
    assert [
        (r.status, r.cibil_score)
        for r in [await fetch_application(engine, x) for x in (a, b, decided)]
    ] == [
        ("PRE_APPROVED", 790),
        ("REJECTED", 640),
        ("REJECTED", 610),
    ]
    assert await decisions_for(engine, a, b, decided) == 2
    async with engine.connect() as conn:
        seen = await conn.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.event_id == unknown_event.event_id)
        )
    assert seen == 0  # so a replay after the cause is fixed is applied


async def test_an_application_a_read_only_database_does_not_show_is_not_called_unknown(
    stack: StackInfo,
) -> None:
    """On a standby, connected to during a failover, an application may not be replayed yet:
    its report must wait, not go to the DLQ as naming an unknown application."""
    read_only = create_async_engine(
        stack.database_url,
        connect_args={"server_settings": {"default_transaction_read_only": "on"}},
    )
    try:
        with pytest.raises(TransientError):
            await record(read_only, decision(uuid.uuid4(), R, 610))
    finally:
        await read_only.dispose()


async def test_an_empty_batch_does_nothing(engine: AsyncEngine) -> None:
    assert await record(engine) == BatchOutcome()


@pytest.mark.parametrize(
    ("income", "loan", "applied"),
    [
        ("50000", "200000", True),
        ("50000.00", "200000.0", True),  # the same amounts, written differently
        ("50000.01", "200000", False),
        ("50000", "199999.99", False),
        ("5000000", "200000", False),
    ],
)
async def test_a_report_with_other_amounts_than_its_application_decides_nothing(
    engine: AsyncEngine, income: str, loan: str, applied: bool
) -> None:
    application_id = await insert_application(engine)  # 50,000 a month, 2,00,000 asked
    report = decision(application_id, P, 790, income=income, loan=loan)

    outcome = await record(engine, report)

    assert outcome.applied == ([report] if applied else [])
    assert outcome.contradicted == ([] if applied else [report])
    row = await fetch_application(engine, application_id)
    assert row.status == ("PRE_APPROVED" if applied else "PENDING")
    async with engine.connect() as conn:
        recorded = await conn.scalar(
            select(func.count())
            .select_from(ProcessedEvent)
            .where(ProcessedEvent.event_id == report.event_id)
        )
    assert recorded == (1 if applied else 0)


async def test_a_copy_with_other_amounts_does_not_stop_the_true_report(engine: AsyncEngine) -> None:
    application_id = await insert_application(engine)
    true = decision(application_id, P, 790)
    altered = decision(application_id, P, 790, event_id=true.event_id, loan="100")

    outcome = await record(engine, altered, true)

    assert outcome.contradicted == [altered]
    assert outcome.applied == [true]
    assert (await fetch_application(engine, application_id)).status == "PRE_APPROVED"
