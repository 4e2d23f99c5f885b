from __future__ import annotations

from pydantic import Field

from prequal_shared.config import CommonSettings


class DecisionSettings(CommonSettings):
    decision_consumer_group: str = Field(
        default="decision-service", description="Kafka consumer group of the decision service."
    )
    decision_ops_port: int = Field(
        default=8102,
        ge=0,
        le=65535,
        description="Port of the decision service's /health and /metrics.",
    )
    ops_host: str = Field(
        default="127.0.0.1", description="Interface the consumers' ops port binds."
    )
    breaker_fail_max: int = Field(
        default=5, ge=1, description="Consecutive database failures that open the circuit breaker."
    )
    breaker_reset_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds the breaker stays open before it tries again."
    )
