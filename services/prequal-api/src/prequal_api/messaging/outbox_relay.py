"""Publishes outbox events to Kafka; deletes each from the outbox once the broker acknowledged it.

Two paths. The fast path: right after its commit, a request hands its event to the relay in
memory; the relay hands it to the producer at once (which batches what arrives within
`linger_ms` into one request), and a second task deletes published events, many per statement,
as their acknowledgements come back. The sweep, every few seconds: events still
unpublished after a grace period (the fast path failed, Kafka was down, the process crashed
before publishing) are claimed with `FOR UPDATE SKIP LOCKED`, sent, and those acknowledged
deleted. An event the producer holds unacknowledged (Kafka away, or its partition unwritable
for a while) is deleted when Kafka takes it, and the sweep leaves it alone meanwhile: sending
it again through the same producer would only queue a copy behind it, and the relay writes
a hold on it in the outbox (`held_until`) so that other API processes' sweeps leave it alone
too. Several API processes can relay side by side; a rare double publication is harmless
because consumers recognise events by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from prequal_api.persistence import repository
from prequal_api.persistence.repository import OutboxMessage
from prequal_api.settings import SWEEP_ACK_TIMEOUT_S
from prequal_shared.db import driver_connection, driver_connection_of
from prequal_shared.errors import is_transient
from prequal_shared.kafka import Message, Producer
from prequal_shared.metrics import OUTBOX_BACKLOG, OUTBOX_LEFT_TO_SWEEP, OUTBOX_PUBLISHED
from prequal_shared.shutdown import finish_or_abandon

log = structlog.stdlib.get_logger(__name__)

SWEEP_GRACE_S = 5.0
"""An event is left to the fast path for this long before the sweep takes it over."""

HOLD_AFTER_S = 1.0
"""An event the producer still holds this long after its commit is held in the outbox too
(`held_until`), so that other API processes' sweeps leave it alone."""

HOLD_FOR_S = 60.0
"""How long such a hold lasts. The relay renews it, once a sweep interval, while the event is
in hand (sweeps are at most a sweep's wait and a back-off apart, 25 s, and a long clean-up
after an upgrade renews it too); a relay that died with events in hand lets go of them after
this."""


MISSING_TOPIC_RECHECK_S = 60.0
"""Events for a topic Kafka does not have (deleted, or renamed in the settings while events
for the old name waited) stay in the outbox, and the sweep passes over them, so that they
cannot hold up the events behind them; it asks Kafka about that topic again after this long."""

MAX_QUEUED_BATCHES = 20
"""The fast path holds at most this many batches of events in memory; past that (Kafka slow,
or a backlog being swept) committed events are left to the sweep, which reads them from the
outbox, instead of piling up in memory."""


def _refusal(acks: Sequence[asyncio.Future[Any]]) -> BaseException | None:
    """Why the producer refused some of these at once, if it did."""
    for ack in acks:
        if ack.done() and not ack.cancelled() and ack.exception() is not None:
            return ack.exception()
    return None


class OutboxRelay:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        statements: AsyncEngine,
        producer: Producer,
        sweep_interval_s: float,
        batch_size: int,
    ) -> None:
        self._sessions = sessions
        self._statements = statements
        self._producer = producer
        self._sweep_interval_s = sweep_interval_s
        self._batch_size = batch_size
        self._queue: list[OutboxMessage] = []
        # Events handed to the producer and not yet deleted or given up, by id: the sweep
        # leaves them alone. Each is queued for `_confirm` when Kafka has answered for it, in
        # the order they settle, not the order they were sent.
        self._unsettled: dict[uuid.UUID, asyncio.Future[Any]] = {}
        # A hold must not be written after the release of an event refused meanwhile.
        self._holds = asyncio.Lock()
        self._holds_renewed = -math.inf
        self._unreleased: set[uuid.UUID] = set()  # refused, their release failed: again
        self._settled: asyncio.Queue[tuple[OutboxMessage, asyncio.Future[Any]]] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._producer_started = False
        self._topics_seen: set[str] = set()
        self._topics_missing: dict[str, float] = {}  # topic -> when Kafka last lacked it

    async def kafka_reachable(self, *, timeout_s: float) -> bool:
        if not self._producer_started:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.client.fetch_all_metadata()
        except Exception:
            return False
        return True

    def publish_soon(self, messages: Sequence[OutboxMessage]) -> None:
        """Committed events: publish them now rather than at the next sweep. Until Kafka has
        been reached, and past `MAX_QUEUED_BATCHES`, events are left to the sweep."""
        room = MAX_QUEUED_BATCHES * self._batch_size - len(self._queue)
        taken = max(0, room) if self._producer_started else 0
        if taken:
            self._queue.extend(messages[:taken])
            self._wake.set()
        if len(messages) > taken:
            OUTBOX_LEFT_TO_SWEEP.inc(len(messages) - taken)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`; then finish what is in hand, briefly (about 5 s at most, for Kafka
        may be down): what is not confirmed stays unpublished in the outbox for the next sweep."""
        confirmer = asyncio.create_task(self._confirm(), name="outbox-confirm")
        try:
            relaying = asyncio.ensure_future(self._relay(stop))
            if await finish_or_abandon(relaying, stop, grace_s=2):
                relaying.result()  # raises whatever ended it
            else:
                log.warning("outbox relay stopped with a publish unacknowledged")
        finally:
            with contextlib.suppress(Exception):  # best effort; the next sweep has the rest
                async with asyncio.timeout(3):
                    if self._producer_started:
                        await self._publish_queued()
                    if waiting := [ack for ack in self._unsettled.values() if not ack.done()]:
                        await asyncio.wait(waiting)
                    await asyncio.sleep(0)  # the callbacks of those just settled
                    await self._settled.join()
            with contextlib.suppress(Exception):  # or their holds lapse after HOLD_FOR_S
                async with asyncio.timeout(1), self._holds:
                    # An acknowledged one released too: at worst a harmless duplicate.
                    if in_hand := [*self._unsettled, *self._unreleased]:
                        async with self._statements.connect() as conn:
                            await repository.release(conn, in_hand)
            confirmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await confirmer

    async def _relay(self, stop: asyncio.Event) -> None:
        failures = 0
        last_sweep = -math.inf  # the first sweep at once (monotonic time may start near 0)
        while not stop.is_set():
            try:
                if not self._producer_started:
                    await self._producer.start()
                    self._producer_started = True
                    log.info("outbox relay connected to kafka")
                await self._publish_queued()
                if time.monotonic() - last_sweep >= self._sweep_interval_s:
                    last_sweep = time.monotonic()
                    # A backlog (Kafka was down) is swept a batch at a time; what is committed
                    # meanwhile still goes out at once, and a stop is not held up by the rest.
                    while await self.sweep() == self._batch_size and not stop.is_set():
                        await self._publish_queued()
                    await self._measure_backlog()
                    # After an upgrade, deleting the day of events an older version kept takes
                    # minutes: what is committed meanwhile still goes out at once.
                    while await self.prune() == self._batch_size and not stop.is_set():
                        await self._publish_queued()
                        await self._renew_holds()
                failures = 0
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("outbox relay failed")
                else:
                    log.warning("outbox relay cannot publish yet", error=repr(exc))
                failures += 1
                await self._sleep(stop, self._retry_delay(failures))
                continue
            if not self._queue:
                await self._sleep(stop, self._sweep_interval_s, wake=True)

    async def _publish_queued(self) -> None:
        """Hand queued events to the producer; `_confirm` deletes them once acknowledged.

        Only the batches queued when it is called: under a load that Kafka only just keeps
        up with, events arrive while these are sent, and the sweep must still get its turn."""
        for _ in range(math.ceil(len(self._queue) / self._batch_size)):
            batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
            try:
                acks = await self._send(batch, self._follow_up_each(batch))
            except Exception:
                # None went out: still in the outbox, for the sweep after the grace period.
                OUTBOX_LEFT_TO_SWEEP.inc(len(batch) + len(self._queue))
                self._queue.clear()
                raise
            if refusal := _refusal(acks):
                # Some went out; the refused are followed up as such. Back off, and leave what
                # is queued to the sweep, as Kafka is not taking more for now.
                OUTBOX_LEFT_TO_SWEEP.inc(len(self._queue))
                self._queue.clear()
                raise refusal

    def _follow_up_each(
        self, messages: Sequence[OutboxMessage]
    ) -> Callable[[Sequence[int], asyncio.Future[Any]], None]:
        """For `send_many`: each message is followed up as its batch is handed over, so that
        one a stop cuts short is still deleted once Kafka acknowledges it."""

        def follow_up(indexes: Sequence[int], ack: asyncio.Future[Any]) -> None:
            for index in indexes:
                self._follow_up(messages[index], ack)

        return follow_up

    def _follow_up(self, message: OutboxMessage, ack: asyncio.Future[Any]) -> None:
        """`_confirm` deletes the event once Kafka acknowledged it; the sweep leaves it alone
        until then."""
        self._unsettled[message.event_id] = ack
        ack.add_done_callback(functools.partial(self._settle, message))

    def _settle(self, message: OutboxMessage, ack: asyncio.Future[Any]) -> None:
        self._settled.put_nowait((message, ack))

    async def _confirm(self) -> None:
        """Delete acknowledged events, everything acknowledged so far in one statement.

        An event is deleted as soon as it is acknowledged, whatever was sent before it: an
        event for a partition Kafka cannot write to for a while (too few in-sync replicas,
        say: the producer retries its batch until it succeeds) does not hold up the others'
        deletion."""
        while True:
            ready = [await self._settled.get()]
            while not self._settled.empty():
                ready.append(self._settled.get_nowait())
            acknowledged: list[OutboxMessage] = []
            failed: list[tuple[OutboxMessage, BaseException | str]] = []
            for message, ack in ready:
                error = "cancelled" if ack.cancelled() else ack.exception()
                if error is None:
                    acknowledged.append(message)
                else:
                    failed.append((message, error))
            if failed:
                log.warning(
                    "publish not acknowledged; the sweep will retry",
                    count=len(failed),
                    error=repr(failed[0][1]),
                )
                OUTBOX_LEFT_TO_SWEEP.inc(len(failed))
                # A hold written on them would keep every sweep off for a while.
                refused = [m.event_id for m, _ in failed]
                try:
                    async with self._holds, self._statements.connect() as conn:
                        await repository.release(conn, refused)
                except Exception as exc:
                    log.warning("could not release held events yet", error=repr(exc))
                    self._unreleased.update(refused)  # the next renewal releases them
            try:
                if acknowledged:
                    async with driver_connection(self._statements) as conn:
                        await repository.delete_acknowledged(
                            conn, [m.event_id for m in acknowledged]
                        )
                    OUTBOX_PUBLISHED.inc(len(acknowledged))
            except Exception as exc:
                # Published but not deleted: the sweep publishes them again (a harmless duplicate).
                log.warning("could not delete published events", error=repr(exc))
                OUTBOX_LEFT_TO_SWEEP.inc(len(acknowledged))
            finally:
                for message, ack in ready:
                    # Deleted, or the sweep's again. Only now: an event acknowledged and not
                    # yet deleted is still not the sweep's.
                    if self._unsettled.get(message.event_id) is ack:
                        del self._unsettled[message.event_id]
                    self._settled.task_done()

    async def sweep(self) -> int:
        """Publish one batch of events the fast path left behind; returns how many."""
        now = time.monotonic()
        skipped = [
            topic
            for topic, since in self._topics_missing.items()
            if now - since < MISSING_TOPIC_RECHECK_S
        ]
        await self._renew_holds()
        async with contextlib.AsyncExitStack() as holding, self._sessions.begin() as session:
            # Not those the fast path still waits on: sent already, and one that Kafka cannot
            # take yet (its partition unwritable for a while) would hold up the sweep.
            claimed = await repository.claim_unpublished(
                session,
                limit=self._batch_size,
                older_than_s=SWEEP_GRACE_S,
                skip_topics=skipped,
                skip_ids=list(self._unsettled),
            )
            if not claimed:
                return 0
            messages: list[OutboxMessage] = []
            acks: list[asyncio.Future[Any] | None] = []  # none: not handed over (yet)

            def handed_over(indexes: Sequence[int], ack: asyncio.Future[Any]) -> None:
                for index in indexes:
                    acks[index] = ack

            error: Exception | None = None
            try:
                # Not for ever while Kafka is away (aiokafka retries unacknowledged sends
                # without end): the claim's transaction would stay open, holding the rows.
                async with asyncio.timeout(SWEEP_ACK_TIMEOUT_S):
                    messages = await self._publishable(claimed)
                    acks = [None] * len(messages)
                    await self._send(messages, handed_over)
                    if sent := [ack for ack in acks if ack is not None]:
                        await asyncio.wait(sent)
            except Exception as exc:  # the timeout, or a send refused
                error = exc
            except BaseException:  # a stop: the claim is rolled back; what was sent is followed up
                for message, ack in zip(messages, acks, strict=False):
                    if ack is not None:
                        self._follow_up(message, ack)
                raise
            acknowledged, pending = self._sort_out(messages, acks)
            # In the claim's transaction (the claim began it): the deletions commit with the
            # holds below, or not at all.
            await repository.delete_acknowledged(
                await driver_connection_of(session), [m.event_id for m in acknowledged]
            )
            if pending:
                # Followed up now: held from this commit on, not from the next renewal (other
                # processes could claim them meanwhile). The lock until the commit: a release
                # of one refused from now on comes after it. One refused before (during the
                # deletion, say) was released already, which could not touch the rows this
                # transaction locks: not held, or nothing would ever renew or release it.
                await holding.enter_async_context(self._holds)
                if pending := [i for i in pending if self._in_hand(i)]:
                    await repository.hold(
                        await session.connection(), pending, older_than_s=0, for_s=HOLD_FOR_S
                    )
        OUTBOX_PUBLISHED.inc(len(acknowledged))
        if acknowledged:
            log.info("outbox sweep published events", count=len(acknowledged))
        if error is None and len(acknowledged) < len(messages):
            error = TimeoutError(f"kafka refused {len(messages) - len(acknowledged)} events")
        if error is not None:
            # Kafka away, or one of these topics deleted since it was seen: look the topics
            # up again before the next attempt, and let the relay back off.
            self._topics_seen -= {message.topic for message in messages}
            raise error
        return len(claimed)

    async def _renew_holds(self) -> None:
        """Hold in the outbox the events the producer still has, once a sweep interval: this
        relay's sweep skips them anyway, and other API processes' sweeps leave them alone.
        First, release those Kafka refused whose release failed (the database was away)."""
        due = time.monotonic() - self._holds_renewed >= self._sweep_interval_s
        if not (due or self._unreleased):
            return
        async with self._holds:
            # Not one sent again since (a sweep took it back): its new hold is live. One
            # refused and not yet settled (`_confirm` is deleting others) is released.
            if unreleased := [i for i in self._unreleased if not self._in_hand(i)]:
                async with self._statements.connect() as conn:
                    await repository.release(conn, unreleased)
            self._unreleased.clear()
            if not due:
                return
            self._holds_renewed = time.monotonic()
            in_hand = [event_id for event_id, ack in self._unsettled.items() if not ack.done()]
            if in_hand:
                async with self._statements.connect() as conn:
                    await repository.hold(
                        conn, in_hand, older_than_s=HOLD_AFTER_S, for_s=HOLD_FOR_S
                    )

    def _in_hand(self, event_id: uuid.UUID) -> bool:
        """Sent, and Kafka has not answered yet."""
        ack = self._unsettled.get(event_id)
        return ack is not None and not ack.done()

    def _sort_out(
        self, messages: list[OutboxMessage], acks: list[asyncio.Future[Any] | None]
    ) -> tuple[list[OutboxMessage], list[uuid.UUID]]:
        """The swept messages Kafka acknowledged, and the ids of those it has not answered yet
        (a partition it cannot write to for a while): these are followed up like the fast
        path's, deleted when acknowledged and left alone by the next sweeps meanwhile. Those
        refused, or never handed to the producer (no future), are the next sweep's."""
        acknowledged, pending = [], []
        for message, ack in zip(messages, acks, strict=False):
            if ack is None:
                continue
            if not ack.done():
                self._follow_up(message, ack)
                pending.append(message.event_id)
            elif not ack.cancelled() and ack.exception() is None:
                acknowledged.append(message)
        return acknowledged, pending

    async def _publishable(self, messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        """The messages whose topic Kafka has. aiokafka would wait for a missing topic until
        its request timeout, and the oldest events are claimed first, so a few events for a
        topic that is gone would stop the sweep for good."""
        unknown = {message.topic for message in messages} - self._topics_seen
        if unknown:
            found = unknown & await self._producer.topics()
            for topic in unknown - found:
                self._topics_missing[topic] = time.monotonic()
                log.error(
                    "outbox events name a topic kafka does not have; they stay unpublished",
                    topic=topic,
                    retry_in_s=MISSING_TOPIC_RECHECK_S,
                )
            for topic in found:
                self._topics_missing.pop(topic, None)
            self._topics_seen |= found
        return [message for message in messages if message.topic in self._topics_seen]

    async def _send(
        self,
        messages: Sequence[OutboxMessage],
        handed_over: Callable[[Sequence[int], asyncio.Future[Any]], None],
    ) -> list[asyncio.Future[Any]]:
        """Hand messages to the producer, batched: a future for each, that of its batch."""
        return await self._producer.send_many(
            [
                Message(
                    topic=message.topic,
                    key=message.key,
                    value=message.payload,
                    headers=[(name, value.encode()) for name, value in message.headers.items()],
                )
                for message in messages
            ],
            handed_over=handed_over,
        )

    async def prune(self) -> int:
        """Delete one batch of the events a version before this one marked published instead
        of deleting them (after an upgrade, up to a day of them)."""
        async with self._sessions.begin() as session:
            return await repository.delete_marked(session, limit=self._batch_size)

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
