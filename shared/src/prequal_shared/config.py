"""Settings shared by every service, read from the environment (and an optional `.env`)."""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+asyncpg://prequal@127.0.0.1:25432/prequal"
DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:29092"


class CommonSettings(BaseSettings):
    """Connection and logging settings every process needs.

    Each service subclasses this with its own fields; every field is documented in the
    README's configuration table and listed in `.env.example` (a test checks both).
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of PostgreSQL (driver postgresql+asyncpg).",
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Connections per process (at most; no overflow)."
    )
    db_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="Give up connecting to PostgreSQL after this long."
    )
    db_statement_timeout_ms: int = Field(
        default=5000, ge=100, description="Server-side timeout for any one statement."
    )
    db_idle_in_transaction_timeout_s: float = Field(
        default=60.0,
        ge=1,
        le=2_147_483,  # PostgreSQL's limit, in ms, is the largest 32-bit integer
        description=(
            "PostgreSQL ends a session left idle inside a transaction this long (a process that"
            " died or lost its link mid-transaction), releasing its locks; longer than the"
            " outbox sweep waits for Kafka inside one (15 s)."
        ),
    )

    kafka_bootstrap_servers: str = Field(
        default=DEFAULT_KAFKA_BOOTSTRAP_SERVERS,
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: str | None = Field(
        default=None, description="CA bundle to verify the brokers' certificates (SSL)."
    )

    topic_applications_submitted: str = Field(
        default="loan_applications_submitted", description="Topic of submitted applications."
    )
    topic_credit_reports: str = Field(
        default="credit_reports_generated", description="Topic of generated credit reports."
    )
    topic_dlq: str = Field(default="loan_processing_dlq", description="Dead-letter topic.")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level written to the log."
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json for machines, console for people."
    )

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            msg = "must start with postgresql+asyncpg:// (the services use asyncpg)"
            raise ValueError(msg)
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers or any(":" not in server for server in servers):
            msg = "must be a comma-separated list of host:port"
            raise ValueError(msg)
        return ",".join(servers)


class ConsumerSettings(CommonSettings):
    """Settings of both consumer services."""

    ops_host: str = Field(
        default="127.0.0.1", description="Interface the consumers' ops port binds."
    )


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Read the settings, or stop the process with a message naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        lines = [
            f"  {str(err['loc'][0]).upper() if err['loc'] else '?'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        print(f"invalid configuration for {cls.__name__}:", *lines, sep="\n", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
