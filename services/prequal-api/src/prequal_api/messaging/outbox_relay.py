"""Publishes outbox events to Kafka and marks them sent only once the broker acknowledged them.

Woken right after each commit (the fast path) and every few seconds regardless (the sweep,
which catches events left behind by a crash or a Kafka outage). Several API processes can
relay side by side: rows are claimed with SKIP LOCKED, and a rare double publication is
harmless because consumers recognise events by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import structlog
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from prequal_api.persistence import repository
from prequal_shared.errors import is_transient
from prequal_shared.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED

log = structlog.stdlib.get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        sweep_interval_s: float,
        batch_size: int,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._sweep_interval_s = sweep_interval_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._producer_started = False

    @property
    def producer_started(self) -> bool:
        return self._producer_started

    async def kafka_reachable(self, *, timeout_s: float) -> bool:
        if not self._producer_started:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.client.fetch_all_metadata()
        except Exception:
            return False
        return True

    def notify(self) -> None:
        """An event was committed: publish it now rather than at the next sweep."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        backlog_checked = 0.0
        while not stop.is_set():
            try:
                if not self._producer_started:
                    await self._producer.start()
                    self._producer_started = True
                    log.info("outbox relay connected to kafka")
                while await self.publish_batch() == self._batch_size:
                    pass
                failures = 0
                if time.monotonic() - backlog_checked >= self._sweep_interval_s:
                    backlog_checked = time.monotonic()
                    await self._measure_backlog()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("outbox relay failed")
                else:
                    log.warning("outbox relay cannot publish yet", error=repr(exc))
                failures += 1
                await self._sleep(stop, self._retry_delay(failures))
                continue
            await self._sleep(stop, self._sweep_interval_s, wake=True)

    async def publish_batch(self) -> int:
        """Publish one batch of pending events; returns how many were sent."""
        async with self._sessions.begin() as session:
            events = await repository.claim_unpublished(session, limit=self._batch_size)
            if not events:
                return 0
            acks = [
                await self._producer.send(
                    event.topic,
                    value=event.payload,
                    key=event.message_key,
                    headers=[(name, value.encode()) for name, value in event.headers.items()],
                )
                for event in events
            ]
            await asyncio.gather(*acks)
            await repository.mark_published(session, [event.event_id for event in events])
        OUTBOX_PUBLISHED.inc(len(events))
        log.debug("outbox events published", count=len(events))
        return len(events)

    async def _measure_backlog(self) -> None:
        async with self._sessions() as session:
            OUTBOX_BACKLOG.set(await repository.count_unpublished(session))

    @staticmethod
    def _retry_delay(failures: int) -> float:
        """Capped exponential backoff with full jitter: 0.2 s, 0.4 s, ... up to 10 s."""
        return random.uniform(0.1, min(10.0, 0.2 * 2 ** min(failures, 10)))  # noqa: S311

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wake: bool = False) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED), seconds
            )
        for waiter in waiters:
            waiter.cancel()
        self._wake.clear()
