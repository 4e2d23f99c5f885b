"""The whole local stack: PostgreSQL, Kafka, migrations, topics and the three services."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from prequal_devstack.config import StackConfig
from prequal_devstack.errors import StackError
from prequal_devstack.kafka import Kafka, ensure_topics, kafka_answers
from prequal_devstack.postgres import Postgres
from prequal_devstack.procs import port_open
from prequal_devstack.services import SPECS, Service, replicas_of
from prequal_shared.config import CommonSettings, load_settings

COMPONENTS = ("postgres", "kafka", *SPECS)


@dataclass
class Row:
    name: str
    state: str
    pid: int | None
    port: int | None
    health: str


def _say(message: str) -> None:
    print(message, flush=True)


class Stack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.postgres = Postgres(self.config)
        self.kafka = Kafka(self.config)

    # -- infrastructure -------------------------------------------------------------------
    def up_infra(self) -> None:
        cfg = self.config
        cfg.state.mkdir(parents=True, exist_ok=True)
        (cfg.state / ".gitignore").write_text("*\n")
        if cfg.uses_external_postgres:
            _say(f"postgres: using DATABASE_URL ({_redact(cfg.database_url)})")
        else:
            timed("postgres", self.postgres.start)
        if cfg.uses_external_kafka:
            _say(f"kafka: using KAFKA_BOOTSTRAP_SERVERS ({cfg.kafka_bootstrap_servers})")
            self.kafka.wait_ready(cfg.kafka_bootstrap_servers, timeout_s=30, own=False)
        else:
            timed("kafka", self.kafka.start)
            timed("kafka ready", lambda: self.kafka.wait_ready(cfg.kafka_bootstrap_servers))
        names = load_settings(CommonSettings)  # topic names as the services will read them
        created = asyncio.run(
            ensure_topics(
                cfg.kafka_bootstrap_servers,
                partitions=cfg.partitions,
                topics=(
                    names.topic_applications_submitted,
                    names.topic_credit_reports,
                    names.topic_dlq,
                ),
                keep_forever=names.topic_dlq,
            )
        )
        if created:
            _say(f"topics created: {', '.join(created)} ({cfg.partitions} partitions)")
        timed("migrations", self.migrate)

    def migrate(self) -> None:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(self.config.root / "alembic.ini"),
                "upgrade",
                "head",
            ],
            cwd=self.config.root,
            env=Service(self.config, SPECS["prequal-api"]).env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")

    # -- services -------------------------------------------------------------------------
    def services(self) -> list[Service]:
        return [service for spec in SPECS.values() for service in replicas_of(self.config, spec)]

    def up(self, *, with_services: bool = True) -> None:
        self.up_infra()
        if not with_services:
            return
        for spec in SPECS.values():
            for service in replicas_of(self.config, spec):
                if service.pid() and (reason := service.stale()):
                    _say(f"{service.name}: {reason}, restarting")
                    service.stop()
                if not service.pid():
                    if port_open(service.port):
                        raise StackError(
                            f"port {service.port} is taken by another program, so {service.name} "
                            "cannot start: stop it or set the port in the environment "
                            "(API_PORT, CREDIT_OPS_PORT, DECISION_OPS_PORT)"
                        )
                    service.start()
        for service in self.services():
            timed(f"{service.name} ready", service.wait_ready)
        _say(f"stack is up: API at {self.config.api_url} (docs at {self.config.api_url}/docs)")

    def down(self) -> None:
        for service in reversed(self.services()):
            service.stop()
        if not self.config.uses_external_kafka:
            self.kafka.stop()
        if not self.config.uses_external_postgres:
            self.postgres.stop()

    # -- one component --------------------------------------------------------------------
    def _target(self, name: str, replica: int = 1) -> Postgres | Kafka | Service:
        if name == "postgres":
            return self.postgres
        if name == "kafka":
            return self.kafka
        base, _, suffix = name.rpartition("-")
        if name not in SPECS and base in SPECS and suffix.isdigit():
            return Service(self.config, SPECS[base], replica=int(suffix))
        if name in SPECS:
            return Service(self.config, SPECS[name], replica=replica)
        raise StackError(f"unknown component {name!r}; one of: {', '.join(COMPONENTS)}")

    def start(self, name: str, *, replicas: int = 1) -> None:
        if name == "postgres":
            self.postgres.start()
        elif name == "kafka":
            self.kafka.start()
            self.kafka.wait_ready(self.config.kafka_bootstrap_servers)
        elif name in SPECS:
            for replica in range(1, replicas + 1):
                service = Service(self.config, SPECS[name], replica=replica)
                service.start()
            for replica in range(1, replicas + 1):
                Service(self.config, SPECS[name], replica=replica).wait_ready()
        else:
            target = self._target(name)
            assert isinstance(target, Service)
            target.start()
            target.wait_ready()

    def stop(self, name: str) -> None:
        if name in SPECS:
            for service in replicas_of(self.config, SPECS[name]):
                service.stop()
            return
        self._target(name).stop()

    def kill(self, name: str) -> None:
        self._target(name).kill()

    def status(self) -> list[Row]:
        cfg = self.config
        rows: list[Row] = []
        if cfg.uses_external_postgres:
            rows.append(Row("postgres", "external", None, None, "-"))
        else:
            pid = self.postgres.pid()
            health = "ok" if pid and self.postgres.healthy() else "down"
            rows.append(Row("postgres", "running" if pid else "stopped", pid, cfg.pg_port, health))
        if cfg.uses_external_kafka:
            rows.append(Row("kafka", "external", None, None, "-"))
        else:
            pid = self.kafka.pid()
            health = (
                "ok" if pid and asyncio.run(kafka_answers(cfg.kafka_bootstrap_servers)) else "down"
            )
            rows.append(Row("kafka", "running" if pid else "stopped", pid, cfg.kafka_port, health))
        for service in self.services():
            pid = service.pid()
            health = "ok" if pid and service.healthy() else "down"
            rows.append(
                Row(service.name, "running" if pid else "stopped", pid, service.port, health)
            )
        return rows


def timed(label: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    elapsed = time.monotonic() - started
    if elapsed > 0.5:
        _say(f"  {label}: {elapsed:.1f}s")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":")[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else url
    return url
