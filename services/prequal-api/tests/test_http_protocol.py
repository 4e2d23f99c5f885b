"""Each response in one write: the transport wrapper on its own, then the API process over a
raw connection (a response with no body, an error, a connection the client closes)."""

import asyncio
from typing import Any

from prequal_api.server import _WriteCombiningTransport
from prequal_devstack.testing import StackInfo, free_port


class RecordingTransport:
    """The parts of an asyncio transport the wrapper uses; records what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.sent.append(b"<eof>")

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def combining() -> tuple[_WriteCombiningTransport, RecordingTransport]:
    real = RecordingTransport()
    return _WriteCombiningTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


async def test_writes_of_one_step_reach_the_socket_as_one_write_at_its_end() -> None:
    transport, real = combining()
    transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.sent == []
    await asyncio.sleep(0)
    assert real.sent == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"]
    # Not held across a wait: each step's writes leave at its end.
    transport.write(b"a")
    await asyncio.sleep(0)
    transport.write(b"b")
    await asyncio.sleep(0)
    assert real.sent[1:] == [b"a", b"b"]
    assert transport.get_extra_info("peername") == "info:peername"


async def test_every_way_of_writing_keeps_the_order() -> None:
    transport, real = combining()
    transport.write(b"a")
    transport.writelines([b"b", b"c"])
    transport.write(b"d")
    transport.write_eof()  # sends what is held first
    assert real.sent == [b"abcd", b"<eof>"]


async def test_close_sends_what_was_written_before_it() -> None:
    transport, real = combining()
    transport.write(b"last response")
    transport.close()
    assert real.sent == [b"last response"]
    assert real.closed
    await asyncio.sleep(0)  # the end of the step finds nothing more to send
    assert real.sent == [b"last response"]


async def test_what_is_held_when_the_client_has_gone_is_dropped() -> None:
    transport, real = combining()
    transport.write(b"too late")
    real.closed = True  # the connection was lost before the end of the step
    await asyncio.sleep(0)
    assert real.sent == []


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The status line and the body of one response (framed by content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    return lines[0], await reader.readexactly(length)


async def test_the_api_process_answers_every_kind_of_response_whole(
    stack: StackInfo, service_process: Any
) -> None:
    port = free_port()
    process = service_process(
        "prequal_api",
        {
            "API_PORT": str(port),
            "DATABASE_URL": stack.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        },
    )
    await process.wait_for_log("Uvicorn running on")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            # A response to HEAD has headers and no body (uvicorn writes none): the headers
            # are sent all the same, and nothing after them.
            writer.write(b"HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 405 ")  # /health answers GET only
            # On the same connection: an error with a body.
            body = b'{"pan_number": "nope"}'
            writer.write(
                b"POST /applications HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            status, answer = await read_response(reader)
            assert status.startswith(b"HTTP/1.1 422 ")
            assert b"pan_number" in answer
            # The client asks for the connection to be closed: the response, then the end.
            writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            status, answer = await read_response(reader)
            assert status == b"HTTP/1.1 200 OK"
            assert answer == b'{"status":"ok"}'
            assert await reader.read() == b""
    finally:
        writer.close()
