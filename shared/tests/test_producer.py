"""The producer wrapper replaces an aiokafka producer that a fatal broker answer has stopped.

The first test runs on the real broker, the fatal answer injected into the first client;
what reaches the topic is the outcome. The others replace aiokafka's client with a small
fake, to test our own wrapper's decisions (when to swap clients, what a late answer means,
not waiting on a flush) in cases a broker cannot be made to produce on demand. One, with no
broker at all, checks the partition `send_many` picks for a key against aiokafka's own
partitioner.
"""

import asyncio
import random
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber
from aiokafka.partitioner import DefaultPartitioner

from prequal_devstack.testing import StackInfo, TopicFactory, read_topic
from prequal_shared.kafka import Message, Producer, kafka_partition


async def test_after_a_fatal_answer_the_retried_send_reaches_kafka(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """aiokafka's idempotent producer, once stopped by a fatal answer, fails every later send
    the same way: only a new client gets the retry through."""
    topic = await topics.create("producer")
    made: list[AIOKafkaProducer] = []

    def factory() -> AIOKafkaProducer:
        client = AIOKafkaProducer(
            bootstrap_servers=stack.kafka_bootstrap_servers, acks="all", enable_idempotence=True
        )
        if not made:  # the first client: b"2" gets the fatal answer, and so does all after it
            send, stopped = client.send, False

            async def until_stopped(topic: str, **message: Any) -> asyncio.Future[Any]:
                nonlocal stopped
                if stopped or message["value"] == b"2":
                    stopped = True
                    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    # Answered later, as by the broker: after the caller got the future.
                    fatal = OutOfOrderSequenceNumber()
                    asyncio.get_running_loop().call_soon(ack.set_exception, fatal)
                    return ack
                sent: asyncio.Future[Any] = await send(topic, **message)
                return sent

            client.send = until_stopped
        made.append(client)
        return client

    producer = Producer(factory)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=b"1")
        with pytest.raises(OutOfOrderSequenceNumber):
            await producer.send_and_wait(topic, value=b"2")
        await producer.send_and_wait(topic, value=b"2")  # the caller's retry
        await producer.send_and_wait(topic, value=b"3")
    finally:
        await producer.stop()

    received = await read_topic(stack.kafka_bootstrap_servers, topic, count=4, timeout_s=3)
    assert [r.value for r in received] == [b"1", b"2", b"3"]  # each once, in order


def test_kafka_partition_is_the_one_aiokafka_picks_for_the_key() -> None:
    """The native murmur2 against aiokafka's own partitioner: ids as the services key their
    messages, and raw keys of every length up to 70 bytes (murmur2 reads 4 bytes at a time
    and then the 1-3 left), over 1 to 12 partitions."""
    draw = random.Random(2026)  # the same keys every run
    keys = [str(uuid.UUID(int=draw.getrandbits(128))).encode() for _ in range(500)]
    keys += [draw.randbytes(length) for length in range(71) for _ in range(20)]
    for count in range(1, 13):
        partitions = list(range(count))
        assert [kafka_partition(key, partitions) for key in keys] == [
            DefaultPartitioner()(key, partitions, partitions) for key in keys
        ]


async def test_send_many_puts_each_message_where_send_would_in_order(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """Batches per partition: the partition `send` picks for the key, each partition's messages
    in the order given, and more than fit in one batch (16 KiB) all delivered, once each."""
    topic = await topics.create("send-many", partitions=3)
    keys = [f"application-{i}".encode() for i in range(8)]
    producer = Producer(
        lambda: AIOKafkaProducer(
            bootstrap_servers=stack.kafka_bootstrap_servers, acks="all", enable_idempotence=True
        )
    )
    await producer.start()
    try:
        for key in keys:  # one by one, as aiokafka partitions them: the reference
            await producer.send_and_wait(topic, key=key, value=b"reference")
        messages = [
            Message(
                topic=topic,
                key=keys[i % 8],
                value=b"%04d" % i + b"." * 1000,
                headers=[("n", b"%d" % i)],
            )
            for i in range(60)  # 60 kB: several batches for each partition
        ]
        acks = await producer.send_many(messages)
        assert len(acks) == 60
        assert len(set(acks)) > 3  # a future per batch, shared by its messages
        await asyncio.gather(*acks)
    finally:
        await producer.stop()

    received = await read_topic(stack.kafka_bootstrap_servers, topic, count=68, timeout_s=3)
    assert len(received) == 68
    partition_of = {r.key: r.partition for r in received if r.value == b"reference"}
    assert len(set(partition_of.values())) > 1  # the keys spread over the partitions
    batched = [r for r in received if r.value != b"reference"]
    assert all(r.partition == partition_of[r.key] for r in batched)
    for partition in set(partition_of.values()):
        numbers = [int(r.value[:4]) for r in batched if r.partition == partition]
        assert numbers == sorted(numbers)
    assert sorted(int(r.value[:4]) for r in batched) == list(range(60))
    assert all(dict(r.headers)["n"] == b"%d" % int(r.value[:4]) for r in batched)


async def test_send_many_stops_at_the_batch_kafka_refuses(
    stack: StackInfo, topics: TopicFactory
) -> None:
    """The client refuses a batch (its buffer full for too long, say): the batch handed over
    before it is delivered and its futures say so; the refused one and those after it fail,
    and are not tried. When the first batch is refused, nothing was handed over, and
    send_many raises."""
    topic = await topics.create("send-many-refused", partitions=3)
    calls, refuse_call = 0, 2

    def factory() -> AIOKafkaProducer:
        client = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers)
        send_batch = client.send_batch

        async def refusing(batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
            nonlocal calls
            calls += 1
            if calls == refuse_call:
                raise KafkaTimeoutError
            sent: asyncio.Future[Any] = await send_batch(batch, topic, partition=partition)
            return sent

        client.send_batch = refusing
        return client

    producer = Producer(factory)
    await producer.start()
    try:
        messages = [
            Message(topic=topic, key=b"%d" % i, value=b"%d" % i, headers=[]) for i in range(12)
        ]
        reported: list[tuple[list[int], bool]] = []
        acks = await producer.send_many(
            messages,
            handed_over=lambda indexes, ack: reported.append((list(indexes), ack.done())),
        )
        assert calls == 2  # three batches, one per partition: the third was not tried
        outcomes = await asyncio.gather(*acks, return_exceptions=True)
        outcome = {m.value: o for m, o in zip(messages, outcomes, strict=True)}
        refused = {value for value, o in outcome.items() if isinstance(o, KafkaTimeoutError)}
        delivered = {value for value, o in outcome.items() if not isinstance(o, BaseException)}
        assert delivered
        assert refused
        assert refused | delivered == set(outcome)
        # Each batch reported once, as handed over (pending) or refused (failed already).
        assert sorted(i for indexes, _ in reported for i in indexes) == list(range(12))
        assert [done for _, done in reported] == [False, True, True]
        refuse_call = 3  # the next client call is the first of the next send_many
        with pytest.raises(KafkaTimeoutError):
            await producer.send_many(messages)
    finally:
        await producer.stop()

    received = await read_topic(stack.kafka_bootstrap_servers, topic, count=13, timeout_s=3)
    assert {r.value for r in received} == delivered
    assert len(received) == len(delivered)


class FakeClient:
    def __init__(self, name: str, outcomes: list[BaseException | None]) -> None:
        self.name = name
        self.outcomes = outcomes
        self.started = self.stopped = False
        self.sent: list[bytes | None] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, **message: Any) -> asyncio.Future[Any]:
        self.sent.append(message["value"])
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        # Acknowledged later, as by a broker: after the caller got the future.
        if outcome is None:
            asyncio.get_running_loop().call_soon(ack.set_result, self.name)
        else:
            asyncio.get_running_loop().call_soon(ack.set_exception, outcome)
        return ack


async def test_a_fatal_answer_replaces_the_client_before_the_next_send() -> None:
    clients = [
        FakeClient("first", [None, OutOfOrderSequenceNumber()]),
        FakeClient("second", []),
    ]
    made = iter(clients)
    producer = Producer(lambda: next(made))
    await producer.start()

    assert await producer.send_and_wait("t", value=b"1") == "first"
    with pytest.raises(OutOfOrderSequenceNumber):
        await producer.send_and_wait("t", value=b"2")
    assert await producer.send_and_wait("t", value=b"2") == "second"

    await asyncio.sleep(0)  # the old client is closed aside
    assert clients[0].stopped
    assert clients[1].started
    assert clients[1].sent == [b"2"]


async def test_an_ordinary_failure_keeps_the_client() -> None:
    only = FakeClient("only", [KafkaTimeoutError(), None])
    producer = Producer(lambda: only)
    await producer.start()
    with pytest.raises(KafkaTimeoutError):
        await producer.send_and_wait("t", value=b"1")
    assert await producer.send_and_wait("t", value=b"1") == "only"
    assert not only.stopped


class UnreachableBrokerClient(FakeClient):
    """Its flush never ends, as aiokafka's idempotent producer retrying a broker that is gone."""

    flush_abandoned = False

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.flush_abandoned = True
            raise


async def test_stop_gives_up_on_a_broker_that_never_acknowledges() -> None:
    producer = Producer(lambda: UnreachableBrokerClient("a", []))
    await producer.start()
    async with asyncio.timeout(5):  # a shutdown is not held up for ever
        await producer.stop(timeout_s=0.2)


async def test_a_replacement_does_not_wait_for_the_old_client_to_flush() -> None:
    broken = UnreachableBrokerClient("first", [OutOfOrderSequenceNumber()])
    made = iter([broken, FakeClient("second", [])])
    producer = Producer(lambda: next(made))
    await producer.start()
    with pytest.raises(OutOfOrderSequenceNumber):
        await producer.send_and_wait("t", value=b"1")

    async with asyncio.timeout(1):  # not held up by the old client's endless flush
        assert await producer.send_and_wait("t", value=b"1") == "second"

    # The old client's flush goes on aside, until a stop of the producer ends it.
    await asyncio.sleep(0.05)
    assert not broken.flush_abandoned
    await producer.stop(timeout_s=0.2)
    assert broken.flush_abandoned


class HeldAckClient(FakeClient):
    """Its acknowledgements wait until the test answers them (`answer`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, [])
        self.acks: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, **message: Any) -> asyncio.Future[Any]:
        self.sent.append(message["value"])
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def answer(self, index: int, error: BaseException) -> None:
        self.acks[index].set_exception(error)
        await asyncio.sleep(0)  # its callbacks run, as when a broker answers


async def test_a_late_fatal_answer_to_a_replaced_client_keeps_its_replacement() -> None:
    first, second = HeldAckClient("first"), FakeClient("second", [])
    made = [first, second, FakeClient("third", [])]
    producer = Producer(lambda: made.pop(0))
    await producer.start()
    one = await producer.send("t", value=b"1")
    two = await producer.send("t", value=b"2")
    await first.answer(0, OutOfOrderSequenceNumber())
    with pytest.raises(OutOfOrderSequenceNumber):
        await one
    assert await producer.send_and_wait("t", value=b"3") == "second"  # replaced

    await first.answer(1, OutOfOrderSequenceNumber())  # the old client, answering late
    with pytest.raises(OutOfOrderSequenceNumber):
        await two

    assert await producer.send_and_wait("t", value=b"4") == "second"
    assert second.sent == [b"3", b"4"]
