"""Stopping without hanging on a dependency that is down."""

from __future__ import annotations

import asyncio
from typing import Any


async def finish_or_abandon(work: asyncio.Future[Any], stop: asyncio.Event, grace_s: float) -> bool:
    """Wait for `work`; once `stop` is set, for at most `grace_s` more, then cancel it.

    True if it finished (its result or exception is then in `work`), False if it was
    cancelled: with Kafka unreachable, aiokafka retries unacknowledged sends for ever, and a
    stop would otherwise wait for them until the process is killed. If the caller itself is
    cancelled, so is `work`."""
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            await asyncio.wait({work}, timeout=grace_s)
    except BaseException:
        work.cancel()
        raise
    finally:
        stopping.cancel()
    if work.done():
        return True
    work.cancel()
    # Not `await work`: that would also swallow a cancellation of the caller.
    await asyncio.wait({work})
    return False
