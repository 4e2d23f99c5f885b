"""Request-scoped dependencies: the unit of work, the writer, correlation id, settings.

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
from prequal_api.persistence.writer import ApplicationWriter
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


async def get_writer(request: Request) -> ApplicationWriter:
    writer: ApplicationWriter = request.app.state.writer
    return writer


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
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in autocommit mode: each request's work is one statement, and so one
    transaction, with no BEGIN/COMMIT round trips."""
    async with database_errors(), engine.connect() as conn:
        yield conn


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
CorrelationIdDep = Annotated[str, Depends(get_correlation_id)]
StatementsDep = Annotated[AsyncEngine, Depends(get_statements)]
WriterDep = Annotated[ApplicationWriter, Depends(get_writer)]
