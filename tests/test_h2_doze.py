"""A server's WebSocket over HTTP/2 gives back its reader task while it
has nothing to read (its reader dozes, ``_core.contracts.DozingStream``),
and behaves exactly as one whose reader stays: messages, closes from
either side, resets, a lost connection and a cancelled server all reach
the handler as before.

Many idle WebSockets on one HTTP/2 connection is the case this serves:
bench/http2.py measures the memory it saves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from conftest import server_readers
from wsproto import ConnectionType
from wsproto.connection import Connection

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_session,
    serve_websocket,
)

pytest.importorskip("h2", reason="the http2 extra is in requirements-dev.txt")

from hostile_h2_peers import H2Peer, rst_stream_frame
from hostile_peers import poll_until

from trio_websocket._core import receiving
from trio_websocket._core.config import ConnectionOptions

#: How often the server's HTTP/2 connection looks for quiet streams
#: (made short here so that a test sees a reader doze within a second).
DOZE_CHECK = "trio_websocket._h2.connection._DOZE_CHECK_SECONDS"


def check_the_shared_dozing_scope() -> None:
    """Dozing readers share one scope that is never entered: cancelling it
    would cancel every reader woken later. (Reads the clock: call it in a
    test's trio run.)"""
    assert not receiving._DOZING_SCOPE.cancel_called


class Handler:
    """Accepts, echoes, and records how each WebSocket ended; on
    ``close-from-server`` the server closes with 4001, and
    ``release_closes`` lets handlers waiting at ``/server-closes`` close
    without any message."""

    def __init__(self) -> None:
        self.closes: list[CloseReason] = []
        self.ended = 0
        self.release_closes = trio.Event()

    async def __call__(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            if request.path == "/server-closes":
                await self.release_closes.wait()
                await ws.send_message("from the server")
                await ws.aclose(4001, "server says bye")
            async for message in ws:
                await ws.send_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.ended += 1
        assert ws.closed is not None
        self.closes.append(ws.closed)


@asynccontextmanager
async def running(handler: Handler, **options: Any) -> AsyncIterator[tuple[WebSocketServer, str]]:
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve_websocket, handler, "127.0.0.1", 0, None, http2=True, **options)
        )
        yield server, f"ws://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


async def test_idle_websockets_keep_no_reader_task_and_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.2)
    handler = Handler()
    with trio.fail_after(15):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            sockets = [await session.connect_websocket(f"/{i}") for i in range(3)]
            await poll_until(lambda: server.connection_count == 3, 3)
            # Dozing from the start: no reader until something comes.
            assert server_readers() == 0
            await sockets[0].send_message("hello")
            assert await sockets[0].get_message() == "hello"
            assert server_readers() == 1
            # Quiet for a while: that reader dozes again.
            await poll_until(lambda: server_readers() == 0, 3)
            for index, ws in enumerate(sockets):
                await ws.send_message(f"again {index}")
                assert await ws.get_message() == f"again {index}"
            await poll_until(lambda: server_readers() == 0, 3)
            # A close from the client wakes a dozing reader.
            await sockets[1].aclose(4000, "client says bye")
            await poll_until(lambda: handler.ended == 1, 3)
            assert [(c.code, c.reason) for c in handler.closes] == [(4000, "client says bye")]
            assert sockets[1].closed is not None and sockets[1].closed.code == 4000
            # The others are untouched.
            for ws in (sockets[0], sockets[2]):
                await ws.send_message(b"bytes too")
                assert await ws.get_message() == b"bytes too"
            for ws in (sockets[0], sockets[2]):
                await ws.aclose()
            await poll_until(lambda: server.connection_count == 0, 3)
    assert sorted(c.code for c in handler.closes) == [1000, 1000, 4000]
    check_the_shared_dozing_scope()

async def test_a_handler_sends_and_closes_while_its_reader_dozes() -> None:
    handler = Handler()
    with trio.fail_after(10):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/server-closes")
            await poll_until(lambda: server.connection_count == 1, 3)
            assert server_readers() == 0
            handler.release_closes.set()
            assert await ws.get_message() == "from the server"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert (closed.value.reason.code, closed.value.reason.reason) == (
                4001,
                "server says bye",
            )
            await poll_until(lambda: handler.ended == 1 and server.connection_count == 0, 3)
    # The server's close was answered: a clean closing handshake.
    assert [(c.code, c.reason) for c in handler.closes] == [(4001, "server says bye")]
    check_the_shared_dozing_scope()

async def test_a_reset_or_a_lost_connection_ends_a_dozing_websocket() -> None:
    handler = Handler()
    with trio.fail_after(10):
        async with running(handler) as (server, _):
            peer = H2Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
            await peer.start()
            await peer.read_until(lambda: bool(peer.server_settings))
            for stream_id in (1, 3, 5):
                await peer.open_ws(stream_id)
            await poll_until(lambda: server.connection_count == 3, 3)
            assert server_readers() == 0
            await peer.send(rst_stream_frame(1))
            await poll_until(lambda: handler.ended == 1, 3)
            assert handler.closes[0].code == 1006
            await peer.ws_echo(3, "still here")
            # The whole connection goes: both other handlers end.
            await trio.aclose_forcefully(peer.stream)
            await poll_until(lambda: handler.ended == 3 and server.connection_count == 0, 3)
    assert [c.code for c in handler.closes] == [1006, 1006, 1006]
    check_the_shared_dozing_scope()

async def test_cancelling_the_server_ends_dozing_websockets() -> None:
    handler = Handler()
    cancelled = False
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server: WebSocketServer = await nursery.start(
                partial(serve_websocket, handler, "127.0.0.1", 0, None, http2=True)
            )
            async with open_websocket_session(
                f"ws://127.0.0.1:{server.port}/", http2="require"
            ) as session:
                for index in range(3):
                    await session.connect_websocket(f"/{index}")
                await poll_until(lambda: server.connection_count == 3, 3)
                assert server_readers() == 0
                nursery.cancel_scope.cancel()
                cancelled = True
    # Every handler was cancelled out of get_message, and nothing is left.
    assert cancelled and handler.ended == 3
    assert server_readers() == 0
    check_the_shared_dozing_scope()



class QuietStream(trio.abc.Stream):
    """A stream that offers a dozing reader (``DozingStream``) and never
    has anything to read: it keeps the reader to wake, as a test says
    (``news`` once there is something to wake it for)."""

    def __init__(self) -> None:
        self.reader: Any = None
        self.news = False

    async def receive_or_doze(self, max_bytes: int, reader: Any) -> bytes | None:
        self.reader = reader
        await trio.lowlevel.checkpoint()
        return None

    def wake_on_news(self, reader: Any) -> bool:
        if self.news:
            return False
        self.reader = reader
        return True

    def forget_wake(self) -> None:
        self.reader = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_reader_woken_after_its_nursery_closed_ends_the_connection() -> None:
    # Cannot happen in the server (the request's task, a child of the
    # nursery, waits for the reader); a nursery whose owner does not wait
    # must still leave a connection that says it is over, not a
    # RuntimeError in the task that brought the news.
    stream = QuietStream()
    connection = WebSocketConnection(
        stream,
        Connection(ConnectionType.SERVER),
        is_client=False,
        path="/",
        subprotocol=None,
        handshake_headers=[],
        options=ConnectionOptions(),
    )
    async with trio.open_nursery() as nursery:
        connection._start(nursery)
    assert stream.reader is connection  # dozing from the start: no task
    stream.news = True
    stream.reader._wake_reader_task()  # the stream's news
    assert connection.closed is not None and connection.closed.code == 1006
    with trio.fail_after(1), pytest.raises(ConnectionClosed):
        await connection.get_message()
    check_the_shared_dozing_scope()
