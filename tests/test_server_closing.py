"""The server's closing after a handler returns, which runs without a
cancel scope of its own: the connection's scope (deadline
``disconnect_timeout``) bounds it, as ``aclose``'s own scope bounds a
user's close.

Each test serves an in-memory listener with the autojump clock, so the
timeouts are exact; the client is a raw peer driven by hand.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.lowlevel
import trio.testing
from server_fixtures import MemoryListener
from wsproto import ConnectionType
from wsproto.events import Request
from wsproto.handshake import H11Handshake

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

#: A masked close frame with code 4000 and no reason, as a client sends it.
CLIENT_CLOSE_4000 = b"\x88\x82\x00\x00\x00\x00\x0f\xa0"
#: The server's unmasked close frame with code 1000.
SERVER_CLOSE_1000 = b"\x88\x02\x03\xe8"


def request_bytes() -> bytes:
    return H11Handshake(ConnectionType.CLIENT).send(Request(host="example.com", target="/"))


async def read_until(stream: trio.abc.Stream, marker: bytes) -> bytes:
    data = b""
    for _ in range(1000):
        if marker in data:
            return data
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"{marker!r} never came: {data!r}")


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    for _ in range(1000):
        chunk = await stream.receive_some()
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept sending")


def abandoned_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "trio_websocket" and "not completed" in record.getMessage()
    ]


async def test_a_peer_that_never_answers_the_close_is_dropped_after_disconnect_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_websocket")
    listener = MemoryListener()
    accepted: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        accepted.append(await request.accept())

    await nursery.start(WebSocketServer(handler, [listener], disconnect_timeout=4).run)
    with trio.fail_after(30):
        client = await listener.connect()
        await client.send_all(request_bytes())
        start = trio.current_time()
        received = await read_until_eof(client)
    assert trio.current_time() - start == pytest.approx(4)
    assert received.endswith(SERVER_CLOSE_1000)
    (ws,) = accepted
    # Our close frame went out: the close reason keeps its code.
    assert ws.closed is not None and ws.closed.code == 1000
    assert ws.close_sent is not None and ws.close_sent.code == 1000
    assert ws.close_received is None
    (message,) = abandoned_records(caplog)
    assert "(timed out)" in message and "our close frame was sent" in message


async def test_after_the_peers_close_the_server_is_done_at_once(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_websocket")
    listener = MemoryListener()
    accepted: list[WebSocketConnection] = []
    handler_ended = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        accepted.append(ws)
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass
        handler_ended.set()

    server = WebSocketServer(handler, [listener], disconnect_timeout=4)
    await nursery.start(server.run)
    with trio.fail_after(30):
        client = await listener.connect()
        await client.send_all(request_bytes())
        await read_until(client, b"\r\n\r\n")
        start = trio.current_time()
        await client.send_all(CLIENT_CLOSE_4000)
        received = await read_until_eof(client)
        await handler_ended.wait()
        for _ in range(100):  # (the connection's task ends right after)
            if not server.connection_count:
                break
            await trio.lowlevel.checkpoint()
    assert trio.current_time() == start
    assert server.connection_count == 0
    # The echo of the peer's code, then the end of the stream.
    assert received.endswith(b"\x88\x02\x0f\xa0")
    (ws,) = accepted
    assert ws.closed is not None and ws.closed.code == 4000
    assert ws.close_received == ws.closed
    assert ws.close_sent is not None and ws.close_sent.code == 4000
    assert abandoned_records(caplog) == []


async def test_aclose_of_a_connection_that_ended_is_a_checkpoint(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    accepted: list[WebSocketConnection] = []
    checked = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        accepted.append(ws)
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass
        await trio.sleep(1)  # the reader ends meanwhile (it closes the stream)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.aclose()  # returns at once, but is a checkpoint
            raise AssertionError("not a checkpoint")
        await ws.aclose()  # and again: nothing left to do
        checked.set()

    await nursery.start(WebSocketServer(handler, [listener]).run)
    with trio.fail_after(30):
        client = await listener.connect()
        await client.send_all(request_bytes())
        await read_until(client, b"\r\n\r\n")
        start = trio.current_time()
        await client.send_all(CLIENT_CLOSE_4000)
        await read_until_eof(client)
        await checked.wait()
    assert trio.current_time() - start == 1  # (the handler's own sleep)
    (ws,) = accepted
    assert ws.closed is not None and ws.closed.code == 4000
