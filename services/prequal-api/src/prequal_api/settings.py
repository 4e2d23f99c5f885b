from __future__ import annotations

from pydantic import Field, field_validator

from prequal_api.messaging.outbox_relay import SWEEP_ACK_TIMEOUT_S
from prequal_shared.config import CommonSettings


class ApiSettings(CommonSettings):
    api_host: str = Field(default="127.0.0.1", description="Interface the API listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    api_workers: int = Field(default=1, ge=1, le=32, description="uvicorn worker processes.")
    api_keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="How long an idle keep-alive connection stays open; keep it above the idle "
        "timeout of the load balancer in front.",
    )
    outbox_sweep_interval_s: float = Field(
        default=2.0, gt=0, description="How often the relay looks for events left unpublished."
    )
    outbox_retention_h: float = Field(
        default=24.0, gt=0, description="Published outbox events are deleted after this long."
    )
    outbox_batch_size: int = Field(
        default=500, ge=1, le=10000, description="Outbox events published per relay round."
    )

    @field_validator("db_idle_in_transaction_timeout_s")
    @classmethod
    def _outlasts_the_sweeps_wait(cls, value: float) -> float:
        # Shorter, PostgreSQL would end each sweep's transaction while it waits for a slow
        # Kafka: its marks lost, the same events sent again every sweep.
        if value <= SWEEP_ACK_TIMEOUT_S:
            msg = (
                f"must be more than {SWEEP_ACK_TIMEOUT_S:g} s, which the outbox sweep may wait"
                " for Kafka inside one transaction"
            )
            raise ValueError(msg)
        return value
