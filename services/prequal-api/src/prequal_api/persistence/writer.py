"""Group commit: applications submitted at the same moment are stored by one statement.

Each request still waits for its own row to be committed before it answers 202, so nothing
about the guarantee changes; only the number of statements does. A request that finds no
write in flight starts one at once, so a lone request waits for nothing extra. Requests that
arrive while a write is in flight join the next one, so under load one INSERT (one parse,
one round trip, one WAL flush) serves many applications: py-spy showed the per-request
statement (SQLAlchemy's execution path and asyncpg's bind/execute) as a third of the API's
CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_api.persistence import repository
from prequal_api.persistence.repository import NewApplication, OutboxMessage
from prequal_shared.errors import is_transient

log = structlog.stdlib.get_logger(__name__)


class ApplicationWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: Callable[[list[OutboxMessage]], None] = lambda _: None,
        max_batch: int = 256,
        max_writes: int = 1,
    ) -> None:
        """`engine` must be in autocommit mode: each batch is one statement and so one
        transaction. At most `max_writes` statements are in flight at a time.
        `on_committed` gets the events of each committed batch (the outbox relay's fast path)."""
        self._engine = engine
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._max_writes = max_writes
        self._waiting: list[tuple[NewApplication, asyncio.Future[None]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def add(self, application: NewApplication) -> None:
        """Returns once the application and its event are committed; raises if they were not."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((application, done))
        if len(self._writers) < self._max_writes:
            # Its own task, so that a client hanging up cannot cancel the others' write.
            writer = asyncio.create_task(self._write_waiting(), name="application-writer")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        await done

    async def close(self) -> None:
        """Wait for the writes in flight (at shutdown, before the engine is disposed)."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            await self._write(batch)

    async def _write(self, batch: Sequence[tuple[NewApplication, asyncio.Future[None]]]) -> None:
        try:
            async with self._engine.connect() as conn:
                await repository.add_applications(conn, [application for application, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not is_transient(exc):
                # One application the database refused must not fail the others with it:
                # write them one by one, so only the culprit gets the error.
                log.warning("batch insert refused; writing one by one", error=repr(exc))
                for one in batch:
                    await self._write([one])
                return
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        self._on_committed([application.event for application, _ in batch])
        for _, done in batch:
            if not done.done():
                done.set_result(None)
