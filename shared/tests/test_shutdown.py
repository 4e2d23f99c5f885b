"""finish_or_abandon: work gets a grace after a stop, then is cancelled; pure asyncio."""

import asyncio

import pytest

from prequal_shared.shutdown import finish_or_abandon


async def takes(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@pytest.mark.parametrize(
    ("work_s", "stop_after_s", "grace_s", "finished"),
    [
        (0.05, None, 0.1, True),  # no stop: waits however long the work takes
        (0.3, None, 0.1, True),
        (0.15, 0.05, 0.3, True),  # stopped, finishes within the grace
        (5.0, 0.05, 0.1, False),  # stopped, would not finish: cancelled after the grace
    ],
)
async def test_work_finishes_or_is_abandoned_after_the_grace(
    work_s: float, stop_after_s: float | None, grace_s: float, finished: bool
) -> None:
    stop = asyncio.Event()
    if stop_after_s is not None:
        asyncio.get_running_loop().call_later(stop_after_s, stop.set)
    work = asyncio.ensure_future(takes(work_s))
    async with asyncio.timeout(2):
        assert await finish_or_abandon(work, stop, grace_s) is finished
    assert work.done()
    assert work.cancelled() is not finished
    if finished:
        assert work.result() == "done"


async def test_cancelling_the_caller_cancels_the_work() -> None:
    work = asyncio.ensure_future(takes(5))
    caller = asyncio.ensure_future(finish_or_abandon(work, asyncio.Event(), 1))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert work.cancelled()
