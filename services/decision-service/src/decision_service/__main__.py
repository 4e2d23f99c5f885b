"""decision-service: consumes credit reports, records decisions."""

from __future__ import annotations

import asyncio

import structlog

from decision_service.messaging.breaker import create_breaker
from decision_service.messaging.handler import DecisionHandler
from decision_service.settings import DecisionSettings
from prequal_shared.config import load_settings
from prequal_shared.consumer import ConsumerLoop, run_until_stopped
from prequal_shared.db import create_engine, create_session_factory
from prequal_shared.kafka import DeadLetterPublisher, create_consumer, create_producer
from prequal_shared.logging import configure_logging
from prequal_shared.runtime import ops_server, stop_event_on_signals

SERVICE = "decision-service"
log = structlog.stdlib.get_logger(SERVICE)


async def serve(settings: DecisionSettings) -> None:
    stop = stop_event_on_signals()
    engine = create_engine(settings, application_name=SERVICE)
    producer = create_producer(settings, client_id=SERVICE)
    consumer = create_consumer(
        settings,
        settings.topic_credit_reports,
        group_id=settings.decision_consumer_group,
        client_id=SERVICE,
    )
    handler = DecisionHandler(
        sessions=create_session_factory(engine),
        breaker=create_breaker(
            fail_max=settings.breaker_fail_max, reset_timeout_s=settings.breaker_reset_timeout_s
        ),
        consumer_name=SERVICE,
    )
    try:
        await producer.start()
        await consumer.start()
        loop = ConsumerLoop(
            consumer=consumer,
            handler=handler,
            dead_letters=DeadLetterPublisher(
                producer=producer, topic=settings.topic_dlq, consumer_name=SERVICE
            ),
        )
        ops = ops_server(
            port=settings.decision_ops_port,
            host=settings.ops_host,
            is_healthy=lambda: not stop.is_set(),
        )
        ops_task = asyncio.create_task(ops.serve())
        log.info("started", topic=settings.topic_credit_reports)
        await run_until_stopped(loop, stop, consumer=consumer)
        ops.should_exit = True
        await ops_task
    finally:
        await producer.stop()
        await engine.dispose()
    log.info("stopped")


def main() -> None:
    settings = load_settings(DecisionSettings)
    configure_logging(service=SERVICE, level=settings.log_level, fmt=settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
