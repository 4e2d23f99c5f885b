"""Request-scoped dependencies: the unit of work and what the lifespan built.

FastAPI solves every dependency of every request (py-spy: 4% of the API's CPU in that), so a
route takes few: the POST route none (it finds its intake on the app's state).

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
dependency per request (py-spy showed the hand-offs as a quarter of the API's samples).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_api.messaging.outbox_relay import OutboxRelay
from prequal_shared.db import DriverConnection, driver_connection
from prequal_shared.errors import DependencyUnavailableError, is_transient

CORRELATION_HEADER = "X-Correlation-ID"


async def get_relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.app.state.relay
    return relay


async def get_statements(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.statements
    return engine


@contextlib.asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """A database outage becomes a fast 503 instead of a 500."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise DependencyUnavailableError("the database is unavailable") from exc
        raise


@contextlib.asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[DriverConnection]:
    """asyncpg's connection, in autocommit mode: each request's work is one statement, and so
    one transaction, with no BEGIN/COMMIT round trips."""
    async with database_errors(), driver_connection(engine) as conn:
        yield conn


RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
StatementsDep = Annotated[AsyncEngine, Depends(get_statements)]
