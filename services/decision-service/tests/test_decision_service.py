"""decision-service as a real process, with topics and a group of its own, on the real stack."""

import uuid
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_devstack.testing import (
    StackInfo,
    TopicFactory,
    as_message,
    fetch_application,
    free_port,
    insert_application,
    poll_until,
    produce,
    read_topic,
    report_event,
)
from prequal_shared.events import header
from prequal_shared.models import Decision


async def test_decides_once_dead_letters_what_cannot_succeed_and_stops_cleanly(
    stack: StackInfo, topics: TopicFactory, engine: AsyncEngine, service_process: Any
) -> None:
    reports_topic, dlq = await topics.create("reports"), await topics.create("dlq")
    group = f"test-decision-{uuid.uuid4().hex[:8]}"
    process = service_process(
        "decision_service",
        {
            "TOPIC_CREDIT_REPORTS": reports_topic,
            "TOPIC_DLQ": dlq,
            "DECISION_CONSUMER_GROUP": group,
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            "DATABASE_URL": stack.database_url,
            "DECISION_OPS_PORT": str(free_port()),
        },
    )
    await process.wait_for_log('"started"')

    approved_id = await insert_application(engine)
    review_id = await insert_application(
        engine, monthly_income_inr=Decimal("2083.33"), loan_amount_inr=Decimal("100000")
    )
    approved = report_event(approved_id, score=790)
    review = report_event(
        review_id,
        score=700,
        monthly_income_inr=Decimal("2083.33"),
        loan_amount_inr=Decimal("100000"),
    )
    unknown = report_event(uuid.uuid4(), score=700)
    contrary = report_event(approved_id, score=300)  # a second, different report: ignored
    # A report for an application still pending whose amounts are not the application's.
    forged_id = await insert_application(engine)
    forged = report_event(forged_id, score=790, loan_amount_inr=Decimal("100"))
    await produce(
        stack.kafka_bootstrap_servers,
        reports_topic,
        as_message(approved),
        (b"junk", b"\xff\xfe not json", [("correlation_id", b"junk-1")]),
        as_message(approved),  # exact duplicate
        as_message(unknown),
        as_message(contrary),
        as_message(review),
        as_message(forged),
    )

    async def decided() -> bool:
        row = await fetch_application(engine, review_id)
        return bool(row.status != "PENDING")

    assert await poll_until(decided)
    first = await fetch_application(engine, approved_id)
    second = await fetch_application(engine, review_id)
    assert (first.status, first.cibil_score) == ("PRE_APPROVED", 790)
    assert (second.status, second.cibil_score) == ("MANUAL_REVIEW", 700)
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(Decision)
            .where(Decision.application_id.in_([approved_id, review_id]))
        )
    assert count == 2

    dead = await read_topic(stack.kafka_bootstrap_servers, dlq, count=3)
    by_offset = {header(r.headers, "dlq_source_offset"): r for r in dead}
    assert set(by_offset) == {"1", "3", "6"}
    assert by_offset["1"].value == b"\xff\xfe not json"
    assert header(by_offset["1"].headers, "dlq_error_type") == "PoisonMessageError"
    assert header(by_offset["3"].headers, "dlq_error_type") == "UnknownApplicationError"
    assert header(by_offset["3"].headers, "correlation_id") == unknown.correlation_id
    assert header(by_offset["3"].headers, "dlq_source_topic") == reports_topic
    assert header(by_offset["6"].headers, "dlq_error_type") == "InconsistentEventError"
    assert (await fetch_application(engine, forged_id)).status == "PENDING"

    assert process.terminate() == 0  # SIGTERM: a clean stop
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(reports_topic, 0))
    finally:
        await consumer.stop()
    assert committed == 7
