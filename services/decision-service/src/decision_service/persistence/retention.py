"""Forget applied events once Kafka can no longer redeliver them.

`processed_events` gains a row per decided application (86 million a day at 1,000/s) and is
only needed while the event could come again: within the topics' retention (7 days by
default). Past that a replay (of the DLQ, say) still cannot decide twice, since only PENDING
applications move.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from decision_service.persistence.repository import forget_processed_events
from prequal_shared.errors import is_transient

log = structlog.stdlib.get_logger(__name__)


class ProcessedEventsRetention:
    """Deletes `consumer`'s records of applied events older than `retention_h`, every
    `interval_s`, in batches of `batch_size` rows (one short transaction each)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        consumer: str,
        retention_h: float,
        interval_s: float = 60.0,
        batch_size: int = 5000,
    ) -> None:
        self._sessions = sessions
        self._consumer = consumer
        self._retention_h = retention_h
        self._interval_s = interval_s
        self._batch_size = batch_size

    async def prune(self) -> int:
        """Delete everything past retention; returns how many rows went."""
        total = 0
        while True:
            async with self._sessions.begin() as session:
                deleted = await forget_processed_events(
                    session,
                    consumer=self._consumer,
                    older_than_h=self._retention_h,
                    limit=self._batch_size,
                )
            total += deleted
            if deleted < self._batch_size:
                return total

    async def run(self) -> None:
        """Prune now and every `interval_s` until cancelled; a failure waits for the next round."""
        while True:
            try:
                if forgotten := await self.prune():
                    log.info("forgot old processed events", count=forgotten)
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("pruning processed events failed")
                else:
                    log.warning("cannot prune processed events now", error=repr(exc))
            await asyncio.sleep(self._interval_s)
