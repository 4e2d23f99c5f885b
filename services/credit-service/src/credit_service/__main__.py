"""credit-service: consumes submitted applications, publishes credit reports."""

from __future__ import annotations

import asyncio

import structlog

from credit_service.messaging.handler import CreditReportHandler
from credit_service.settings import CreditSettings
from prequal_shared.config import load_settings
from prequal_shared.consumer import ConsumerLoop, run_until_stopped
from prequal_shared.kafka import DeadLetterPublisher, create_consumer, create_producer
from prequal_shared.logging import configure_logging
from prequal_shared.runtime import ops_server, stop_event_on_signals

SERVICE = "credit-service"
log = structlog.stdlib.get_logger(SERVICE)


async def serve(settings: CreditSettings) -> None:
    stop = stop_event_on_signals()
    producer = create_producer(settings, client_id=SERVICE, linger_ms=2)
    consumer = create_consumer(
        settings,
        settings.topic_applications_submitted,
        group_id=settings.credit_consumer_group,
        client_id=SERVICE,
    )
    ops = ops_server(
        port=settings.credit_ops_port,
        host=settings.ops_host,
        is_healthy=lambda: not stop.is_set(),
    )
    await producer.start()
    try:
        await consumer.start()
        loop = ConsumerLoop(
            consumer=consumer,
            handler=CreditReportHandler(producer=producer, topic=settings.topic_credit_reports),
            dead_letters=DeadLetterPublisher(
                producer=producer, topic=settings.topic_dlq, consumer_name=SERVICE
            ),
        )
        ops_task = asyncio.create_task(ops.serve())
        log.info("started", topic=settings.topic_applications_submitted)
        await run_until_stopped(loop, stop, consumer=consumer)
        ops.should_exit = True
        await ops_task
    finally:
        await producer.stop()
    log.info("stopped")


def main() -> None:
    settings = load_settings(CreditSettings)
    configure_logging(service=SERVICE, level=settings.log_level, fmt=settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
