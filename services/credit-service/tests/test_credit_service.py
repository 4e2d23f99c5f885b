"""credit-service as a real process on real Kafka, with topics and a group of its own."""

import json
import uuid
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from credit_service.messaging.handler import credit_report_for
from prequal_devstack.testing import (
    StackInfo,
    TopicFactory,
    application_event,
    as_message,
    free_port,
    produce,
    read_topic,
)
from prequal_shared.events import header


async def isolated_service(
    stack: StackInfo, topics: TopicFactory, service_process: Any
) -> tuple[Any, dict[str, str]]:
    names = {
        "TOPIC_APPLICATIONS_SUBMITTED": await topics.create("applications"),
        "TOPIC_CREDIT_REPORTS": await topics.create("reports"),
        "TOPIC_DLQ": await topics.create("dlq"),
        "CREDIT_CONSUMER_GROUP": f"test-credit-{uuid.uuid4().hex[:8]}",
    }
    env = {
        **names,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "DATABASE_URL": stack.database_url,
        "CREDIT_OPS_PORT": str(free_port()),
    }
    process = service_process("credit_service", env)
    await process.wait_for_log('"started"')
    return process, names


def test_the_report_of_a_replayed_application_is_the_same_event() -> None:
    event = application_event(pan="KLMNO1234P")
    first, again = credit_report_for(event), credit_report_for(event)
    assert first.event_id == again.event_id
    assert first.payload == again.payload
    assert credit_report_for(application_event(pan="KLMNO1234P")).event_id != first.event_id


async def test_scores_applications_and_keeps_going_past_poison_then_stops_cleanly(
    stack: StackInfo, topics: TopicFactory, service_process: Any
) -> None:
    process, names = await isolated_service(stack, topics, service_process)
    good_1 = application_event(pan="ABCDE1234F")
    good_2 = application_event(pan="FGHIJ5678K", monthly_income_inr=Decimal("2083.33"))
    await produce(
        stack.kafka_bootstrap_servers,
        names["TOPIC_APPLICATIONS_SUBMITTED"],
        as_message(good_1),
        (
            b"poison",
            b'{"event_type": "loan_application_submitted", "payload": {}}',
            [("correlation_id", b"p")],
        ),
        as_message(good_2),
    )

    reports = await read_topic(
        stack.kafka_bootstrap_servers, names["TOPIC_CREDIT_REPORTS"], count=2
    )
    bodies = [json.loads(r.value) for r in reports]
    assert [(b["payload"]["application_id"], b["payload"]["cibil_score"]) for b in bodies] == [
        (str(good_1.payload.application_id), 790),
        (str(good_2.payload.application_id), 610),
    ]
    assert bodies[1]["payload"]["monthly_income_inr"] == "2083.33"
    assert bodies[0]["correlation_id"] == good_1.correlation_id
    assert header(reports[0].headers, "correlation_id") == good_1.correlation_id
    assert reports[0].key == str(good_1.payload.application_id).encode()

    [dead] = await read_topic(stack.kafka_bootstrap_servers, names["TOPIC_DLQ"], count=1)
    assert dead.key == b"poison"
    assert header(dead.headers, "dlq_source_offset") == "1"
    assert "payload" in (header(dead.headers, "dlq_error") or "")

    assert process.terminate() == 0  # SIGTERM: a clean stop
    log = process.log_text()
    assert '"consumer stopping"' in log
    assert '"stopped"' in log
    assert "ABCDE1234F" not in log
    assert "FGHIJ5678K" not in log
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap_servers, group_id=names["CREDIT_CONSUMER_GROUP"]
    )
    await consumer.start()
    try:
        committed = await consumer.committed(
            TopicPartition(names["TOPIC_APPLICATIONS_SUBMITTED"], 0)
        )
    finally:
        await consumer.stop()
    assert committed == 3
