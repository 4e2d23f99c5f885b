"""The FastAPI application: wiring of settings, database, outbox relay and routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from asgi_correlation_id import CorrelationIdMiddleware, correlation_id
from fastapi import FastAPI

from prequal_api.api.deps import CORRELATION_HEADER
from prequal_api.api.errors import install_error_handlers
from prequal_api.api.metrics import RequestMetrics
from prequal_api.api.routes import router
from prequal_api.api.schemas import MAX_BODY_BYTES
from prequal_api.domain.applications import ApplicationIntake
from prequal_api.messaging.outbox_relay import OutboxRelay
from prequal_api.persistence.writer import ApplicationWriter
from prequal_api.settings import ApiSettings
from prequal_shared.config import load_settings
from prequal_shared.db import create_engine, create_session_factory
from prequal_shared.events import MAX_CORRELATION_ID_LENGTH
from prequal_shared.kafka import create_producer
from prequal_shared.logging import configure_logging
from prequal_shared.metrics import metrics_endpoint
from prequal_shared.runtime import configure_gc_for_load

SERVICE = "prequal-api"
log = structlog.stdlib.get_logger(SERVICE)


def add_correlation_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every log line written while a request is handled carries its correlation id."""
    value = correlation_id.get()
    if value and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = value
    return event_dict


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or load_settings(ApiSettings)
    configure_logging(
        service=SERVICE,
        level=settings.log_level,
        fmt=settings.log_format,
        context=[add_correlation_id],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, application_name=SERVICE, pre_ping=False)
        sessions = create_session_factory(engine)
        producer = create_producer(settings, client_id=SERVICE)
        statements = engine.execution_options(isolation_level="AUTOCOMMIT")
        # The relay's fast-path deletions of published events, hold renewals and releases: a
        # crash that undoes one only means an event published once more (consumers recognise
        # it by id) or, for a release, held up to a minute, so their commits need not wait for
        # the disk. At 1,000/s they were a third of the commits each waiting for a flush, on
        # the one disk the applications' commits wait on. (The sweep's claims, deletions and
        # holds stay durable.)
        bookkeeping = create_engine(
            settings,
            application_name=f"{SERVICE}-relay",
            pre_ping=False,
            pool_size=2,
            wait_for_flush=False,
        )
        relay = OutboxRelay(
            sessions=sessions,
            statements=bookkeeping.execution_options(isolation_level="AUTOCOMMIT"),
            producer=producer,
            sweep_interval_s=settings.outbox_sweep_interval_s,
            batch_size=settings.outbox_batch_size,
        )
        writer = ApplicationWriter(statements, on_committed=relay.publish_soon)
        app.state.statements = statements
        app.state.relay = relay
        app.state.intake = ApplicationIntake(writer, topic=settings.topic_applications_submitted)
        stop = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(stop), name="outbox-relay")
        configure_gc_for_load()
        log.info("started", port=settings.api_port)
        try:
            yield
        finally:
            await writer.close()
            stop.set()
            await relay_task
            await producer.stop()
            await bookkeeping.dispose()
            await engine.dispose()
            log.info("stopped")

    app = FastAPI(
        title="Loan prequalification API",
        version="0.1.0",
        description=(
            "Submit a loan application and poll its status. Applications are scored "
            "(simulated CIBIL) and decided asynchronously through Kafka."
        ),
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
        # Metrics are Prometheus' (below) and no traces are exported. FastAPI's native
        # OpenTelemetry, on by default, looked up three global providers on every request
        # only to find none set (py-spy: 1.5% of the API's CPU at 2,000/s).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(router)
    install_error_handlers(app)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(RequestMetrics, excluded=frozenset({"/metrics", "/health", "/health/ready"}))

    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=CORRELATION_HEADER,
        generator=lambda: str(uuid.uuid4()),
        validator=lambda value: 0 < len(value) <= MAX_CORRELATION_ID_LENGTH and value.isprintable(),
    )
    return app
