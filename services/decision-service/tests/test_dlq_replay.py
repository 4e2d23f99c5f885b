"""prequal-dlq lists a dead-lettered report and replays it once its cause is fixed (real stack)."""

import asyncio
import json
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_devstack.testing import (
    StackInfo,
    as_message,
    fetch_application,
    insert_application,
    poll_until,
    produce,
    report_event,
    run_dlq_cli,
)
from prequal_shared.models import Decision


def dlq(stack: StackInfo, *args: str) -> str:
    return run_dlq_cli(stack, *args).stdout


async def test_list_show_and_replay_after_the_cause_is_fixed(
    stack: StackInfo, engine: AsyncEngine
) -> None:
    application_id = uuid.uuid4()  # not in the database yet: the report cannot be applied
    report = report_event(application_id, score=790)
    key, value, headers = as_message(report)
    await produce(stack.kafka_bootstrap_servers, "credit_reports_generated", (key, value, headers))

    async def dead_lettered() -> dict[str, str] | None:
        for line in (await asyncio.to_thread(dlq, stack, "list", "--json")).splitlines():
            entry = json.loads(line)
            if entry["key"] == str(application_id):
                return dict(entry)
        return None

    entry = await poll_until(dead_lettered, timeout_s=30, interval_s=0.5)
    assert entry is not None
    assert entry["error_type"] == "UnknownApplicationError"
    assert entry["consumer"] == "decision-service"
    assert entry["source"].startswith("credit_reports_generated[")
    listing = await asyncio.to_thread(dlq, stack, "list")
    assert entry["id"] in listing
    shown = await asyncio.to_thread(dlq, stack, "show", entry["id"])
    assert "UnknownApplicationError" in shown
    assert str(application_id) in shown
    assert f"correlation_id={report.correlation_id}" in shown

    # Fix the cause (the application now exists), then replay, twice: decided exactly once.
    await insert_application(engine, id=application_id)  # the amounts the report carries
    assert f"replayed {entry['id']}" in await asyncio.to_thread(dlq, stack, "replay", entry["id"])

    async def decided() -> str | None:
        row = await fetch_application(engine, application_id)
        return None if row.status == "PENDING" else str(row.status)

    assert await poll_until(decided, timeout_s=30) == "PRE_APPROVED"
    await asyncio.to_thread(dlq, stack, "replay", entry["id"])
    await asyncio.sleep(2)
    async with engine.connect() as conn:
        decisions = await conn.scalar(
            select(func.count())
            .select_from(Decision)
            .where(Decision.application_id == application_id)
        )
    assert decisions == 1
    row = await fetch_application(engine, application_id)
    assert (row.status, row.cibil_score) == ("PRE_APPROVED", 790)


def test_replay_of_an_unknown_id_fails_clearly(stack: StackInfo) -> None:
    result = run_dlq_cli(stack, "replay", "99:999999", check=False)
    assert result.returncode != 0
    assert "not in the DLQ: 99:999999" in result.stderr
