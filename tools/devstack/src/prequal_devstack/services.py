"""The three services as background processes, restarted when their code changes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from prequal_devstack.config import StackConfig
from prequal_devstack.errors import StackError
from prequal_devstack.procs import kill, read_pid, spawn, tail, terminate


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port_attr: str
    health_path: str
    defaults: tuple[tuple[str, str], ...] = ()
    """Environment defaults for the local stack (the environment wins)."""

    def port(self, config: StackConfig) -> int:
        port: int = getattr(config, self.port_attr)
        return port


SPECS = {
    spec.name: spec
    for spec in (
        # One worker process, API_WORKERS' default: on 2 cores shared with everything else it
        # used less CPU per application than two and answered faster up to 1,500/s (README,
        # Performance). Two did better only at 2,000/s, where the machine is saturated anyway.
        ServiceSpec("prequal-api", "prequal_api", "api_port", "/health/ready"),
        ServiceSpec("credit-service", "credit_service", "credit_ops_port", "/health"),
        ServiceSpec(
            "decision-service",
            "decision_service",
            "decision_ops_port",
            "/health",
            # A shorter open-circuit wait than production's 60 s keeps local recovery quick.
            defaults=(("BREAKER_RESET_TIMEOUT_S", "15"),),
        ),
    )
}


def code_fingerprint(root: Path) -> str:
    """What a service would run if started now: our source, the locked dependencies, and the
    interpreter (scripts/sync-venv makes the venv again on another one; the venv's path
    stays the same)."""
    digest = hashlib.sha256()
    digest.update(f"{Path(sys.executable).resolve()} {sys.version}".encode())
    with contextlib.suppress(FileNotFoundError):
        lock = (root / "uv.lock").stat()
        digest.update(f"{lock.st_mtime_ns}:{lock.st_size}".encode())
    for folder in ("shared/src", "services"):
        for path in sorted((root / folder).rglob("*.py")):
            if "tests" in path.parts:
                continue
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


class Service:
    def __init__(self, config: StackConfig, spec: ServiceSpec, *, replica: int = 1) -> None:
        self.config = config
        self.spec = spec
        self.replica = replica
        self.name = spec.name if replica == 1 else f"{spec.name}-{replica}"
        self.pid_file = config.state / "run" / f"{self.name}.pid"
        self.fingerprint_file = config.state / "run" / f"{self.name}.code"
        """What it was started with: its code, and the servers it talks to."""
        self.log_file = config.state / "logs" / f"{self.name}.log"

    @property
    def port(self) -> int:
        # Replicas of a consumer get their own ops port: base + 10 * (replica - 1).
        return self.spec.port(self.config) + 10 * (self.replica - 1)

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def servers_fingerprint(self) -> str:
        """The PostgreSQL and Kafka it is given (hashed: the URL may hold a password)."""
        servers = f"{self.config.database_url} {self.config.kafka_bootstrap_servers}"
        return hashlib.sha256(servers.encode()).hexdigest()[:16]

    def started_with(self) -> str:
        """What `start` records in `fingerprint_file`."""
        return f"{code_fingerprint(self.config.root)} {self.servers_fingerprint()}"

    def stale(self) -> str | None:
        """Why the running process must be restarted to be what `start` would start now: its
        code, dependencies or interpreter changed, or the servers it was started against
        (DATABASE_URL, say, names the servers of a test run in containers); None if it need
        not be."""
        try:
            code, _, servers = self.fingerprint_file.read_text().strip().partition(" ")
        except OSError:
            return "code changed"
        if code != code_fingerprint(self.config.root):
            return "its code, dependencies or interpreter changed"
        if servers != self.servers_fingerprint():
            return "its PostgreSQL or Kafka changed"
        return None

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.config.service_env(), **(extra or {})}
        env.setdefault("LOG_FORMAT", "json")
        for name, value in self.spec.defaults:
            env.setdefault(name, value)
        env[self.spec.port_attr.upper()] = str(self.port)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        if self.pid():
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.fingerprint_file.write_text(self.started_with())
        spawn(
            [sys.executable, "-m", self.spec.module],
            log_file=self.log_file,
            pid_file=self.pid_file,
            env=self.env(extra_env),
            cwd=self.config.root,
        )

    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.health_path}"

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url(), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, *, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(f"{self.name} exited during start-up:\n{tail(self.log_file, 30)}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise StackError(
            f"{self.name} was not ready ({self.health_url()}) within {timeout_s:.0f}s:\n"
            f"{tail(self.log_file, 30)}"
        )

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            terminate(pid, grace_s=20, group=True)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            kill(pid, group=True)
        self.pid_file.unlink(missing_ok=True)


def replicas_of(config: StackConfig, spec: ServiceSpec) -> list[Service]:
    """Every instance of a service that has a pid file (replica 1 always included)."""
    run = config.state / "run"
    found = [Service(config, spec)]
    for pid_file in sorted(run.glob(f"{spec.name}-*.pid")) if run.exists() else []:
        suffix = pid_file.stem.removeprefix(f"{spec.name}-")
        if suffix.isdigit():
            found.append(Service(config, spec, replica=int(suffix)))
    return found
