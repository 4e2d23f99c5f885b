"""The outbox relay under a backlog, on the real PostgreSQL with a stand-in for Kafka.

The relay works on an outbox of its own (a scratch schema with an empty copy of the table),
so that its sweep cannot take the stack's real events. The producer is a fake of our own
`Producer` interface that records what it is given and acknowledges after a delay, except
where the test is about what Kafka itself answers.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from prequal_api.messaging import outbox_relay
from prequal_api.messaging.outbox_relay import MAX_QUEUED_BATCHES, OutboxRelay
from prequal_api.persistence import repository
from prequal_api.persistence.repository import OutboxMessage
from prequal_devstack.testing import StackInfo, TopicFactory, poll_until, read_topic
from prequal_shared.config import CommonSettings
from prequal_shared.db import create_session_factory
from prequal_shared.kafka import Message, Producer, create_producer

BATCH = 10


HandedOver = Callable[[Sequence[int], asyncio.Future[Any]], None]


class FakeProducer:
    def __init__(
        self, *, ack_delay_s: float | None = 0.0, ack_error: Exception | None = None
    ) -> None:
        """Acknowledges each send after `ack_delay_s`, or fails it with `ack_error`; never with
        None (a broker gone)."""
        self.started = False
        self.sent: list[bytes] = []
        self._ack_delay_s = ack_delay_s
        self._ack_error = ack_error

    async def start(self) -> None:
        self.started = True

    async def topics(self) -> set[str]:
        return {"t"}

    async def has_started(self) -> bool:
        return self.started

    async def has_sent_something(self) -> bool:
        return bool(self.sent)

    async def send(self, topic: str, *, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        assert value is not None
        self.sent.append(value)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._ack_delay_s is not None:
            if self._ack_error is None:
                asyncio.get_running_loop().call_later(self._ack_delay_s, ack.set_result, None)
            else:
                asyncio.get_running_loop().call_later(
                    self._ack_delay_s, ack.set_exception, self._ack_error
                )
        return ack

    async def send_many(
        self, messages: Sequence[Message], *, handed_over: HandedOver | None = None
    ) -> list[asyncio.Future[None]]:
        """`send` for each, under `Producer.send_many`'s contract: each reported as handed
        over; a refusal raises if nothing was handed over yet, and otherwise fails that message
        and those after it without trying them."""
        acks: list[asyncio.Future[None]] = []
        refusal: Exception | None = None
        for index, one in enumerate(messages):
            if refusal is None:
                try:
                    ack = await self.send(one.topic, value=one.value, key=one.key)
                except Exception as exc:
                    if not acks:
                        raise
                    refusal = exc
            if refusal is not None:
                ack = asyncio.get_running_loop().create_future()
                ack.set_exception(refusal)
            acks.append(ack)
            if handed_over is not None:
                handed_over([index], ack)
        return acks


@pytest.fixture
async def scratch_outbox(stack: StackInfo, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """An engine whose `outbox` is an empty table in a schema of its own."""
    schema = f"relay_test_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        await conn.execute(text(f"CREATE TABLE {schema}.outbox (LIKE public.outbox INCLUDING ALL)"))
    scratch = create_async_engine(
        stack.database_url, connect_args={"server_settings": {"search_path": schema}}
    )
    yield scratch
    await scratch.dispose()
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def relay_for(
    outbox: AsyncEngine, producer: FakeProducer | Producer, *, sweep_interval_s: float = 3600
) -> OutboxRelay:
    """By default it sweeps once, at start."""
    return OutboxRelay(
        sessions=create_session_factory(outbox),
        statements=outbox.execution_options(isolation_level="AUTOCOMMIT"),
        producer=producer,  # type: ignore[arg-type]  # a fake of the same interface
        sweep_interval_s=sweep_interval_s,
        batch_size=BATCH,
    )


def message(n: int) -> OutboxMessage:
    return OutboxMessage(
        event_id=uuid.uuid4(), topic="t", key=b"k", payload=f"fresh-{n}".encode(), headers={}
    )


async def add_backlog(
    outbox: AsyncEngine, count: int, *, topic: str = "t", minutes_ago: int = 1
) -> None:
    """Events committed `minutes_ago` and never published (Kafka was down)."""
    backlog = [
        OutboxMessage(
            event_id=uuid.uuid4(),
            topic=topic,
            key=b"k",
            payload=f"backlog-{n}".encode(),
            headers={},
        )
        for n in range(1, count + 1)
    ]
    await add_events(outbox, backlog, minutes_ago=minutes_ago)


async def add_events(
    outbox: AsyncEngine, messages: list[OutboxMessage], *, minutes_ago: int = 0
) -> None:
    """The rows of these events, as the API's writer stores them, committed `minutes_ago`
    (a millisecond apart, in order)."""
    async with outbox.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, topic, message_key, payload, headers, created_at)"
                " VALUES (:event_id, :topic, :key, :payload, '{}',"
                " now() - make_interval(mins => :minutes) + :n * interval '1 millisecond')"
            ),
            [
                {
                    "event_id": m.event_id,
                    "topic": m.topic,
                    "key": m.key,
                    "payload": m.payload,
                    "minutes": minutes_ago,
                    "n": n,
                }
                for n, m in enumerate(messages)
            ],
        )


async def unpublished(outbox: AsyncEngine) -> int:
    async with outbox.connect() as conn:
        return int(
            await conn.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")) or 0
        )


def unpublished_are(outbox: AsyncEngine, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await unpublished(outbox) == count

    return check


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(8):  # about 5 s at most, whatever Kafka does
            await task


def left_to_sweep() -> float:
    return REGISTRY.get_sample_value("prequal_outbox_left_to_sweep_total") or 0.0


async def claimable(outbox: AsyncEngine) -> int:
    """Unpublished events that no transaction holds (that another relay could claim)."""
    async with outbox.begin() as conn:
        rows = await conn.execute(
            text("SELECT event_id FROM outbox WHERE published_at IS NULL FOR UPDATE SKIP LOCKED")
        )
        return len(rows.all())


async def gone(outbox: AsyncEngine, messages: list[OutboxMessage]) -> set[bytes]:
    """The payloads of those of `messages` (all stored) that have left the outbox."""
    async with outbox.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_id FROM outbox WHERE event_id = ANY(:ids)"),
            {"ids": [m.event_id for m in messages]},
        )
        left = {row.event_id for row in rows}
    return {m.payload for m in messages if m.event_id not in left}


class StuckPartitionProducer(FakeProducer):
    """The event whose payload is b"stuck" is not acknowledged until the test says so: its
    partition cannot be written to for a while (too few in-sync replicas), and the producer
    retries its batch until it succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck_ack: asyncio.Future[None] | None = None

    async def send(self, topic: str, *, value: bytes | None, **kw: Any) -> asyncio.Future[None]:
        if value == b"stuck":
            self.sent.append(value)
            self.stuck_ack = asyncio.get_running_loop().create_future()
            return self.stuck_ack
        return await super().send(topic, value=value, **kw)


def stuck_message() -> OutboxMessage:
    return OutboxMessage(event_id=uuid.uuid4(), topic="t", key=b"k", payload=b"stuck", headers={})


async def test_an_event_leaves_the_outbox_when_acknowledged_whatever_was_sent_before_it(
    scratch_outbox: AsyncEngine,
) -> None:
    """Events sent after a stuck one, to other partitions, are acknowledged: they must be
    deleted, or the sweep would send them again."""
    stuck, after = stuck_message(), [message(n) for n in range(3)]
    await add_events(scratch_outbox, [stuck, *after])
    producer = StuckPartitionProducer()
    relay = relay_for(scratch_outbox, producer)
    left_before = left_to_sweep()
    async with running(relay):
        assert await poll_until(producer.has_started)
        relay.publish_soon([stuck, *after])  # sent as one batch, the stuck event first

        async def all_but_the_stuck_one() -> bool:
            now_gone = await gone(scratch_outbox, [stuck, *after])
            return now_gone == {b"fresh-0", b"fresh-1", b"fresh-2"}

        assert await poll_until(all_but_the_stuck_one, timeout_s=5)
        await asyncio.sleep(0.2)
        assert await all_but_the_stuck_one()
        assert producer.stuck_ack is not None
        producer.stuck_ack.set_exception(KafkaTimeoutError())  # it gives up at last

        async def counted() -> bool:
            return left_to_sweep() - left_before == 1

        assert await poll_until(counted, timeout_s=5)
    assert producer.sent == [b"stuck", b"fresh-0", b"fresh-1", b"fresh-2"]


@contextlib.asynccontextmanager
async def holding_a_stuck_event(
    outbox: AsyncEngine, *, held: bool = True
) -> AsyncIterator[tuple[OutboxRelay, StuckPartitionProducer]]:
    """A running relay whose producer holds an event unacknowledged, its row committed
    minutes ago (past the sweep's grace; the fast path sent it only now), and swept since
    (an event the fast path never had, newer, is published by then); held in the outbox."""
    producer = StuckPartitionProducer()
    relay = relay_for(outbox, producer, sweep_interval_s=0.1)
    async with running(relay):
        assert await poll_until(producer.has_started)
        stuck = stuck_message()
        relay.publish_soon([stuck])

        async def stuck_sent() -> bool:
            return b"stuck" in producer.sent

        assert await poll_until(stuck_sent, timeout_s=5, interval_s=0.01)
        await add_events(outbox, [stuck], minutes_ago=2)
        await add_backlog(outbox, 1)
        assert await poll_until(unpublished_are(outbox, 1), timeout_s=5)  # the stuck one

        async def is_held() -> bool:  # as the other processes see it
            async with outbox.connect() as conn:
                return bool(
                    await conn.scalar(
                        text("SELECT held_until > now() FROM outbox WHERE payload = 'stuck'")
                    )
                )

        # Not necessarily by the sweep that published the other: it may have renewed the
        # holds before the stuck one's row was there.
        if held:
            assert await poll_until(is_held, timeout_s=5, interval_s=0.05)
        yield relay, producer


def more_sweeps(relay: OutboxRelay, count: int) -> Callable[[], Awaitable[bool]]:
    """A check that `relay` has swept `count` more times since this was called (an absence
    asserted after them means something; after a fixed sleep on a busy host, maybe not)."""
    done = [0]
    sweep = relay.sweep

    async def counted() -> int:
        try:
            return await sweep()
        finally:
            done[0] += 1

    relay.sweep = counted  # type: ignore[method-assign]

    async def check() -> bool:
        return done[0] >= count

    return check


async def test_the_sweep_leaves_alone_events_the_fast_path_waits_on(
    scratch_outbox: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event sent by the fast path and not yet acknowledged is not the sweep's: sending it
    again is a duplicate, and its acknowledgement may be long in coming (a stuck partition),
    which would hold up the sweep of everything behind it. Without holds in the outbox (they
    keep every relay off), only the relay's own memory of what it sent keeps it off."""

    async def no_hold(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(repository, "hold", no_hold)
    async with holding_a_stuck_event(scratch_outbox, held=False) as (relay, producer):
        assert await poll_until(more_sweeps(relay, 3), timeout_s=10, interval_s=0.02)
        assert producer.sent.count(b"stuck") == 1
        assert producer.stuck_ack is not None
        producer.stuck_ack.set_result(None)

        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)


async def test_another_processs_sweep_leaves_alone_events_this_one_still_holds(
    scratch_outbox: AsyncEngine,
) -> None:
    """Two API processes: the one whose producer still holds an event unacknowledged holds
    it in the outbox too, and the other's sweep leaves it alone past the grace period (it
    used to claim it, send a copy and wait on it)."""
    other = FakeProducer()
    others_relay = relay_for(scratch_outbox, other, sweep_interval_s=0.1)
    async with (
        holding_a_stuck_event(scratch_outbox) as (relay, holder),
        running(others_relay),
    ):
        both_swept = more_sweeps(relay, 3), more_sweeps(others_relay, 3)
        for swept in both_swept:
            assert await poll_until(swept, timeout_s=10, interval_s=0.02)
        assert b"stuck" not in other.sent
        assert holder.sent.count(b"stuck") == 1
    # The holder stopped with it still unacknowledged: it lets go, and the other takes it.
    async with running(relay_for(scratch_outbox, other, sweep_interval_s=0.1)):
        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)
    assert other.sent.count(b"stuck") == 1


@pytest.mark.parametrize("release_fails_first", [False, True])
async def test_an_event_held_and_then_refused_is_swept_again_at_once(
    scratch_outbox: AsyncEngine, monkeypatch: pytest.MonkeyPatch, release_fails_first: bool
) -> None:
    """Once Kafka refuses it, the hold on an event goes: the next sweep, not one a minute
    later, sends it again; also when the database was away at the first try to release it."""
    if release_fails_first:
        release = repository.release
        calls = 0

        async def release_after_a_failure(conn: Any, event_ids: list[uuid.UUID]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("connection refused")  # PostgreSQL away for a moment
            await release(conn, event_ids)

        monkeypatch.setattr(repository, "release", release_after_a_failure)
    async with holding_a_stuck_event(scratch_outbox) as (_, producer):

        def sent_times(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return producer.sent.count(b"stuck") == n

            return check

        assert producer.stuck_ack is not None
        producer.stuck_ack.set_exception(KafkaTimeoutError())  # the producer gives up

        assert await poll_until(sent_times(2), timeout_s=5, interval_s=0.05)
        producer.stuck_ack.set_result(None)  # the copy goes through
        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)


async def test_a_swept_event_refused_while_its_sweep_commits_is_not_left_held(
    scratch_outbox: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep gave up waiting on an event and follows it up; Kafka refuses it while the
    sweep's transaction is still open. Its release cannot touch the row the sweep has locked,
    so the sweep must not hold it afterwards: nothing would renew or release that hold, and
    every relay would leave the event alone for a minute."""
    monkeypatch.setattr(outbox_relay, "SWEEP_ACK_TIMEOUT_S", 0.3)
    stuck = stuck_message()
    await add_events(scratch_outbox, [stuck], minutes_ago=1)
    producer = StuckPartitionProducer()
    delete = repository.delete_acknowledged
    refused = False

    async def refused_during_the_commit(conn: Any, event_ids: list[uuid.UUID]) -> None:
        nonlocal refused
        if not refused and producer.stuck_ack is not None and not producer.stuck_ack.done():
            refused = True
            producer.stuck_ack.set_exception(KafkaTimeoutError())
            await asyncio.sleep(0.3)  # the relay's acknowledgement handling runs meanwhile
        await delete(conn, event_ids)

    monkeypatch.setattr(repository, "delete_acknowledged", refused_during_the_commit)
    async with running(relay_for(scratch_outbox, producer, sweep_interval_s=0.1)):

        async def sent_again() -> bool:
            return producer.sent.count(b"stuck") == 2

        assert await poll_until(sent_again, timeout_s=5, interval_s=0.05)
        assert refused
        assert producer.stuck_ack is not None
        producer.stuck_ack.set_result(None)  # the copy goes through
        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)


async def test_the_fast_path_keeps_a_bounded_number_of_events_in_memory(
    scratch_outbox: AsyncEngine,
) -> None:
    producer = FakeProducer()
    relay = relay_for(scratch_outbox, producer)
    cap = MAX_QUEUED_BATCHES * BATCH
    left_before = left_to_sweep()
    async with running(relay):
        assert await poll_until(producer.has_started)
        relay.publish_soon([message(n) for n in range(cap + 50)])  # all committed at once

        async def settled() -> bool:
            await asyncio.sleep(0.2)
            return len(producer.sent) == cap

        assert await poll_until(settled, timeout_s=10)
    # The rest stays in the outbox, for the sweep, and is counted.
    assert producer.sent == [f"fresh-{n}".encode() for n in range(cap)]
    assert left_to_sweep() - left_before == 50


async def test_events_whose_publish_was_not_acknowledged_are_left_to_the_sweep(
    scratch_outbox: AsyncEngine,
) -> None:
    producer = FakeProducer(ack_error=KafkaTimeoutError())
    relay = relay_for(scratch_outbox, producer)
    left_before = left_to_sweep()
    async with running(relay):
        assert await poll_until(producer.has_started)
        relay.publish_soon([message(n) for n in range(3)])

        async def counted() -> bool:
            return left_to_sweep() - left_before == 3

        assert await poll_until(counted, timeout_s=5)
    assert len(producer.sent) == 3
    assert left_to_sweep() - left_before == 3  # and not counted again later


async def test_a_backlog_is_swept_while_fresh_events_go_out_and_a_stop_cuts_it_short(
    scratch_outbox: AsyncEngine,
) -> None:
    await add_backlog(scratch_outbox, 30 * BATCH)
    producer = FakeProducer(ack_delay_s=0.05)  # each sweep batch takes 50 ms at least
    relay = relay_for(scratch_outbox, producer)
    async with running(relay) as stop:
        assert await poll_until(producer.has_sent_something)
        relay.publish_soon([message(0)])

        async def fresh_sent() -> bool:
            return b"fresh-0" in producer.sent

        # Sent within the sweep's drain, not after the whole backlog.
        assert await poll_until(fresh_sent, timeout_s=5, interval_s=0.01)
        assert await unpublished(scratch_outbox) > 0
        stop.set()
    # Stopped before the backlog was drained; the next sweep (of any relay) has the rest.
    assert await unpublished(scratch_outbox) > 0


async def add_marked(outbox: AsyncEngine, count: int) -> None:
    """Events an earlier relay published and marked instead of deleting them (it kept them for
    a day): what an upgrade leaves behind."""
    async with outbox.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, topic, message_key, payload, headers, created_at,"
                " published_at) SELECT gen_random_uuid(), 't', 'k', 'old', '{}',"
                " now() - interval '1 hour', now() - interval '1 hour'"
                " FROM generate_series(1, :count)"
            ),
            {"count": count},
        )


async def payloads(outbox: AsyncEngine) -> list[bytes]:
    """The payloads of the events still in the outbox, sorted."""
    async with outbox.connect() as conn:
        left = await conn.execute(text("SELECT payload FROM outbox"))
        return sorted(bytes(row.payload) for row in left)


async def rows(outbox: AsyncEngine) -> int:
    async with outbox.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outbox")) or 0)


async def test_fresh_events_go_out_while_a_long_prune_runs(scratch_outbox: AsyncEngine) -> None:
    """After an upgrade, the first sweep has a day of events an earlier relay marked to delete."""
    old = 1000 * BATCH
    await add_marked(scratch_outbox, old)
    producer = FakeProducer()
    relay = relay_for(scratch_outbox, producer)
    async with running(relay):

        async def pruning() -> bool:
            return await rows(scratch_outbox) < old

        assert await poll_until(pruning, timeout_s=10, interval_s=0.01)
        relay.publish_soon([message(0)])

        async def fresh_sent() -> bool:
            return b"fresh-0" in producer.sent

        assert await poll_until(fresh_sent, timeout_s=5, interval_s=0.01)
        assert await rows(scratch_outbox) > 0  # sent while the prune was still going


async def test_the_prune_deletes_only_what_an_earlier_relay_marked(
    scratch_outbox: AsyncEngine,
) -> None:
    """Never an event not yet published: its application would never be decided."""
    await add_marked(scratch_outbox, 3 * BATCH)
    await add_backlog(scratch_outbox, 3)
    relay = relay_for(scratch_outbox, FakeProducer())
    while await relay.prune():
        pass
    assert await payloads(scratch_outbox) == [b"backlog-1", b"backlog-2", b"backlog-3"]


async def test_the_sweep_still_runs_while_fresh_events_keep_coming(
    scratch_outbox: AsyncEngine,
) -> None:
    """Events arriving as fast as they are sent do not keep the relay in its fast path for
    ever: what only the sweep can see (here, an event the fast path never had) is swept."""

    class YieldingProducer(FakeProducer):
        async def send(self, topic: str, *, value: bytes | None, **kw: Any) -> asyncio.Future[None]:
            await asyncio.sleep(0)  # as aiokafka's send does while its buffer is full
            return await super().send(topic, value=value, **kw)

    producer = YieldingProducer()
    relay = relay_for(scratch_outbox, producer, sweep_interval_s=0.1)
    feeding = True

    async def feed() -> None:
        n = 0
        while feeding:
            relay.publish_soon([message(n + i) for i in range(5)])
            n += 5
            await asyncio.sleep(0)

    async with running(relay):
        assert await poll_until(producer.has_started)
        feeder = asyncio.create_task(feed())
        try:
            await asyncio.sleep(0.3)
            await add_backlog(scratch_outbox, 1)
            assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)
        finally:
            feeding = False
            await feeder


async def test_with_kafka_gone_a_sweep_lets_go_of_its_claim(
    scratch_outbox: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ends the claim's transaction, so that the rows are not held (another relay may try
    them), and it does not send them again itself while its producer still holds them."""
    monkeypatch.setattr(outbox_relay, "SWEEP_ACK_TIMEOUT_S", 0.3)
    await add_backlog(scratch_outbox, 5)
    producer = FakeProducer(ack_delay_s=None)  # nothing is ever acknowledged
    relay = relay_for(scratch_outbox, producer, sweep_interval_s=0.1)
    async with running(relay):

        async def released() -> bool:
            return len(producer.sent) == 5 and await claimable(scratch_outbox) == 5

        assert await poll_until(released, timeout_s=10)
        await asyncio.sleep(1)  # several more sweeps
        assert len(producer.sent) == 5
    assert await unpublished(scratch_outbox) == 5


async def test_a_sweep_deletes_what_kafka_acknowledged_and_follows_up_the_rest(
    scratch_outbox: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event of the swept batch is for a partition Kafka cannot write to for a while: the
    others are deleted all the same, and that one when Kafka takes it at last,
    without being sent again meanwhile."""
    monkeypatch.setattr(outbox_relay, "SWEEP_ACK_TIMEOUT_S", 0.3)
    stuck, other = stuck_message(), message(0)
    await add_events(scratch_outbox, [stuck, other], minutes_ago=1)
    producer = StuckPartitionProducer()
    relay = relay_for(scratch_outbox, producer, sweep_interval_s=0.1)
    async with running(relay):

        async def other_deleted() -> bool:
            return await gone(scratch_outbox, [stuck, other]) == {b"fresh-0"}

        assert await poll_until(other_deleted, timeout_s=10)
        await asyncio.sleep(1)  # several more sweeps
        assert producer.sent == [b"stuck", b"fresh-0"]
        assert producer.stuck_ack is not None
        producer.stuck_ack.set_result(None)

        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=5)


async def test_with_kafka_gone_a_stop_does_not_wait_for_acknowledgements(
    scratch_outbox: AsyncEngine,
) -> None:
    await add_backlog(scratch_outbox, 5)
    producer = FakeProducer(ack_delay_s=None)
    relay = relay_for(scratch_outbox, producer)
    async with running(relay):  # stopped within its bound, long before the sweep gives up
        assert await poll_until(producer.has_sent_something)
    assert await unpublished(scratch_outbox) == 5
    assert await claimable(scratch_outbox) == 5


async def test_a_stop_during_a_sweep_still_deletes_what_kafka_then_acknowledges(
    scratch_outbox: AsyncEngine,
) -> None:
    """The stop cuts the sweep short (its claim is rolled back), but the events it sent are
    followed up like the fast path's while the relay finishes."""
    await add_backlog(scratch_outbox, 5)
    producer = FakeProducer(ack_delay_s=3.0)  # past the 2 s a stop gives the sweep
    relay = relay_for(scratch_outbox, producer)
    async with running(relay):
        assert await poll_until(producer.has_sent_something)
    assert len(producer.sent) == 5
    assert await rows(scratch_outbox) == 0


async def test_a_stop_while_a_sweep_hands_batches_over_deletes_those_handed_over(
    scratch_outbox: AsyncEngine,
) -> None:
    """aiokafka takes a partition's next batch only once its earlier one has left: the stop
    can cut the sweep short between two batches. Those handed over before it are followed up
    (deleted once acknowledged); the rest stay unpublished, for the next sweep."""

    class HandingOverSlowly(FakeProducer):
        async def send_many(
            self, messages: Sequence[Message], *, handed_over: HandedOver | None = None
        ) -> list[asyncio.Future[None]]:
            await super().send_many(messages[:2], handed_over=handed_over)
            await asyncio.Event().wait()  # the next batch waits for its partition: cut short
            raise AssertionError("unreachable")

    await add_backlog(scratch_outbox, 5)
    producer = HandingOverSlowly(ack_delay_s=1.0)
    relay = relay_for(scratch_outbox, producer)
    async with running(relay):
        assert await poll_until(producer.has_sent_something)
    assert producer.sent == [b"backlog-1", b"backlog-2"]
    assert await payloads(scratch_outbox) == [b"backlog-3", b"backlog-4", b"backlog-5"]
    assert await unpublished(scratch_outbox) == 3


async def test_events_sent_before_one_the_producer_refuses_are_still_deleted(
    scratch_outbox: AsyncEngine,
) -> None:
    """The producer refuses an event (its buffer full for too long, say): those sent before it
    in the batch are acknowledged and deleted; it and the rest are left to the sweep, and
    counted."""

    class RefusingProducer(FakeProducer):
        async def send(self, topic: str, *, value: bytes | None, **kw: Any) -> asyncio.Future[None]:
            if value == b"fresh-2":
                raise KafkaTimeoutError
            return await super().send(topic, value=value, **kw)

    batch = [message(n) for n in range(4)]
    await add_events(scratch_outbox, batch)
    producer = RefusingProducer()
    relay = relay_for(scratch_outbox, producer)
    left_before = left_to_sweep()
    async with running(relay):
        assert await poll_until(producer.has_started)
        relay.publish_soon(batch)

        async def first_two_deleted() -> bool:
            return await gone(scratch_outbox, batch) == {b"fresh-0", b"fresh-1"}

        assert await poll_until(first_two_deleted, timeout_s=5)
    assert left_to_sweep() - left_before == 2


@pytest.fixture
async def kafka_producer(stack: StackInfo) -> AsyncIterator[Producer]:
    """The real producer, for tests about what Kafka itself answers."""
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    producer = create_producer(settings, client_id="test")
    yield producer
    await producer.stop()


async def test_events_for_a_topic_kafka_lacks_do_not_hold_up_the_others(
    stack: StackInfo,
    scratch_outbox: AsyncEngine,
    topics: TopicFactory,
    kafka_producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen here: events left for a topic that no longer exists (renamed in the settings, or
    deleted) were the oldest, so every sweep claimed them first and waited for the topic."""
    monkeypatch.setattr(outbox_relay, "MISSING_TOPIC_RECHECK_S", 1.0)
    there = await topics.create("relay")
    gone = f"test.gone.{uuid.uuid4().hex[:10]}"
    await add_backlog(scratch_outbox, 2 * BATCH, topic=gone, minutes_ago=2)
    await add_backlog(scratch_outbox, 3, topic=there)
    async with running(relay_for(scratch_outbox, kafka_producer, sweep_interval_s=0.2)):
        received = await read_topic(stack.kafka_bootstrap_servers, there, count=3)
        assert sorted(record.value for record in received) == [
            b"backlog-1",
            b"backlog-2",
            b"backlog-3",
        ]
        assert await poll_until(unpublished_are(scratch_outbox, 2 * BATCH), timeout_s=10)
        # Left in the outbox, not dropped: published once the topic is back.
        await topics.create("gone", name=gone)
        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=20)
        found = await read_topic(stack.kafka_bootstrap_servers, gone, count=2 * BATCH)
        assert len(found) == 2 * BATCH


async def test_events_for_a_topic_deleted_after_use_do_not_hold_up_the_others(
    stack: StackInfo,
    scratch_outbox: AsyncEngine,
    topics: TopicFactory,
    kafka_producer: Producer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_relay, "SWEEP_ACK_TIMEOUT_S", 1.0)
    doomed = await topics.create("doomed")
    there = await topics.create("relay")
    async with running(relay_for(scratch_outbox, kafka_producer, sweep_interval_s=0.2)):
        await add_backlog(scratch_outbox, 1, topic=doomed)
        assert await poll_until(unpublished_are(scratch_outbox, 0), timeout_s=10)  # seen
        await topics.delete(doomed)
        await add_backlog(scratch_outbox, 2 * BATCH, topic=doomed, minutes_ago=2)
        await add_backlog(scratch_outbox, 3, topic=there)
        received = await read_topic(stack.kafka_bootstrap_servers, there, count=3)
        assert len(received) == 3
        assert await poll_until(unpublished_are(scratch_outbox, 2 * BATCH), timeout_s=10)
