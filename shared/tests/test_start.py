"""Told to stop while a Kafka client waits: to start (Kafka unreachable, or a group that cannot
hand out partitions) or for a fetch."""

import asyncio
import time
from collections.abc import Sequence

from structlog.testing import capture_logs

from prequal_devstack.testing import free_port, poll_until
from prequal_shared.config import CommonSettings
from prequal_shared.consumer import ConsumerLoop, Record
from prequal_shared.errors import PermanentError
from prequal_shared.kafka import create_consumer, stop_consumer
from prequal_shared.runtime import _start_with_retries


async def test_a_stop_cuts_the_back_off_short() -> None:
    """The third attempt's back-off is 2 to 2.5 s (10 s later on): a SIGTERM waited it out."""
    settings = CommonSettings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    consumer = create_consumer(settings, "t", group_id="g", client_id="start-test")
    stop = asyncio.Event()
    with capture_logs() as logs:
        starting = asyncio.create_task(_start_with_retries(consumer, stop))

        async def third_attempt_failed() -> bool:
            return any(line.get("attempt") == 3 for line in logs)

        assert await poll_until(third_attempt_failed, timeout_s=15, interval_s=0.01)
        await asyncio.sleep(0.2)  # the third attempt fails at once: Kafka's port is closed
        stop.set()
        stopped_at = time.monotonic()
        async with asyncio.timeout(5):
            assert await starting is False
    assert time.monotonic() - stopped_at < 0.5
    await stop_consumer(consumer)


class NeverStarts:
    """A client whose start waits for ever, as a consumer's does for partitions while its
    group cannot finish a rebalance."""

    async def start(self) -> None:
        await asyncio.Event().wait()


async def test_a_stop_cuts_a_start_that_waits_for_ever_short() -> None:
    stop = asyncio.Event()
    starting = asyncio.create_task(_start_with_retries(NeverStarts(), stop))
    await asyncio.sleep(0.2)
    assert not starting.done()
    stop.set()
    async with asyncio.timeout(1):
        assert await starting is False


class FetchWaitsForEver:
    """A consumer whose fetch waits for ever, as aiokafka's does for the next assignment while
    its group cannot finish a rebalance (the coordinator gone)."""

    async def getmany(self, **_: object) -> dict[object, list[object]]:
        await asyncio.Event().wait()
        return {}


async def test_a_stop_cuts_a_fetch_that_waits_for_ever_short() -> None:
    async def handler(records: Sequence[Record]) -> dict[int, PermanentError]:
        raise AssertionError("nothing was fetched")

    loop = ConsumerLoop(
        consumer=FetchWaitsForEver(),
        handler=handler,
        dead_letters=None,  # type: ignore[arg-type]  # nothing to dead-letter
        name="stop-test",
    )
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.2)
    assert not running.done()
    stop.set()
    async with asyncio.timeout(1):
        await running


class Unreachable:
    """A client whose every start fails as one does with Kafka's port closed."""

    def __init__(self) -> None:
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        raise ConnectionRefusedError


async def test_no_attempt_is_made_once_stopped_during_the_back_off() -> None:
    client, stop = Unreachable(), asyncio.Event()
    starting = asyncio.create_task(_start_with_retries(client, stop))

    async def failed_once() -> bool:
        return client.starts == 1

    assert await poll_until(failed_once, timeout_s=5, interval_s=0.01)
    stop.set()  # during the first back-off, 0.5 to 1 s
    async with asyncio.timeout(1):
        assert await starting is False
    assert client.starts == 1
