"""Where the local stack lives and which ports it uses (each overridable by environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
SLF4J_RELOAD4J_VERSION = "1.7.36"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.7.1"
TOPICS = ("loan_applications_submitted", "credit_reports_generated", "loan_processing_dlq")
DB_NAME = "prequal"
DB_USER = "prequal"


def _repo_root() -> Path:
    start = Path(os.environ.get("DEVSTACK_ROOT", Path.cwd())).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "alembic.ini").exists() and (candidate / "services").is_dir():
            return candidate
    here = Path(__file__).resolve()
    for candidate in here.parents:
        if (candidate / "alembic.ini").exists():
            return candidate
    msg = "cannot find the repository root (a folder with alembic.ini and services/)"
    raise SystemExit(msg)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class StackConfig:
    root: Path = field(default_factory=_repo_root)
    pg_port: int = field(default_factory=lambda: _int_env("DEVSTACK_PG_PORT", 25432))
    kafka_port: int = field(default_factory=lambda: _int_env("DEVSTACK_KAFKA_PORT", 29092))
    controller_port: int = field(
        default_factory=lambda: _int_env("DEVSTACK_KAFKA_CONTROLLER_PORT", 29093)
    )
    api_port: int = field(default_factory=lambda: _int_env("API_PORT", 8000))
    credit_ops_port: int = field(default_factory=lambda: _int_env("CREDIT_OPS_PORT", 8101))
    decision_ops_port: int = field(default_factory=lambda: _int_env("DECISION_OPS_PORT", 8102))
    partitions: int = field(default_factory=lambda: _int_env("DEVSTACK_PARTITIONS", 3))
    external_database_url: str | None = field(
        default_factory=lambda: os.environ.get("DATABASE_URL") or None
    )
    external_kafka: str | None = field(
        default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    )

    @property
    def state(self) -> Path:
        return Path(os.environ.get("DEVSTACK_STATE_DIR") or self.root / ".devstack").resolve()

    @property
    def cache(self) -> Path:
        default = Path.home() / ".cache" / "prequal-devstack"
        return Path(os.environ.get("DEVSTACK_CACHE_DIR") or default)

    @property
    def own_database_url(self) -> str:
        return f"postgresql+asyncpg://{DB_USER}@127.0.0.1:{self.pg_port}/{DB_NAME}"

    @property
    def own_kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_external_postgres(self) -> bool:
        return self.external_database_url not in (None, self.own_database_url)

    @property
    def uses_external_kafka(self) -> bool:
        return self.external_kafka not in (None, self.own_kafka)

    @property
    def database_url(self) -> str:
        return self.external_database_url if self.uses_external_postgres else self.own_database_url  # type: ignore[return-value]

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.external_kafka if self.uses_external_kafka else self.own_kafka  # type: ignore[return-value]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service_env(self) -> dict[str, str]:
        """The settings every service process and tool gets (the `devstack env` output)."""
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "PREQUAL_API_URL": self.api_url,
            "API_PORT": str(self.api_port),
            "CREDIT_OPS_PORT": str(self.credit_ops_port),
            "DECISION_OPS_PORT": str(self.decision_ops_port),
        }
