"""The shared consume loop against the real broker, with a handler of our own (a fake is fine)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, KafkaTimeoutError
from prometheus_client import REGISTRY

from prequal_devstack.testing import (
    StackInfo,
    TopicFactory,
    delete_records,
    poll_until,
    produce,
    read_topic,
    start_and_wait_for_the_pipeline,
)
from prequal_shared.config import CommonSettings
from prequal_shared.consumer import ConsumerLoop, Handler, Record, RetryPolicy
from prequal_shared.errors import (
    PermanentError,
    PoisonMessageError,
    RetryLaterError,
    TransientError,
)
from prequal_shared.events import header
from prequal_shared.kafka import (
    DeadLetterPublisher,
    create_consumer,
    create_producer,
    stop_consumer,
)

FAST = RetryPolicy(initial_s=0.01, max_s=0.05, budget_s=0.5, pause_s=0.2)


class ScriptedHandler:
    """A batch handler of our own: fails as told for given values, records what it handled."""

    def __init__(self, failures: dict[bytes, list[Exception]]) -> None:
        self.failures = failures
        self.handled: list[bytes] = []
        self.attempts: dict[bytes, int] = {}

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        dead: dict[int, PermanentError] = {}
        done: list[bytes] = []
        for index, record in enumerate(records):
            value = record.value or b""
            self.attempts[value] = self.attempts.get(value, 0) + 1
            pending = self.failures.get(value)
            if pending:
                error = pending.pop(0)
                if isinstance(error, PermanentError):
                    dead[index] = error
                    continue
                raise error
            done.append(value)
        self.handled.extend(done)  # the batch is one unit of work: all or nothing
        return dead


@contextlib.asynccontextmanager
async def running_loop(
    stack: StackInfo,
    source: str,
    dlq: str,
    handler: Handler,
    *,
    group: str,
    stop_grace_s: float = 5.0,
    dead_letters: type[DeadLetterPublisher] = DeadLetterPublisher,
    policy: RetryPolicy = FAST,
) -> AsyncIterator[tuple[asyncio.Task[None], AIOKafkaConsumer, asyncio.Event]]:
    """A ConsumerLoop on real Kafka, stopped (and its clients closed) on exit; setting the
    yielded event stops it earlier, with the batch in hand committed."""
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    consumer = create_consumer(settings, source, group_id=group, client_id="test")
    producer = create_producer(settings, client_id="test")
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = ConsumerLoop(
        name="test",
        consumer=consumer,
        handler=handler,
        dead_letters=dead_letters(producer=producer, topic=dlq, consumer_name="test"),
        policy=policy,
        stop_grace_s=stop_grace_s,
    )
    task = asyncio.create_task(loop.run(stop))
    try:
        yield task, consumer, stop
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            await stop_consumer(consumer)
            await producer.stop()


async def topics_with(
    stack: StackInfo, topics: TopicFactory, *values: bytes, compression_type: str | None = None
) -> tuple[str, str]:
    """A fresh source topic holding `values` (no keys, no headers), and a fresh DLQ topic."""
    source, dlq = await topics.create("source"), await topics.create("dlq")
    await produce(
        stack.kafka_bootstrap_servers,
        source,
        *[(None, value, []) for value in values],
        compression_type=compression_type,
    )
    return source, dlq


async def run_loop(
    stack: StackInfo,
    source: str,
    dlq: str,
    handler: ScriptedHandler,
    *,
    until: int,
    dead_letters: type[DeadLetterPublisher] = DeadLetterPublisher,
) -> int | None:
    """Run until `until` messages were handled; returns the committed offset of partition 0."""
    group = f"test-{uuid.uuid4().hex[:8]}"
    async with running_loop(
        stack, source, dlq, handler, group=group, dead_letters=dead_letters
    ) as (task, consumer, stop):
        async with asyncio.timeout(30):
            while len(handler.handled) < until:  # noqa: ASYNC110 - polling a fake
                await asyncio.sleep(0.05)
        stop.set()
        await task
        committed: int | None = await consumer.committed(TopicPartition(source, 0))
    return committed


async def test_poison_goes_to_the_dlq_with_context_and_the_next_message_is_processed(
    stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics.create("source"), await topics.create("dlq")
    await produce(
        stack.kafka_bootstrap_servers,
        source,
        (b"k1", b"good-1", [("correlation_id", b"c-1")]),
        (b"k2", b"poison", [("correlation_id", b"c-2")]),
        (b"k3", b"good-2", []),
    )
    handler = ScriptedHandler({b"poison": [PoisonMessageError("bad schema: field x")]})

    committed = await run_loop(stack, source, dlq, handler, until=2)

    assert handler.handled == [b"good-1", b"good-2"]
    assert committed == 3
    [dead] = await read_topic(stack.kafka_bootstrap_servers, dlq, count=1)
    assert dead.value == b"poison"
    assert dead.key == b"k2"
    assert header(dead.headers, "correlation_id") == "c-2"
    assert header(dead.headers, "dlq_error") == "bad schema: field x"
    assert header(dead.headers, "dlq_error_type") == "PoisonMessageError"
    assert header(dead.headers, "dlq_source_topic") == source
    assert header(dead.headers, "dlq_source_partition") == "0"
    assert header(dead.headers, "dlq_source_offset") == "1"


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "zstd"])
async def test_batches_compressed_by_another_producer_are_handled(
    stack: StackInfo, topics: TopicFactory, codec: str
) -> None:
    """Our producers do not compress, but a producer elsewhere, or a topic's
    `compression.type`, may. Without the codec the batch could not be read at all: the
    fetch failed again and again, and the partition stood still."""
    values = [f"{codec}-{i}".encode() * 20 for i in range(3)]
    source, dlq = await topics_with(stack, topics, *values, compression_type=codec)
    handler = ScriptedHandler({})

    committed = await run_loop(stack, source, dlq, handler, until=3)

    assert handler.handled == values
    assert committed == 3


async def test_transient_failures_are_retried_in_order_and_never_dead_lettered(
    stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics_with(stack, topics, b"a", b"b", b"c")
    handler = ScriptedHandler(
        {
            b"a": [TransientError("db down"), OSError("connection refused")],
            b"b": [RetryLaterError("circuit open", retry_after=0.3)] * 2,
        }
    )

    committed = await run_loop(stack, source, dlq, handler, until=3)

    assert handler.handled == [b"a", b"b", b"c"]
    assert handler.attempts[b"a"] >= 3  # retried in place, then again with b's retries
    assert handler.attempts[b"b"] == 3
    assert handler.attempts[b"c"] == 1
    assert committed == 3
    assert await read_topic(stack.kafka_bootstrap_servers, dlq, count=1, timeout_s=2) == []


@pytest.mark.parametrize(
    "failure",
    [TransientError("db down"), RetryLaterError("circuit open", retry_after=0.1)],
    ids=["transient", "retry-later"],
)
async def test_the_offset_never_passes_a_message_not_yet_handled(
    stack: StackInfo, topics: TopicFactory, failure: Exception
) -> None:
    """While `b` keeps failing, what is committed may cover `a`, never `b` nor `c` after it:
    a restart must read `b` again. No retries in place: each attempt ends a round, which
    settles (and commits) what it handled."""
    source, dlq = await topics_with(stack, topics, b"a", b"b", b"c")
    handler = ScriptedHandler({b"b": [failure] * 1000})
    group = f"test-{uuid.uuid4().hex[:8]}"
    rounds = RetryPolicy(initial_s=0.01, max_s=0.05, budget_s=0, pause_s=0.05)
    async with running_loop(stack, source, dlq, handler, group=group, policy=rounds) as (
        _,
        consumer,
        _stop,
    ):

        async def b_retried() -> bool:
            return handler.attempts.get(b"b", 0) >= 4

        assert await poll_until(b_retried, timeout_s=30, interval_s=0.05)
        committed = await consumer.committed(TopicPartition(source, 0))
    assert handler.handled in ([], [b"a"])  # nothing after `b`, in order
    assert committed in (None, 1)  # at most past `a`, offset 0


async def test_an_unexpected_error_is_retried_then_dead_lettered(
    stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics_with(stack, topics, b"bug", b"ok")
    handler = ScriptedHandler({b"bug": [ZeroDivisionError("oops")] * 10})

    committed = await run_loop(stack, source, dlq, handler, until=1)

    assert handler.handled == [b"ok"]
    assert handler.attempts[b"bug"] >= FAST.unexpected_attempts
    assert committed == 2
    [dead] = await read_topic(stack.kafka_bootstrap_servers, dlq, count=1)
    assert header(dead.headers, "dlq_error_type") == "ZeroDivisionError"


async def test_a_rebalance_in_the_middle_of_a_batch_does_not_stop_the_consumer(
    stack: StackInfo, topics: TopicFactory
) -> None:
    bootstrap = stack.kafka_bootstrap_servers
    source, dlq = await topics.create("rebalance", partitions=3), await topics.create("dlq")
    await produce(bootstrap, source, *[(f"k{i}".encode(), f"v{i}".encode(), []) for i in range(30)])
    group = f"test-{uuid.uuid4().hex[:8]}"
    in_first_batch = asyncio.Event()
    handled: list[bytes] = []

    async def slow_first_batch(records: Sequence[Record]) -> dict[int, PermanentError]:
        if not in_first_batch.is_set():
            in_first_batch.set()
            await asyncio.sleep(8)  # the group rebalances meanwhile
        handled.extend(r.value or b"" for r in records)
        return {}

    second = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    async with running_loop(stack, source, dlq, slow_first_batch, group=group) as (
        task,
        consumer,
        _,
    ):
        try:
            await in_first_batch.wait()
            await second.start()  # joins the group: partitions move while the batch is handled
            async with asyncio.timeout(30):
                while not second.assignment():
                    await second.getmany(timeout_ms=200)
            kept = consumer.assignment()
            await asyncio.sleep(9)  # the slow batch ends, its revoked partition is not committed
            assert not task.done(), task.exception() if task.done() else None

            # Still consuming: new messages on the partitions it kept are handled.
            await produce(bootstrap, source, *[(f"k{i}".encode(), b"after", []) for i in range(30)])
            async with asyncio.timeout(30):
                while b"after" not in handled:  # noqa: ASYNC110 - polling a list
                    await asyncio.sleep(0.1)
            assert kept
            assert not task.done()
        finally:
            await second.stop()


class HangingHandler:
    """Never finishes a batch, as the credit service waiting for a broker that is gone."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.cancelled = False

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def test_a_stop_abandons_a_batch_that_cannot_finish_and_commits_nothing(
    stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics.create("source"), await topics.create("dlq")
    await produce(stack.kafka_bootstrap_servers, source, (b"k", b"m1", []))
    group = f"test-{uuid.uuid4().hex[:8]}"
    hanging = HangingHandler()
    async with running_loop(stack, source, dlq, hanging, group=group, stop_grace_s=0.5) as (
        task,
        consumer,
        stop,
    ):
        async with asyncio.timeout(30):
            await hanging.entered.wait()
        stop.set()
        async with asyncio.timeout(5):  # the grace, not for ever
            await task
        assert hanging.cancelled
        assert await consumer.committed(TopicPartition(source, 0)) is None

    # Redelivered to whoever consumes next.
    handler = ScriptedHandler({})
    async with running_loop(stack, source, dlq, handler, group=group):
        async with asyncio.timeout(30):
            while not handler.handled:  # noqa: ASYNC110 - polling a fake
                await asyncio.sleep(0.05)
    assert handler.handled == [b"m1"]


async def test_a_message_is_dead_lettered_once_while_a_later_one_in_its_batch_still_fails(
    stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics_with(stack, topics, b"bug-1", b"bug-2", b"ok")
    handler = ScriptedHandler(
        {b"bug-1": [ZeroDivisionError("one")] * 50, b"bug-2": [KeyError("two")] * 50}
    )

    committed = await run_loop(stack, source, dlq, handler, until=1)

    assert handler.handled == [b"ok"]
    assert committed == 3
    dead = await read_topic(stack.kafka_bootstrap_servers, dlq, count=10, timeout_s=3)
    # Once each: bug-1's retries were not started over while bug-2 was being retried.
    assert sorted(r.value or b"" for r in dead) == [b"bug-1", b"bug-2"]
    # Each round tries the whole batch, then the message alone.
    assert handler.attempts[b"bug-1"] <= 2 * FAST.unexpected_attempts


class DeadLettersFailingOnce(DeadLetterPublisher):
    """The real publisher, except that the first publish of b"poison-2" fails (the DLQ's
    partition briefly unavailable)."""

    failed = False

    async def publish(self, record: Record, error: BaseException) -> None:
        if record.value == b"poison-2" and not DeadLettersFailingOnce.failed:
            DeadLettersFailingOnce.failed = True
            raise KafkaTimeoutError("the DLQ is unavailable")
        await super().publish(record, error)


async def test_a_failed_dead_letter_publish_does_not_dead_letter_the_batch_again(
    stack: StackInfo, topics: TopicFactory
) -> None:
    DeadLettersFailingOnce.failed = False  # the loop makes its own instance
    source, dlq = await topics_with(stack, topics, b"poison-1", b"poison-2", b"ok")
    handler = ScriptedHandler(
        {value: [PoisonMessageError("bad")] * 5 for value in (b"poison-1", b"poison-2")}
    )

    committed = await run_loop(
        stack, source, dlq, handler, until=2, dead_letters=DeadLettersFailingOnce
    )

    assert DeadLettersFailingOnce.failed
    assert committed == 3
    dead = await read_topic(stack.kafka_bootstrap_servers, dlq, count=10, timeout_s=3)
    # poison-1 went to the DLQ before poison-2's publish failed: not again with the retry.
    assert [r.value for r in dead] == [b"poison-1", b"poison-2"]


class StopsKafkaHandler:
    """Handles its first batch, then takes the broker down before returning, so that the
    loop's offset commit finds no broker."""

    def __init__(self, stack: StackInfo) -> None:
        self.stack = stack
        self.handled = asyncio.Event()

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        await asyncio.to_thread(self.stack.stack.stop, "kafka")
        self.handled.set()
        return {}


async def test_a_stop_does_not_wait_for_an_offset_commit_the_broker_never_answers(
    owned_stack: StackInfo, topics: TopicFactory
) -> None:
    source, dlq = await topics.create("source"), await topics.create("dlq")
    await produce(owned_stack.kafka_bootstrap_servers, source, (b"k", b"m1", []))
    handler = StopsKafkaHandler(owned_stack)
    group = f"test-{uuid.uuid4().hex[:8]}"
    try:
        async with running_loop(
            owned_stack, source, dlq, handler, group=group, stop_grace_s=0.5
        ) as (task, _, stop):
            async with asyncio.timeout(60):
                await handler.handled.wait()
            await asyncio.sleep(0.5)  # the commit is under way, to a broker that is gone
            stop.set()
            async with asyncio.timeout(5):  # the grace, not until the broker is back
                await task
            await asyncio.to_thread(owned_stack.stack.start, "kafka")  # before the clients close
    finally:
        await start_and_wait_for_the_pipeline(owned_stack, "kafka")


class DependencyDown:
    """Every batch finds the dependency down for a minute."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        self.calls += 1
        raise RetryLaterError("circuit open", retry_after=60)


async def test_a_pause_outlasts_a_rebalance(stack: StackInfo, topics: TopicFactory) -> None:
    source, dlq = await topics.create("source", partitions=2), await topics.create("dlq")
    await produce(stack.kafka_bootstrap_servers, source, (b"a", b"m1", []), (b"b", b"m2", []))
    handler = DependencyDown()
    group = f"test-{uuid.uuid4().hex[:8]}"
    async with running_loop(stack, source, dlq, handler, group=group) as (_, consumer, _):
        async with asyncio.timeout(30):
            while handler.calls == 0:  # noqa: ASYNC110 - polling a fake
                await asyncio.sleep(0.05)
        # Another member joins the group and leaves it: two rebalances during the pause.
        other = AIOKafkaConsumer(
            source, bootstrap_servers=stack.kafka_bootstrap_servers, group_id=group
        )
        await other.start()
        try:
            async with asyncio.timeout(30):
                while not other.assignment():  # noqa: ASYNC110 - waiting for the rebalance
                    await asyncio.sleep(0.1)
        finally:
            await stop_consumer(other)
        async with asyncio.timeout(30):
            while len(consumer.assignment()) < 2:  # noqa: ASYNC110 - waiting for the rebalance
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # time to fetch, were the partitions not paused
        assert consumer.paused() == consumer.assignment()
    assert handler.calls == 1


@pytest.mark.parametrize("key", [b"k", None])
async def test_a_poison_message_too_large_for_the_dlq_is_dead_lettered_without_its_value(
    stack: StackInfo, topics: TopicFactory, key: bytes | None
) -> None:
    source, dlq = await topics.create("source"), await topics.create("dlq")
    big = b"x" * 1_047_500  # fits Kafka's 1 MiB limit, but not with the DLQ's headers added
    await produce(
        stack.kafka_bootstrap_servers,
        source,
        (key, big, [("correlation_id", b"c-big")]),
        (None, b"ok", []),
    )
    handler = ScriptedHandler({big: [PoisonMessageError("bad " * 1000)]})

    committed = await run_loop(stack, source, dlq, handler, until=1)

    assert committed == 2  # not held at the big message for ever
    [dead] = await read_topic(stack.kafka_bootstrap_servers, dlq, count=1)
    assert dead.value is None
    # Without a key as well, Kafka's client would refuse it: the key says where it came from.
    assert dead.key == (key or f"{source}:0:0".encode())
    assert header(dead.headers, "dlq_source_offset") == "0"
    assert header(dead.headers, "dlq_error_type") == "PoisonMessageError"
    assert (
        header(dead.headers, "dlq_value_omitted") == "value and headers, 1047505 bytes: too large"
    )


def corrupt(stack: StackInfo, topic: str, partition: int, marker: bytes) -> None:
    """Flip a byte of `marker` in the partition's log on the broker's disk: the batch holding
    it then fails its CRC check when a consumer reads it (Kafka serves it as it is stored)."""
    [segment] = (stack.stack.kafka.data / f"{topic}-{partition}").glob("*.log")
    data = segment.read_bytes()
    with segment.open("r+b") as log:
        log.seek(data.index(marker))
        log.write(b"#")


async def test_a_batch_that_cannot_be_decoded_stops_the_consumer_and_skips_nothing(
    owned_stack: StackInfo, topics: TopicFactory
) -> None:
    """aiokafka decodes a fetch partition by partition: when one batch fails (its CRC here),
    the records already taken from other partitions in that fetch are dropped, their
    positions moved past them. Fetching on, the loop could later commit past them (once a
    rebalance took the broken partition away): those applications were never handled."""
    stack = owned_stack
    source, dlq = await topics.create("source", partitions=2), await topics.create("dlq")
    good = [f"good-{i}".encode() for i in range(5)]
    bootstrap = stack.kafka_bootstrap_servers
    await produce(bootstrap, source, *[(None, value, []) for value in good], partition=0)
    await produce(bootstrap, source, (None, b"broken-on-disk", []), partition=1)
    corrupt(stack, source, 1, b"broken-on-disk")
    group = f"test-{uuid.uuid4().hex[:8]}"

    first = ScriptedHandler({})
    with pytest.raises(CorruptRecordException):
        async with running_loop(stack, source, dlq, first, group=group) as (task, _, _):
            await asyncio.wait([task], timeout=20)

    # The operator moves past the broken batch, and the consumer starts again from its
    # last commits: between them, the two runs handled every good record.
    await delete_records(bootstrap, source, 1, before=1)
    second = ScriptedHandler({})
    async with running_loop(stack, source, dlq, second, group=group):
        async with asyncio.timeout(20):
            while set(first.handled + second.handled) != set(good):  # noqa: ASYNC110
                await asyncio.sleep(0.05)


def test_a_consumer_reports_that_it_is_not_paused_from_the_start() -> None:
    """Until its first pause a scrape showed no value at all, which a dashboard or an alert
    reads as "no data"."""
    ConsumerLoop(
        consumer=None,  # not used until it runs
        handler=_never_called,
        dead_letters=None,  # type: ignore[arg-type]
        name="paused-metric-test",
    )
    paused = REGISTRY.get_sample_value(
        "prequal_consumer_paused", {"consumer": "paused-metric-test"}
    )
    assert paused == 0


async def _never_called(records: Sequence[Record]) -> dict[int, PermanentError]:
    raise AssertionError("nothing is consumed")
