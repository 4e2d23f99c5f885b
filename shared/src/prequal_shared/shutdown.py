"""Stopping without hanging on a dependency that is down."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def finish_or_abandon(work: asyncio.Future[Any], stop: asyncio.Event, grace_s: float) -> bool:
    """Wait for `work`; once `stop` is set, for at most `grace_s` more, then cancel it.

    True if it finished (its result or exception is then in `work`), False if it was
    cancelled: with Kafka unreachable, aiokafka retries unacknowledged sends for ever, and a
    stop would otherwise wait for them until the process is killed."""
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not work.done():
        await asyncio.wait({work}, timeout=grace_s)
    if work.done():
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return False
