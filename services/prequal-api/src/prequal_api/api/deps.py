"""Request-scoped dependencies: one transaction per request, correlation id, settings."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from prequal_api.messaging.outbox_relay import OutboxRelay
from prequal_api.settings import ApiSettings
from prequal_shared.errors import DependencyUnavailableError, is_transient

CORRELATION_HEADER = "X-Correlation-ID"


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.app.state.relay
    return relay


def get_correlation_id(request: Request) -> str:
    correlation_id: str = getattr(request.state, "correlation_id", None) or str(uuid.uuid4())
    return correlation_id


@contextlib.asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit on success, roll back on error; a database outage becomes a 503, fast."""
    try:
        async with sessions.begin() as session:
            yield session
    except Exception as exc:
        if is_transient(exc):
            raise DependencyUnavailableError("the database is unavailable") from exc
        raise


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]
CorrelationIdDep = Annotated[str, Depends(get_correlation_id)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
