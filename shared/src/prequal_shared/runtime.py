"""Process plumbing shared by the consumers: start-up with retries, stop on SIGTERM/SIGINT,
and a small `/health` + `/metrics` server in the service's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from prequal_shared.config import CommonSettings
from prequal_shared.consumer import ConsumerLoop, Handler
from prequal_shared.errors import is_transient
from prequal_shared.kafka import (
    DeadLetterPublisher,
    Producer,
    create_consumer,
    create_producer,
    stop_consumer,
)
from prequal_shared.metrics import metrics_endpoint
from prequal_shared.shutdown import finish_or_abandon

log = structlog.stdlib.get_logger(__name__)


def run(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` on uvloop, libuv's event loop (uvicorn picks it for the API by itself).
    py-spy on the consumers under load: the pure-Python selector loop's epoll calls and
    socket writes were a third of their CPU. uvloop does not exist on Windows."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# Collect the young generation once this many more container objects are alive than at the
# last collection (CPython 3.11's default: 700). In the API at 2,300 requests a second the 64
# requests in flight keep some 12,000 young objects alive, so the default collected 300 times
# a second, walking them and their promoted copies and finding next to nothing: 14,146 young,
# 1,286 middle and 116 full collections in a run freed 276 objects, and took 8% of the API's
# CPU (gc.callbacks, and perf). A leak of cycles is still collected, once it reaches this size.
YOUNG_GENERATION_THRESHOLD = 50_000


def configure_gc_for_load() -> None:
    """Exempt everything built at start-up (modules, the app, pools) from the cyclic garbage
    collector, and collect the young generation far less often (see
    `YOUNG_GENERATION_THRESHOLD`). A full collection walked all of start-up, about 100,000
    objects and 40 ms in the API, a pause every request in flight had to sit through; after
    `gc.freeze()` collections walk only what was allocated since. Call once the service is
    wired, before it takes load."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)


def stop_event_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT, so the service can finish and commit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service it is embedded in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_server(*, port: int, host: str, is_healthy: Callable[[], bool]) -> uvicorn.Server:
    """`/health` and `/metrics` on a side port, served inside the service's own event loop."""

    async def health(_: Request) -> Response:
        ok = is_healthy()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    app = Starlette(routes=[Route("/health", health), Route("/metrics", metrics_endpoint)])
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return _EmbeddedServer(config)


@dataclass(frozen=True, slots=True)
class ConsumerService:
    """What differs between the consumers; everything else is `run_consumer_service`."""

    name: str
    topic: str
    group_id: str
    ops_port: int
    handler: Callable[[Producer], AbstractAsyncContextManager[Handler]]
    """Builds the message handler (and owns whatever it needs, e.g. a database engine)."""


async def _start_with_retries(client: Producer | AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """Kafka may still be starting (or down): keep trying, with backoff, until told to stop.
    Returns False when stopped before Kafka could be reached.

    A stop cuts short the back-off (up to 10 s) and the start itself: a consumer's start
    waits for its group to hand it partitions, with no time limit."""

    async def back_off(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5),
            stop=lambda _: stop.is_set(),
            sleep=back_off,
            reraise=True,
        ):
            with attempt:
                if stop.is_set():  # during the back-off: tenacity goes on to the attempt
                    break
                if attempt.retry_state.attempt_number > 1:
                    log.warning(
                        "kafka not reachable yet, retrying",
                        attempt=attempt.retry_state.attempt_number,
                    )
                starting = asyncio.ensure_future(client.start())
                if await finish_or_abandon(starting, stop, 0):
                    starting.result()
    except Exception:
        if not stop.is_set():
            raise
    if stop.is_set():
        log.info("stopped before Kafka could be reached")
        return False
    return True


async def run_consumer_service(
    spec: ConsumerService, settings: CommonSettings, *, ops_host: str
) -> None:
    """Consume until SIGTERM/SIGINT: finish the batch in hand, commit, close everything."""
    stop = stop_event_on_signals()
    producer = create_producer(settings, client_id=spec.name)
    ops = ops_server(port=spec.ops_port, host=ops_host, is_healthy=lambda: not stop.is_set())
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(producer.stop)
        if not await _start_with_retries(producer, stop):
            return
        handler = await resources.enter_async_context(spec.handler(producer))
        consumer = create_consumer(
            settings, spec.topic, group_id=spec.group_id, client_id=spec.name
        )
        resources.push_async_callback(stop_consumer, consumer)
        if not await _start_with_retries(consumer, stop):
            return
        loop = ConsumerLoop(
            name=spec.name,
            consumer=consumer,
            handler=handler,
            dead_letters=DeadLetterPublisher(
                producer=producer, topic=settings.topic_dlq, consumer_name=spec.name
            ),
        )
        ops_task = asyncio.create_task(ops.serve(), name="ops-server")
        configure_gc_for_load()
        log.info("started", topic=spec.topic, group_id=spec.group_id)
        try:
            await loop.run(stop)
        finally:
            ops.should_exit = True
            await ops_task
    log.info("stopped")


@contextlib.asynccontextmanager
async def nothing_to_close(handler: Handler) -> AsyncIterator[Handler]:
    yield handler
