"""The credit handler's contract with the consume loop, with a fake of our own `Producer`: a
batch is done only once Kafka acknowledged every report, so its offsets are committed only
then."""

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from credit_service.messaging.handler import CreditReportHandler
from prequal_devstack.testing import application_event, raw_record
from prequal_shared.events import encode


class HeldProducer:
    """Hands back an acknowledgement per message that the test settles (Kafka acknowledges a
    batch per partition: one message per partition, here)."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []

    async def send_many(self, messages: list[Any], **_: Any) -> list[asyncio.Future[None]]:
        acks = [asyncio.get_running_loop().create_future() for _ in messages]
        self.acks.extend(acks)
        return acks


def submitted(n: int) -> list[Any]:
    return [
        raw_record(b"k", encode(application_event(pan=f"ABCDE{1000 + i}F")), offset=i)
        for i in range(n)
    ]


async def handling(count: int) -> tuple[asyncio.Task[Any], HeldProducer]:
    """The handler at work on `count` applications, each report sent and not yet answered."""
    producer = HeldProducer()
    handler = CreditReportHandler(producer=producer, topic="reports")  # type: ignore[arg-type]
    task = asyncio.create_task(handler(submitted(count)))
    async with asyncio.timeout(5):
        while len(producer.acks) < count:  # noqa: ASYNC110 - polling a fake
            await asyncio.sleep(0.01)
    return task, producer


async def test_a_batch_is_done_only_once_every_report_is_acknowledged() -> None:
    handling_three, producer = await handling(3)
    producer.acks[0].set_result(None)
    producer.acks[2].set_result(None)
    await asyncio.sleep(0.2)
    assert not handling_three.done()  # the second report is not acknowledged yet

    producer.acks[1].set_result(None)
    async with asyncio.timeout(5):
        assert await handling_three == {}


async def test_a_report_kafka_refuses_fails_the_batch() -> None:
    handling_two, producer = await handling(2)
    producer.acks[0].set_result(None)
    producer.acks[1].set_exception(KafkaTimeoutError())

    with pytest.raises(KafkaTimeoutError):
        async with asyncio.timeout(5):
            await handling_two
