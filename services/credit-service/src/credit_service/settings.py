from __future__ import annotations

from pydantic import Field

from prequal_shared.config import ConsumerSettings


class CreditSettings(ConsumerSettings):
    credit_consumer_group: str = Field(
        default="credit-service", description="Kafka consumer group of the credit service."
    )
    credit_ops_port: int = Field(
        default=8101,
        ge=0,
        le=65535,
        description="Port of the credit service's /health and /metrics.",
    )
