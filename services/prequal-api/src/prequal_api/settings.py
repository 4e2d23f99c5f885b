from __future__ import annotations

from pydantic import Field, field_validator

from prequal_shared.config import CommonSettings

SWEEP_ACK_TIMEOUT_S = 15.0
"""The outbox relay's sweep waits this long for acknowledgements, then deletes what was
acknowledged, ends its claim's transaction and lets the relay back off; the rest is followed
up as it settles. Here, not in the relay, because a setting is checked against it."""

IDLE_IN_TRANSACTION_MARGIN_S = 5.0
"""How much longer than that wait PostgreSQL must leave a transaction idle (the sweep's
own statements and a busy host's delays come on top)."""


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
    outbox_batch_size: int = Field(
        default=500, ge=1, le=10000, description="Outbox events published per relay round."
    )

    @field_validator("db_idle_in_transaction_timeout_s")
    @classmethod
    def _outlasts_the_sweeps_wait(cls, value: float) -> float:
        # Shorter, PostgreSQL would end each sweep's transaction while it waits for a slow
        # Kafka: its deletions lost, the same events sent again every sweep.
        least = SWEEP_ACK_TIMEOUT_S + IDLE_IN_TRANSACTION_MARGIN_S
        if value < least:
            msg = (
                f"must be at least {least:g} s: the outbox sweep may wait"
                f" {SWEEP_ACK_TIMEOUT_S:g} s for Kafka inside one transaction"
            )
            raise ValueError(msg)
        return value
