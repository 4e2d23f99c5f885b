"""The API as its own process (`python -m prequal_api`): how it treats idle connections."""

import asyncio
import time
from typing import Any

from prequal_devstack.testing import StackInfo, free_port

REQUEST = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"


async def idle_time_until_closed(port: int, *, give_up_s: float) -> float:
    """Send one request on a new connection, then measure how long the idle connection lasts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        await reader.readuntil(b'{"status":"ok"}')
        answered = time.monotonic()
        try:
            async with asyncio.timeout(give_up_s):
                assert await reader.read() == b""  # EOF: the server closed it
        except TimeoutError:
            return give_up_s
        return time.monotonic() - answered
    finally:
        writer.close()


async def test_idle_keep_alive_connections_stay_open_as_configured(
    stack: StackInfo, service_process: Any
) -> None:
    ports = {}
    for keep_alive_s in (1, 7):
        port = free_port()
        process = service_process(
            "prequal_api",
            {
                "API_PORT": str(port),
                "API_KEEP_ALIVE_S": str(keep_alive_s),
                "DATABASE_URL": stack.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            },
        )
        await process.wait_for_log("Uvicorn running on")
        ports[keep_alive_s] = port

    short, long = await asyncio.gather(
        idle_time_until_closed(ports[1], give_up_s=10),
        idle_time_until_closed(ports[7], give_up_s=10),
    )
    assert 0.5 < short < 3
    # Longer than uvicorn's default of 5 s, which reset connections clients were reusing.
    assert 6 < long < 9
