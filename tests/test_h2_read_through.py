"""Reading through over HTTP/2: a WebSocket's ``get_message`` reads its
HTTP/2 stream itself once the reader has handed it a message (as over
HTTP/1.1, ``_core.receiving``, "Reading through"), so the stream's news
wakes the receiving task directly, with no reader task between them; and
a server's reader standing aside still gives back its task when the
WebSocket goes quiet (it dozes *aside*, ``_core.contracts.DozingStream``).

What a user relies on, checked here: messages, pings and closes work in
every one of those states; a handler busy elsewhere still answers the
peer's ping and sees its close; a cancelled receive loses nothing; a
streamed receive, a reset and a lost connection still reach the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from trio_websocket import (
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
from test_h2_doze import DOZE_CHECK, check_the_shared_dozing_scope, server_readers

from trio_websocket._core import receiving

READER = receiving._READER
TIMEOUT = receiving._ASIDE_TIMEOUT


class Handler:
    """Keeps each server WebSocket; echoes, except that ``busy`` makes it
    stop receiving until ``released`` is set, ``fragments``
    makes it receive the next message in pieces and echo it joined, and
    ``cancelled`` makes it cancel five receives before it goes on. Records
    the close code that ended each handler."""

    def __init__(self) -> None:
        self.sockets: list[WebSocketConnection] = []
        self.codes: list[int] = []
        self.cancelled_receives = 0
        self.released = trio.Event()

    async def __call__(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        self.sockets.append(ws)
        try:
            while True:
                message = await ws.get_message()
                if message == "busy":
                    await self.released.wait()
                    continue
                if message == "fragments":
                    pieces = [piece async for piece in ws.receive_fragments()]
                    await ws.send_message(b"".join(pieces))  # type: ignore[arg-type]
                    continue
                if message == "cancelled":
                    for _ in range(5):
                        with trio.move_on_after(0.02):
                            await ws.get_message()
                            raise AssertionError("nothing was sent meanwhile")
                        self.cancelled_receives += 1
                await ws.send_message(message)
        except ConnectionClosed as exc:
            assert exc.reason is not None
            self.codes.append(exc.reason.code)


@asynccontextmanager
async def running(handler: Handler) -> AsyncIterator[tuple[WebSocketServer, str]]:
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve_websocket, handler, "127.0.0.1", 0, None, http2=True)
        )
        yield server, f"ws://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


async def _echo(ws: Any, message: str | bytes) -> None:
    await ws.send_message(message)
    assert await ws.get_message() == message


async def _doze(server: WebSocketServer) -> None:
    """Wait until no server reader task is left."""
    await poll_until(lambda: server_readers() == 0, 3)


async def _doze_aside(server: WebSocketServer, ws: WebSocketConnection) -> None:
    """Wait until the server's reader dozes while its handler reads
    through: no reader task, the turn not the reader's."""
    await _doze(server)
    assert ws._read_turn != READER


async def test_request_response_over_http2_is_read_by_the_receiving_tasks() -> None:
    handler = Handler()
    with trio.fail_after(10):
        async with (
            running(handler) as (_, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/")
            for index in range(20):
                await _echo(ws, f"message {index}")
            (server_ws,) = handler.sockets
            # Both sides read their messages in the receiving task, from
            # the HTTP/2 stream, once the first has been handed over.
            assert server_ws._reads_through >= 18
            assert ws._reads_through >= 18  # type: ignore[attr-defined]
            assert server_ws._messages_received == 20
            await ws.aclose()
            await poll_until(lambda: handler.codes == [1000], 3)
    check_the_shared_dozing_scope()


async def test_a_quiet_websocket_dozes_aside_and_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.1)
    handler = Handler()
    with trio.fail_after(10):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/")
            await _echo(ws, "first")
            await _echo(ws, "second")
            (server_ws,) = handler.sockets
            # The handler waits in get_message, reading through; quiet for
            # a while, the reader standing aside gives back its task.
            await _doze_aside(server, server_ws)
            reads = server_ws._reads_through
            await _echo(ws, "after the doze")
            # Read by the waiting receive itself: no reader task came back.
            assert server_ws._reads_through > reads
            assert server_readers() == 0
            await _doze_aside(server, server_ws)
            # The server's own ping, from another task, while its handler
            # reads through and its reader dozes.
            with trio.fail_after(1):
                await server_ws.ping(b"and you?")
            await _doze(server)
            await _echo(ws, "and on")
            await _doze_aside(server, server_ws)
            # Our ping, the server's pong (written by its reader, woken for
            # it): while the handler reads through.
            with trio.fail_after(1):
                await ws.ping(b"there?")  # type: ignore[attr-defined]
            await _doze(server)
            await _echo(ws, b"bytes too")
            await _doze_aside(server, server_ws)
            await ws.aclose(4000, "bye")
            await poll_until(lambda: handler.codes == [4000], 3)
    check_the_shared_dozing_scope()


@pytest.mark.parametrize("doze_first", [False, True])
async def test_a_busy_handler_still_answers_the_ping_and_sees_the_close(
    monkeypatch: pytest.MonkeyPatch, doze_first: bool
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.1)
    handler = Handler()
    with trio.fail_after(10):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/")
            await _echo(ws, "first")
            await _echo(ws, "second")
            (server_ws,) = handler.sockets
            if doze_first:
                await _doze_aside(server, server_ws)
            # The handler stops receiving: the peer's ping is still answered
            # (by the reader, back from standing aside or from its doze).
            await ws.send_message("busy")
            await trio.sleep(0.05)
            start = trio.current_time()
            await ws.ping(b"anyone?")  # type: ignore[attr-defined]
            assert trio.current_time() - start <= 2 * TIMEOUT + 0.2
            # And the peer's close: the closing handshake is over before the
            # handler receives again.
            await ws.aclose(4001, "done")
            assert server_ws.closed is not None and server_ws.closed.code == 4001
            handler.released.set()
            await poll_until(lambda: handler.codes == [4001], 3)
    check_the_shared_dozing_scope()


@pytest.mark.parametrize("doze_first", [False, True])
async def test_a_cancelled_receive_loses_no_message(
    monkeypatch: pytest.MonkeyPatch, doze_first: bool
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.1)
    handler = Handler()
    with trio.fail_after(10):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/")
            await _echo(ws, "first")
            (server_ws,) = handler.sockets
            if doze_first:
                await _echo(ws, "second")
                await _doze_aside(server, server_ws)
            # Five receives cancelled while reading through, then the
            # message sent right behind them is received all the same.
            await ws.send_message("cancelled")
            await poll_until(lambda: handler.cancelled_receives == 5, 3)
            assert await ws.get_message() == "cancelled"
            await _echo(ws, "still here")
            await ws.aclose()
            await poll_until(lambda: handler.codes == [1000], 3)


@pytest.mark.parametrize("doze_first", [False, True])
async def test_a_streamed_receive_after_reading_through(
    monkeypatch: pytest.MonkeyPatch, doze_first: bool
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.1)
    handler = Handler()
    payload = bytes(range(256)) * 2048  # 512 KiB: many DATA frames, several reads
    with trio.fail_after(10):
        async with (
            running(handler) as (server, base),
            open_websocket_session(f"{base}/", http2="require") as session,
        ):
            ws = await session.connect_websocket("/")
            await _echo(ws, "first")
            await _echo(ws, "second")
            await ws.send_message("fragments")
            if doze_first:
                # (The streamed receive took the turn back: a plain doze.)
                await _doze(server)
            else:
                await trio.sleep(0.02)
            await ws.send_message(payload)
            assert await ws.get_message() == payload
            await _echo(ws, "after the pieces")
            await ws.aclose()
            await poll_until(lambda: handler.codes == [1000], 3)
    check_the_shared_dozing_scope()


@pytest.mark.parametrize("doze_first", [False, True])
async def test_a_reset_or_a_lost_connection_under_a_receiver_reading_through(
    monkeypatch: pytest.MonkeyPatch, doze_first: bool
) -> None:
    monkeypatch.setattr(DOZE_CHECK, 0.1)
    handler = Handler()
    with trio.fail_after(10):
        async with running(handler) as (server, _):
            peer = H2Peer(await trio.open_tcp_stream("127.0.0.1", server.port))
            await peer.start()
            await peer.read_until(lambda: bool(peer.server_settings))
            for stream_id in (1, 3):
                await peer.open_ws(stream_id)
                await peer.ws_echo(stream_id, "first")
                await peer.ws_echo(stream_id, "second")
            await poll_until(lambda: len(handler.sockets) == 2, 3)
            if doze_first:
                await poll_until(lambda: server_readers() == 0, 3)
            for server_ws in handler.sockets:
                assert server_ws._read_turn != READER
            await peer.send(rst_stream_frame(1))
            await poll_until(lambda: handler.codes == [1006], 3)
            await peer.ws_echo(3, "still here")
            await trio.aclose_forcefully(peer.stream)
            await poll_until(lambda: handler.codes == [1006, 1006], 3)
            await poll_until(lambda: server.connection_count == 0, 3)
    assert server_readers() == 0
    check_the_shared_dozing_scope()
