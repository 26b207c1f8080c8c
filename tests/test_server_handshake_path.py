"""The server's path from an accepted connection to its handler, as made
cheaper per connection: what a handler can still observe of it.

The handler runs in the connection's task, whose name is the one trio
formats for ``WebSocketServer._handle_connection`` (the server passes it,
made once), and no coroutine of the server's lies between that task and
the handler but ``_handle_connection`` itself.
"""

from __future__ import annotations

import sys

import trio
import trio.testing
from server_fixtures import MemoryListener
from wsproto import ConnectionType
from wsproto.events import Request
from wsproto.handshake import H11Handshake

from trio_websocket import WebSocketRequest, WebSocketServer


async def test_the_handler_runs_in_the_connection_task_under_its_usual_name(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[tuple[str, list[str]]] = []

    async def handler(request: WebSocketRequest) -> None:
        frames = []
        frame = sys._getframe()
        for _ in range(3):
            if frame is None:
                break
            frames.append(frame.f_code.co_name)
            frame = frame.f_back
        seen.append((trio.lowlevel.current_task().name, frames))
        await request.accept()

    listener = MemoryListener()
    await nursery.start(WebSocketServer(handler, [listener]).run)
    with trio.fail_after(10):
        client = await listener.connect()
        await client.send_all(
            H11Handshake(ConnectionType.CLIENT).send(Request(host="example.com", target="/"))
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += await client.receive_some()
    assert received.startswith(b"HTTP/1.1 101 ")
    ((name, frames),) = seen
    assert name == "trio_websocket._server.server.WebSocketServer._handle_connection"
    assert frames[:2] == ["handler", "_handle_connection"]
