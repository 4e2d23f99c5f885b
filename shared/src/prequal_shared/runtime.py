"""Process plumbing shared by the consumers: stop on SIGTERM/SIGINT, a small health server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/health", health), Route("/metrics", metrics)])
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return _EmbeddedServer(config)
