"""Helpers for the server feature tests (tests/test_server_*.py).

``MemoryListener`` lets a :class:`WebSocketServer` serve in-memory streams,
so handshake rules can be tested with the autojump clock and no sockets;
the raw-HTTP helpers speak bytes to a server and parse its plain answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from trio_websocket import WebSocketServer

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose clients are in-memory stream pairs: ``connect()``
    returns the client's end and queues the server's for ``accept()``."""

    def __init__(self, wrap: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](1000)
        self.closed = False
        # Wraps each server-side stream (to inject faults or delays).
        self._wrap = wrap

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("listener closed") from None

    async def aclose(self) -> None:
        self.closed = True
        self._receive.close()
        await trio.lowlevel.checkpoint()

    async def connect(self) -> trio.abc.Stream:
        if self.closed:
            raise OSError("connection refused: listener closed")
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server if self._wrap is None else self._wrap(server))
        return client


def upgrade_request(
    path: str = "/",
    extra: bytes = b"",
    *,
    method: bytes = b"GET",
    version: bytes = b"13",
) -> bytes:
    """A valid WebSocket opening request (with ``extra`` header lines)."""
    return (
        method + b" " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


async def read_until_eof(stream: trio.abc.Stream, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit:
        try:
            chunk = await stream.receive_some()
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw: bytes


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body, raw)


async def exchange(stream: trio.abc.Stream, request: bytes) -> Answer:
    """Send ``request``, read the answer until the server closes."""
    await stream.send_all(request)
    raw = await read_until_eof(stream)
    await stream.aclose()
    return parse_answer(raw)


async def start_memory_server(
    nursery: trio.Nursery,
    handler: Any,
    wrap: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
    **options: Any,
) -> tuple[WebSocketServer, MemoryListener]:
    """A :class:`WebSocketServer` over a :class:`MemoryListener`, running."""
    listener = MemoryListener(wrap)
    server = WebSocketServer(handler, [listener], **options)
    await nursery.start(server.run)
    return server, listener


class HeldSendStream(trio.abc.Stream):
    """A stream whose first ``send_all`` waits until ``release`` is set (an
    answer held up on the way out), and which records what it sent."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.release = trio.Event()
        self.sending = trio.Event()
        self._held = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._held = True
            self.sending.set()
            await self.release.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
