"""The one place engines and sessions are made. Nothing connects at import time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from prequal_shared.config import CommonSettings
from prequal_shared.errors import TransientError


def create_engine(
    settings: CommonSettings,
    *,
    application_name: str,
    pre_ping: bool = True,
    pool_size: int | None = None,
    wait_for_flush: bool = True,
) -> AsyncEngine:
    """An asyncpg engine that fails fast when PostgreSQL is unreachable.

    Pooled connections that the server closed (a restart, a failover) are dropped at checkout
    without a round trip: asyncpg notices the close as it happens. `pre_ping` adds a real
    round trip per checkout, which also catches a connection lost silently (a partition);
    it is worth it where a checkout serves a whole batch, not on the API's hot path.

    `wait_for_flush=False` commits without waiting for the WAL to reach the disk
    (`synchronous_commit = off`): a crash of PostgreSQL or its machine can then undo the last
    fraction of a second of those commits. Only for writes whose loss is harmless (the outbox
    relay's bookkeeping: a published event's deletion undone means a republication, a release
    undone a delay until the hold lapses), never for an application or a decision.
    """
    server_settings = {} if wait_for_flush else {"synchronous_commit": "off"}
    engine = create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        # No overflow: connections opened past the pool are closed again on return, and under
        # load that meant a new connection (TCP, SSL probe, auth) for many requests. A request
        # waits for a pooled connection instead, up to pool_timeout.
        max_overflow=0,
        pool_timeout=settings.db_connect_timeout_s,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        # Errors name the statement but not its values: they hold names and PANs.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 1,
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
                # Without it, the locks of a transaction whose client vanished (its host died,
                # or the link dropped without a reset) were held until TCP keepalive gave up,
                # about two hours: every consumer that then needed those rows waited on them.
                "idle_in_transaction_session_timeout": str(
                    round(settings.db_idle_in_transaction_timeout_s * 1000)
                ),
                **server_settings,
            },
        },
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # SQLAlchemy's asyncpg adapter keeps the asyncpg connection in `_connection`.
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        # The pool discards this connection and checks out (or opens) another one.
        raise DisconnectionError("connection closed by the server")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


DriverConnection = Any
"""asyncpg's own connection (`asyncpg.Connection`; asyncpg has no type hints)."""


async def driver_connection_of(conn: AsyncConnection | AsyncSession) -> DriverConnection:
    """The asyncpg connection under a SQLAlchemy connection or session, in its transaction if
    one has begun. (SQLAlchemy begins one at its first statement: on a session that has run
    none yet, each statement on the driver commits on its own.)

    For a statement that runs once per few requests: SQLAlchemy's execution path (its
    greenlet, the statement's cache lookup, the cursor adapter, the result) cost about 100 us
    of CPU per statement, as much as asyncpg's own work (docs/performance.md, nineteenth
    look). The pool and its checks stay SQLAlchemy's.
    """
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    return (await conn.get_raw_connection()).driver_connection


@contextlib.asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[DriverConnection]:
    """A pooled connection's asyncpg connection, returned to the pool on exit. Each statement
    commits on its own, whatever the engine's isolation level (nothing begins a transaction on
    it), unless the caller opens one: `async with conn.transaction():`.

    SQLAlchemy does not know what runs on it, so its reset on return would not end a
    transaction left open, and it would pool again a connection whose statement was
    interrupted. Here such a connection is closed instead:
    - the block was interrupted (a timeout, a cancellation, a lost connection): the server
      may still be running its statement, or have begun a transaction the client never heard
      of, which the connection's next user would find itself in;
    - the block ended with the connection still in a transaction: what ran in it is not
      committed, so the block's success would be a lie, and it raises `TransientError`.
    """
    async with engine.connect() as conn:
        driver = await driver_connection_of(conn)
        try:
            yield driver
        except asyncpg.PostgresError:
            # The server answered; a transaction of the caller's was rolled back on the way out.
            if driver.is_in_transaction():
                await conn.invalidate()
            raise
        except BaseException:
            await conn.invalidate()
            raise
        if driver.is_in_transaction():
            await conn.invalidate()
            msg = "a database connection was left in a transaction: its work was not committed"
            raise TransientError(msg)
