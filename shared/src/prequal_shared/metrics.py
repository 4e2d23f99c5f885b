"""Prometheus metrics of the consumers (the API's come from prometheus-fastapi-instrumentator)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    " failed or was not acknowledged, too many events in memory, or published but not marked);"
    " the sweep publishes them after its grace period.",
)
