"""Group commit: applications submitted at the same moment are stored by one statement.

Each request still waits for its own row to be committed before it answers 202, so nothing
about the guarantee changes; only the number of statements does. A request that finds no
write in flight starts one at once, so a lone request waits for nothing extra. Requests that
arrive while a write is in flight join the next one, so under load one INSERT (one parse,
one round trip, one WAL flush) serves many applications: py-spy showed the per-request
statement (SQLAlchemy's execution path and asyncpg's bind/execute) as a third of the API's
CPU.

As with one statement per request, a connection lost while the commit is under way leaves
its outcome unknown: every request of that batch gets a 503, although their rows may have
been committed (the relay then publishes them as usual). A request cancelled while it still
waits for a write is taken out of the queue, so it is not stored after all.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from prequal_api.persistence import repository
from prequal_api.persistence.repository import NewApplication, OutboxMessage
from prequal_shared.db import driver_connection
from prequal_shared.errors import DependencyUnavailableError, is_transient

log = structlog.stdlib.get_logger(__name__)

Waiting = tuple[NewApplication, asyncio.Future[None]]


class ApplicationWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: Callable[[list[OutboxMessage]], None] = lambda _: None,
        max_batch: int = 256,
        max_writes: int = 1,
    ) -> None:
        """At most `max_writes` statements are in flight at a time. Each batch is one
        statement, committed on its own (no BEGIN/COMMIT round trips), on asyncpg's connection
        from `engine`'s pool. `on_committed` gets the events of each committed batch (the
        outbox relay's fast path)."""
        self._engine = engine
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._max_writes = max_writes
        self._waiting: list[Waiting] = []
        self._writing = 0  # writer tasks that will still look at `_waiting`
        self._writers: set[asyncio.Task[None]] = set()
        # The writer tasks run in the context the writer was made in (the app's start-up:
        # the service's log fields, no request's), not in that of the request starting them.
        self._context = contextvars.copy_context()

    async def add(self, application: NewApplication) -> None:
        """Returns once the application and its event are committed; raises if they were not."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (application, done)
        self._waiting.append(entry)
        self._start_writer()
        try:
            await done
        except asyncio.CancelledError:
            # The caller will not answer 202 (uvicorn cancels what is still running when its
            # graceful shutdown times out): if its row is not being written yet, it never
            # will be, so a client retrying cannot end up with two applications.
            with contextlib.suppress(ValueError):  # already in a write: its outcome stands
                self._waiting.remove(entry)
            raise

    async def close(self) -> None:
        """Write what is waiting and wait for it (at shutdown, before the engine is disposed)."""
        while self._writers or self._waiting:
            self._start_writer()
            await asyncio.gather(*self._writers, return_exceptions=True)

    def _start_writer(self) -> None:
        if self._writing < self._max_writes:
            # Counted here and uncounted by the writer in the same step in which it finds
            # nothing left to write, so no submission can be left waiting without a writer.
            self._writing += 1
            # Its own task, so that a client hanging up cannot cancel the others' write. Not in
            # the request's context: its log lines would carry the correlation id of the
            # request that started it, whoever's applications it writes.
            writer = asyncio.create_task(
                self._write_waiting(), name="application-writer", context=self._context.copy()
            )
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                try:
                    await self._write(batch)
                except BaseException:
                    # `_write` answers every caller unless it was interrupted (cancelled):
                    # nobody is left waiting for ever.
                    _settle(batch, DependencyUnavailableError("the write was interrupted"))
                    raise
        finally:
            self._writing -= 1

    async def _write(self, batch: Sequence[Waiting]) -> None:
        try:
            async with driver_connection(self._engine) as conn:
                await repository.add_applications(conn, [application for application, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not is_transient(exc):
                # One application the database refused must not fail the others with it:
                # write them one by one, so only the culprit gets the error.
                log.warning("batch insert refused; writing one by one", error=repr(exc))
                for one in batch:
                    await self._write([one])
                return
            _settle(batch, exc)
            return
        try:
            self._on_committed([application.event for application, _ in batch])
        except Exception:
            log.exception("could not hand committed events to the relay; the sweep will")
        _settle(batch, None)


def _settle(batch: Sequence[Waiting], error: BaseException | None) -> None:
    """Answer the callers still waiting (one who hung up is no longer waiting)."""
    for _, done in batch:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
