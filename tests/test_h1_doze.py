"""A server's WebSocket over TCP or TLS (or memory streams) whose handler
waits in ``get_message`` keeps no reader task once its connection has been
quiet for a while (``_core.receiving``, "Dozing"): the receiver reads the
stream through, and wakes the reader whenever it stops reading. These
tests check that an idle connection dozes (fresh, or after an exchange),
and that nothing a user sees changes: messages, the peer's pings and
close, a cancelled receive, an abort and a server's shutdown all behave as
with a reader that stays.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing
from conftest import server_readers
from hostile_peers import poll_until

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._core import receiving
from trio_websocket.testing import open_memory_pair

QUIET = receiving._QUIET_DOZE
#: How long the tests over real sockets (real time) wait to doze.
SHORT_QUIET = 0.05


def assert_dozing(server: WebSocketConnection) -> None:
    assert server._reader_dozing
    assert server_readers() == 0
    assert not receiving._DOZING_SCOPE.cancel_called


async def _receive_into(ws: WebSocketConnection, got: list[object]) -> None:
    try:
        while True:
            got.append(await ws.get_message())
    except ConnectionClosed as exc:
        got.append(exc)


async def receive_until_dozing(nursery: trio.Nursery, server: WebSocketConnection) -> list[object]:
    """Starts a handler that waits in ``get_message`` on ``server`` (what
    it gets, then the ConnectionClosed, goes into the list returned) and
    returns once the connection has been quiet long enough to doze."""
    got: list[object] = []
    nursery.start_soon(_receive_into, server, got)
    await trio.sleep(QUIET * 2)
    assert_dozing(server)
    return got


# ----------------------------------------------------------------------
# Memory streams, autojump clock


async def test_a_fresh_idle_connection_dozes(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            got: list[object] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_receive_into, server, got)
                await trio.sleep(QUIET / 2)
                assert server_readers() == 1  # not yet
                await trio.sleep(QUIET)
                assert_dozing(server)
                await client.send_message("hello")
                await trio.testing.wait_all_tasks_blocked()
                assert got == ["hello"]
                # It stopped reading: the reader runs again ...
                assert not server._reader_dozing
                # ... and dozes again once quiet.
                await trio.sleep(QUIET * 3)
                assert_dozing(server)
                await client.send_message(b"again")
                await trio.testing.wait_all_tasks_blocked()
                assert got == ["hello", b"again"]
                await client.aclose()
            assert isinstance(got[-1], ConnectionClosed)
            assert got[-1].reason is not None and got[-1].reason.code == 1000


async def test_an_idle_connection_dozes_after_an_exchange(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):

            async def echo() -> None:
                try:
                    while True:
                        await server.send_message(await server.get_message())
                except ConnectionClosed:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                for _ in range(3):
                    for i in range(10):
                        await client.send_message(b"%d" % i)
                        assert await client.get_message() == b"%d" % i
                    await trio.sleep(QUIET * 3)
                    assert_dozing(server)
                await client.aclose()


async def test_the_peers_ping_is_answered_while_the_handler_is_away(
    autojump_clock: object,
) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            got: list[object] = []
            async with trio.open_nursery() as nursery:

                async def receive_once_then_sleep() -> None:
                    got.append(await server.get_message())
                    await trio.sleep(1000)

                nursery.start_soon(receive_once_then_sleep)
                await trio.sleep(QUIET * 2)
                assert_dozing(server)
                await client.send_message("one")
                await trio.sleep(QUIET * 2)
                assert got == ["one"]
                assert server_readers() == 1
                with trio.fail_after(1):
                    await client.ping(b"still there?")
                nursery.cancel_scope.cancel()


async def test_a_timed_out_receive_still_answers_pings(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server), trio.open_nursery() as nursery:

            async def receive_a_while_then_sleep() -> None:
                with trio.move_on_after(QUIET * 3):
                    await server.get_message()
                await trio.sleep(1000)

            nursery.start_soon(receive_a_while_then_sleep)
            await trio.sleep(QUIET * 2)
            assert_dozing(server)
            await trio.sleep(QUIET * 2)  # the receive was cancelled
            assert not server._reader_dozing
            with trio.fail_after(1):
                await client.ping(b"anyone?")
            # Nothing was lost to the cancelled receive.
            await client.send_message("kept")
            assert await server.get_message() == "kept"
            nursery.cancel_scope.cancel()


async def test_the_peers_close_while_dozing(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            async with trio.open_nursery() as nursery:
                got = await receive_until_dozing(nursery, server)
                with trio.fail_after(1):
                    await client.aclose(4000, "bye")
            assert client.closed is not None and client.closed.code == 4000
            assert isinstance(got[-1], ConnectionClosed)
            assert got[-1].reason is not None and got[-1].reason.code == 4000
            await trio.testing.wait_all_tasks_blocked()
            assert server._reader_ended
            assert server_readers() == 0


async def test_the_peers_close_while_the_handler_sleeps(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server), trio.open_nursery() as nursery:

            async def receive_once_then_sleep() -> None:
                await server.get_message()
                await trio.sleep(1000)

            nursery.start_soon(receive_once_then_sleep)
            await trio.sleep(QUIET * 2)
            assert_dozing(server)
            await client.send_message("one")
            await trio.sleep(QUIET * 3)
            with trio.fail_after(1):
                await client.aclose(4001)
            assert server.closed is not None and server.closed.code == 4001
            nursery.cancel_scope.cancel()


async def test_the_peer_vanishing_while_dozing(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            async with trio.open_nursery() as nursery:
                got = await receive_until_dozing(nursery, server)
                await trio.aclose_forcefully(client._stream)
            assert isinstance(got[-1], ConnectionClosed)
            assert got[-1].reason is not None and got[-1].reason.code == 1006
            await trio.testing.wait_all_tasks_blocked()
            assert server._reader_ended
            assert server_readers() == 0


async def test_a_local_close_and_our_ping_while_dozing(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            async with trio.open_nursery() as nursery:
                got = await receive_until_dozing(nursery, server)
                with trio.fail_after(1):
                    await server.ping(b"ours")
                await trio.sleep(QUIET * 3)
                assert_dozing(server)
                with trio.fail_after(1):
                    await server.aclose(4002)
            assert client.closed is not None and client.closed.code == 4002
            assert isinstance(got[-1], ConnectionClosed)
            await trio.testing.wait_all_tasks_blocked()
            assert server._reader_ended


async def test_an_abort_while_dozing(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (_client, server):
            async with trio.open_nursery() as nursery:
                got = await receive_until_dozing(nursery, server)
                server._abort()
                with trio.fail_after(1):
                    await server._wait_reader_ended()
            assert isinstance(got[-1], ConnectionClosed)
            await trio.testing.wait_all_tasks_blocked()
            assert server_readers() == 0


async def test_no_doze_without_a_receiver(autojump_clock: object) -> None:
    """A handler that does not receive keeps its reader (nobody else
    would read): pings are answered."""
    with trio.fail_after(30):
        async with open_memory_pair() as (client, server):
            await trio.sleep(QUIET * 3)
            assert not server._reader_dozing
            assert server_readers() == 1
            with trio.fail_after(1):
                await client.ping(b"x")


async def test_a_client_never_dozes(autojump_clock: object) -> None:
    with trio.fail_after(30):
        async with open_memory_pair() as (client, _server), trio.open_nursery() as nursery:
            nursery.start_soon(_receive_into, client, [])
            await trio.sleep(QUIET * 3)
            assert not client._reader_dozing
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------
# Real TCP and TLS on loopback


@pytest.fixture
def short_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiving, "_QUIET_DOZE", SHORT_QUIET)


class Recorder:
    """A server handler that echoes, keeps its connections, and records
    how each ended."""

    def __init__(self) -> None:
        self.connections: list[WebSocketConnection] = []
        self.ends: list[object] = []

    async def __call__(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        self.connections.append(ws)
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed as exc:
            self.ends.append(exc.reason.code if exc.reason is not None else None)
        except trio.Cancelled:
            self.ends.append("cancelled")
            raise


async def _wait_dozing(connections: list[WebSocketConnection], count: int) -> None:
    await poll_until(
        lambda: len(connections) >= count and all(c._reader_dozing for c in connections), 3
    )


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_over_sockets(
    short_quiet: None,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    tls: bool,
) -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server: WebSocketServer = await nursery.start(
                serve_websocket,
                recorder,
                "127.0.0.1",
                0,
                server_context if tls else None,
            )
            scheme = "wss" if tls else "ws"
            url = f"{scheme}://127.0.0.1:{server.port}/"
            context = client_context if tls else None
            async with open_websocket_url(url, ssl_context=context) as ws:
                # Fresh: dozes with nothing received.
                await _wait_dozing(recorder.connections, 1)
                assert server_readers() == 0
                await ws.send_message("ping-pong")
                assert await ws.get_message() == "ping-pong"
                # After an exchange: dozes again.
                await _wait_dozing(recorder.connections, 1)
                assert server_readers() == 0
                await ws.ping(b"p")
                await _wait_dozing(recorder.connections, 1)
                await ws.send_message(b"x" * 100_000)
                assert await ws.get_message() == b"x" * 100_000
                await _wait_dozing(recorder.connections, 1)
            # The client's close was answered by the dozing server.
            assert ws.closed is not None and ws.closed.code == 1000
            await poll_until(lambda: recorder.ends)
            assert recorder.ends == [1000]
            nursery.cancel_scope.cancel()
    assert server_readers() == 0


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_a_server_with_dozing_connections_shuts_down(
    short_quiet: None,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    tls: bool,
    how: str,
) -> None:
    recorder = Recorder()
    scheme = "wss" if tls else "ws"
    context = client_context if tls else None
    closes: list[object] = []

    async def client(url: str, opened: Callable[[], Awaitable[None]]) -> None:
        async with open_websocket_url(url, ssl_context=context) as ws:
            await opened()
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                closes.append(exc.reason.code if exc.reason is not None else None)

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as server_nursery:
                server: WebSocketServer = await server_nursery.start(
                    serve_websocket,
                    recorder,
                    "127.0.0.1",
                    0,
                    server_context if tls else None,
                )
                url = f"{scheme}://127.0.0.1:{server.port}/"
                for _ in range(5):
                    opened = trio.Event()

                    async def set_opened(event: trio.Event = opened) -> None:
                        event.set()

                    outer.start_soon(partial(client, url, set_opened))
                    await opened.wait()
                await _wait_dozing(recorder.connections, 5)
                assert server_readers() == 0
                if how == "cancel":
                    server_nursery.cancel_scope.cancel()
                else:
                    await server.aclose()
                    server_nursery.cancel_scope.cancel()
            assert server_readers() == 0
            assert all(c._reader_ended for c in recorder.connections)
            if how == "aclose":
                assert sorted(recorder.ends, key=str) == [1001] * 5
    # Every client saw its connection end.
    assert len(closes) == 5
