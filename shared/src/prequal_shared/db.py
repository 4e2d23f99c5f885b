"""The one place engines and sessions are made. Nothing connects at import time."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from prequal_shared.config import CommonSettings


def create_engine(
    settings: CommonSettings, *, application_name: str, pre_ping: bool = True
) -> AsyncEngine:
    """An asyncpg engine that fails fast when PostgreSQL is unreachable.

    `pre_ping` tests each connection on checkout (a round trip). Without it, the first use of a
    connection that died with a restarted server fails, and SQLAlchemy then recycles the whole
    pool, so one request per outage sees the error instead of every request paying the ping.
    """
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_connect_timeout_s,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 1,
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
