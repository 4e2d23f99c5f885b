"""Stopping a consumer while the broker is down, on the real broker."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from prequal_devstack.testing import (
    StackInfo,
    TopicFactory,
    produce,
    start_and_wait_for_the_pipeline,
)
from prequal_shared.kafka import stop_consumer


async def test_a_consumer_stops_cleanly_while_its_fetch_backs_off_from_a_dead_broker(
    owned_stack: StackInfo, topics: TopicFactory
) -> None:
    source = await topics.create("source")
    await produce(owned_stack.kafka_bootstrap_servers, source, (b"k", b"m1", []))
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=owned_stack.kafka_bootstrap_servers,
        group_id=f"test-{source}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # A failed fetch waits this long before the next: stop() will find it waiting. The
        # group's coordinator lookup backs off as long, and stop() waits for that one.
        retry_backoff_ms=5_000,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            assert await consumer.getmany(timeout_ms=20_000)
        await asyncio.to_thread(owned_stack.stack.stop, "kafka")
        await asyncio.sleep(2)  # the fetcher's next request fails; it backs off

        async with asyncio.timeout(15):
            await stop_consumer(consumer)  # plain consumer.stop() raised CancelledError here
    finally:
        await start_and_wait_for_the_pipeline(owned_stack, "kafka")


async def test_a_cancelled_caller_stays_cancelled(stack: StackInfo, topics: TopicFactory) -> None:
    source = await topics.create("source")
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=stack.kafka_bootstrap_servers, group_id=f"test-{source}"
    )
    await consumer.start()
    stopping = asyncio.create_task(stop_consumer(consumer))
    await asyncio.sleep(0)  # under way: leaving the group takes a round trip to the broker
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
