"""Request-scoped dependencies: the unit of work, correlation id, settings.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
dependency per request (py-spy showed the hand-offs as a quarter of the API's samples).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from asgi_correlation_id import correlation_id
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from prequal_api.messaging.outbox_relay import OutboxRelay
from prequal_api.settings import ApiSettings
from prequal_shared.errors import DependencyUnavailableError, is_transient

CORRELATION_HEADER = "X-Correlation-ID"


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.app.state.relay
    return relay


async def get_correlation_id() -> str:
    """Set by the correlation-id middleware from X-Correlation-ID (or made up) for each request."""
    return correlation_id.get() or ""


async def get_statements(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.statements
    return engine


@contextlib.asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in autocommit mode: each request's work is one statement, and so one
    transaction, with no BEGIN/COMMIT round trips. A database outage becomes a fast 503."""
    try:
        async with engine.connect() as conn:
            yield conn
    except Exception as exc:
        if is_transient(exc):
            raise DependencyUnavailableError("the database is unavailable") from exc
        raise


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
CorrelationIdDep = Annotated[str, Depends(get_correlation_id)]
StatementsDep = Annotated[AsyncEngine, Depends(get_statements)]
