"""decision-service: consumes credit reports, records decisions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from decision_service.messaging.breaker import create_breaker
from decision_service.messaging.handler import DecisionHandler
from decision_service.persistence.retention import ProcessedEventsRetention
from decision_service.settings import DecisionSettings
from prequal_shared.config import load_settings
from prequal_shared.consumer import Handler
from prequal_shared.db import create_engine, create_session_factory
from prequal_shared.kafka import Producer
from prequal_shared.logging import configure_logging
from prequal_shared.runtime import ConsumerService, run, run_consumer_service

SERVICE = "decision-service"


def main() -> None:
    settings = load_settings(DecisionSettings)
    configure_logging(service=SERVICE, level=settings.log_level, fmt=settings.log_format)

    @contextlib.asynccontextmanager
    async def decision_handler(_: Producer) -> AsyncIterator[Handler]:
        engine = create_engine(settings, application_name=SERVICE)
        sessions = create_session_factory(engine)
        # The consumer group is the consumer: its events are recognised, and forgotten, as its.
        consumer = settings.decision_consumer_group
        retention = ProcessedEventsRetention(
            sessions, consumer=consumer, retention_h=settings.processed_events_retention_h
        )
        pruning = asyncio.create_task(retention.run(), name="processed-events-retention")
        try:
            yield DecisionHandler(
                engine=engine,
                breaker=create_breaker(
                    fail_max=settings.breaker_fail_max,
                    reset_timeout_s=settings.breaker_reset_timeout_s,
                ),
                consumer_name=consumer,
            )
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
            await engine.dispose()

    spec = ConsumerService(
        name=SERVICE,
        topic=settings.topic_credit_reports,
        group_id=settings.decision_consumer_group,
        ops_port=settings.decision_ops_port,
        handler=decision_handler,
    )
    run(run_consumer_service(spec, settings, ops_host=settings.ops_host))


if __name__ == "__main__":
    main()
