"""Prometheus metrics of the consumers and the outbox relay, and the text every `/metrics`
serves (the API's request metrics are in `prequal_api.api.metrics`)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

MESSAGES = Counter(
    "prequal_consumer_messages_total",
    "Messages handled by a consumer, by outcome (processed, dead_lettered, retried).",
    ["consumer", "topic", "outcome"],
)
BATCH_SECONDS = Histogram(
    "prequal_consumer_batch_seconds",
    "Time to handle one fetched batch of messages (one unit of work), retries included.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "prequal_consumer_batch_size",
    "Messages per fetched batch.",
    ["consumer"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
LAG = Gauge(
    "prequal_consumer_lag",
    "Messages in the partition not yet handled by this consumer (high watermark - next offset).",
    ["consumer", "topic", "partition"],
)
ASSIGNED_PARTITIONS = Gauge(
    "prequal_consumer_assigned_partitions",
    "Partitions currently assigned to this consumer instance by its group.",
    ["consumer"],
)
PAUSED = Gauge(
    "prequal_consumer_paused",
    "1 while the consumer has paused its partitions to wait for a dependency.",
    ["consumer"],
)
BREAKER_STATE = Gauge(
    "prequal_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ["breaker"],
)
OUTBOX_BACKLOG = Gauge(
    "prequal_outbox_backlog",
    "Outbox events committed but not yet acknowledged by Kafka (as of the last sweep).",
    multiprocess_mode="mostrecent",  # every API worker measures the same table
)
OUTBOX_PUBLISHED = Counter(
    "prequal_outbox_published_total", "Outbox events published and acknowledged by Kafka."
)
OUTBOX_LEFT_TO_SWEEP = Counter(
    "prequal_outbox_left_to_sweep_total",
    "Committed events the relay's fast path did not publish (Kafka not reached yet, a send"
    " failed or was not acknowledged, too many events in memory, or published but not deleted);"
    " the sweep publishes them after its grace period.",
)


async def metrics_endpoint(_: Request) -> Response:
    """`GET /metrics`: Prometheus' text format. With several API workers each writes its own
    files (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`), summed here
    whichever worker is scraped."""
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
