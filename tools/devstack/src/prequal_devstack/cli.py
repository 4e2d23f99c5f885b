"""`scripts/devstack`: the local stack for development, tests and CI."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from prequal_devstack.errors import StackError
from prequal_devstack.stack import Stack

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StackError as exc:
            click.secho(f"devstack: {exc}", fg="red", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(help="Real PostgreSQL and Kafka, plus the three services, on this machine.")
def main() -> None:
    # Readiness polling expects refused connections; the client library need not shout.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@main.command(
    help="Start everything (idempotent; restarts services whose code or interpreter changed)."
)
@click.option("--no-services", is_flag=True, help="Only PostgreSQL, Kafka, topics and migrations.")
@friendly
def up(no_services: bool) -> None:
    Stack().up(with_services=not no_services)


@main.command(help="Stop everything: SIGTERM, then SIGKILL after a grace period.")
@friendly
def down() -> None:
    Stack().down()
    click.echo("stack is down")


@main.command(help="Each component with pid, port and health.")
@friendly
def status() -> None:
    rows = Stack().status()
    click.echo(f"{'COMPONENT':<20} {'STATE':<9} {'PID':>8} {'PORT':>6}  HEALTH")
    for row in rows:
        click.echo(
            f"{row.name:<20} {row.state:<9} {row.pid or '-':>8} {row.port or '-':>6}  {row.health}"
        )


@main.command(help="Start one component.")
@click.argument("name")
@click.option("--replicas", default=1, show_default=True, help="Instances of a consumer service.")
@friendly
def start(name: str, replicas: int) -> None:
    Stack().start(name, replicas=replicas)


@main.command(help="Stop one component gracefully (SIGTERM).")
@click.argument("name")
@friendly
def stop(name: str) -> None:
    Stack().stop(name)


@main.command(help="SIGKILL one component (for fault tests).")
@click.argument("name")
@friendly
def kill(name: str) -> None:
    Stack().kill(name)


@main.command(help="Show (or follow with -f) one component's log.")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "--lines", default=50, show_default=True)
@friendly
def logs(name: str, follow: bool, lines: int) -> None:
    path = Stack().config.state / "logs" / f"{name}.log"
    if not path.exists():
        raise StackError(f"no log for {name} at {path}")
    args = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(path)]
    os.execvp(args[0], args)


@main.command(help="Connection settings in .env form.")
@friendly
def env() -> None:
    for key, value in Stack().config.service_env().items():
        click.echo(f"{key}={value}")


@main.command(help="Run alembic upgrade head against the stack's database.")
@friendly
def migrate() -> None:
    Stack().migrate()


if __name__ == "__main__":
    main()
