from __future__ import annotations

from pydantic import Field

from prequal_shared.config import ConsumerSettings


class DecisionSettings(ConsumerSettings):
    decision_consumer_group: str = Field(
        default="decision-service",
        min_length=1,
        # Also the name under which applied events are recorded (`processed_events.consumer`,
        # 64 characters): a longer one failed every insert, and every report went to the DLQ.
        max_length=64,
        description="Kafka consumer group of the decision service (1 to 64 characters).",
    )
    decision_ops_port: int = Field(
        default=8102,
        ge=0,
        le=65535,
        description="Port of the decision service's /health and /metrics.",
    )
    breaker_fail_max: int = Field(
        default=5, ge=1, description="Consecutive database failures that open the circuit breaker."
    )
    breaker_reset_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds the breaker stays open before it tries again."
    )
    processed_events_retention_h: float = Field(
        default=168.0,
        gt=0,
        description=(
            "Records of applied events are deleted after this many hours; keep it at least the"
            " retention of the credit reports topic (Kafka's default: 168)."
        ),
    )
