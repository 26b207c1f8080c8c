"""The keepalive: ``ping_interval`` and ``ping_timeout`` on every entry
point, the ``latency`` they measure, and the 1011 close when a pong is late.

The peers that misbehave (never answer pings, answer late, stop reading)
are driven by hand with wsproto; time runs on the autojump clock.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import accept_by_hand, open_pair, read_request_head
from peers import require_module
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._core.config import CLOSE_GRACE, ConnectionOptions

KEEPALIVE_TIMEOUT = CloseReason(1011, "keepalive ping timeout")


class HandPeer:
    """The other end of a connection, driven by hand with wsproto.

    :param answer_pings: whether to answer pings with pongs.
    :param answer_close: whether to answer a close frame (and close).
    :param pong_delay: seconds to wait before each pong.
    """

    def __init__(self, stream: trio.abc.Stream, connection: Connection) -> None:
        self.stream = stream
        self.connection = connection
        self.answer_pings = True
        self.answer_close = True
        self.pong_delay = 0.0
        self.events: list[Event] = []
        self.ping_times: list[float] = []

    def pings(self) -> list[Ping]:
        return [event for event in self.events if isinstance(event, Ping)]

    def close_frames(self) -> list[CloseConnection]:
        return [event for event in self.events if isinstance(event, CloseConnection)]

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.connection.send(event))

    async def run(self) -> None:
        """Read and react until the stream ends (bounded)."""
        for _ in range(100_000):
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self.connection.receive_data(data)
            for event in self.connection.events():
                self.events.append(event)
                if isinstance(event, Ping):
                    self.ping_times.append(trio.current_time())
                    if self.answer_pings:
                        await trio.sleep(self.pong_delay)
                        await self.send(event.response())
                elif isinstance(event, CloseConnection) and self.answer_close:
                    if self.connection.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self.send(event.response())
                        except trio.BrokenResourceError:
                            pass
                    await self.stream.aclose()
                    return


async def client_with_hand_peer(
    nursery: trio.Nursery,
    *,
    stream_pair: Callable[[], tuple[Any, Any]] = trio.testing.memory_stream_pair,
    run_peer: bool = True,
    **options: Any,
) -> tuple[WebSocketConnection, HandPeer]:
    """Our client connected to a by-hand server (whose loop is running
    unless ``run_peer`` is false)."""
    client_stream, server_stream = stream_pair()
    peers: list[HandPeer] = []

    async def accept() -> None:
        head = await read_request_head(server_stream)
        peers.append(HandPeer(server_stream, await accept_by_hand(server_stream, head)))

    async with trio.open_nursery() as both:
        both.start_soon(accept)
        ws = await wrap_client_stream(nursery, client_stream, "example.com", "/", **options)
    if run_peer:
        nursery.start_soon(peers[0].run)
    return ws, peers[0]


async def server_with_hand_peer(
    nursery: trio.Nursery,
    *,
    stream_pair: Callable[[], tuple[Any, Any]] = trio.testing.memory_stream_pair,
    run_peer: bool = True,
    **options: Any,
) -> tuple[WebSocketConnection, HandPeer]:
    """Our server connection accepted from a by-hand client."""
    client_stream, server_stream = stream_pair()
    handshake = H11Handshake(ConnectionType.CLIENT)

    async def request_and_read_answer() -> None:
        await client_stream.send_all(handshake.send(Request(host="example.com", target="/")))
        for _ in range(100):
            handshake.receive_data(await client_stream.receive_some())
            if any(isinstance(event, AcceptConnection) for event in handshake.events()):
                return

    async with trio.open_nursery() as both:
        both.start_soon(request_and_read_answer)
        request = await wrap_server_stream(nursery, server_stream, **options)
        ws = await request.accept()
    assert handshake.connection is not None
    peer = HandPeer(client_stream, handshake.connection)
    if run_peer:
        nursery.start_soon(peer.run)
    return ws, peer


async def hand_peer(
    nursery: trio.Nursery, role: str, **options: Any
) -> tuple[WebSocketConnection, HandPeer]:
    if role == "client":
        return await client_with_hand_peer(nursery, **options)
    return await server_with_hand_peer(nursery, **options)


ROLES = ["client", "server"]


async def ignore_request(request: Any) -> None:
    await trio.lowlevel.checkpoint()


# ----------------------------------------------------------------------
# Options


def test_keepalive_is_off_by_default() -> None:
    options = ConnectionOptions.build()
    assert options.ping_interval is None
    assert options.ping_timeout is None


def test_timeout_defaults_to_the_interval() -> None:
    options = ConnectionOptions.build(ping_interval=7)
    assert options.ping_interval == 7.0
    assert options.ping_timeout == 7.0


def test_timeout_may_differ_from_the_interval_or_be_infinite() -> None:
    assert ConnectionOptions.build(ping_interval=20, ping_timeout=5).ping_timeout == 5
    options = ConnectionOptions.build(ping_interval=1, ping_timeout=math.inf)
    assert options.ping_timeout == math.inf


@pytest.mark.parametrize(
    ("interval", "timeout", "error"),
    [
        (None, 5, ValueError),  # a timeout without a keepalive would never apply
        (0, None, ValueError),
        (-1, None, ValueError),
        (math.nan, None, ValueError),
        (math.inf, None, ValueError),
        (1, 0, ValueError),
        (1, -2, ValueError),
        ("5", None, TypeError),
        (True, None, TypeError),
        (1, "5", TypeError),
    ],
)
def test_bad_keepalive_arguments_fail_early(interval: Any, timeout: Any, error: type) -> None:
    with pytest.raises(error):
        ConnectionOptions.build(ping_interval=interval, ping_timeout=timeout)


async def test_every_entry_point_validates_the_keepalive_before_any_io() -> None:
    bad = {"ping_timeout": 3.0}  # without an interval
    stream, _ = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="ping_timeout"):
            await wrap_client_stream(nursery, stream, "h", "/", **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ping_timeout"):
            await wrap_server_stream(nursery, stream, **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ping_timeout"):
            await connect_websocket(nursery, "127.0.0.1", 1, "/", use_ssl=False, **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ping_timeout"):
            await connect_websocket_url(nursery, "ws://127.0.0.1:1/", **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ping_timeout"):
            async with open_websocket("127.0.0.1", 1, "/", use_ssl=False, **bad):  # type: ignore[arg-type]
                pass
        with pytest.raises(ValueError, match="ping_timeout"):
            async with open_websocket_url("ws://127.0.0.1:1/", **bad):  # type: ignore[arg-type]
                pass
        with pytest.raises(ValueError, match="ping_interval"):
            WebSocketServer(ignore_request, [object()], ping_interval=0)  # type: ignore[arg-type, list-item]
        with pytest.raises(ValueError, match="ping_timeout"):
            await serve_websocket(ignore_request, "127.0.0.1", 0, None, **bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------
# Off


@pytest.mark.parametrize("role", ROLES)
async def test_without_keepalive_nothing_is_sent_and_no_task_runs(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await hand_peer(nursery, role)
    names = [task.name for task in nursery.child_tasks]
    assert not any(name.endswith(" keepalive") for name in names), names
    await trio.sleep(3600)
    assert peer.pings() == []
    assert ws.closed is None
    assert ws.latency is None


# ----------------------------------------------------------------------
# On, with a peer that answers


@pytest.mark.parametrize("role", ROLES)
async def test_pings_every_interval_and_stays_open(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await hand_peer(nursery, role, ping_interval=10)
    start = trio.current_time()
    await trio.sleep(55)
    assert ws.closed is None
    assert len(peer.pings()) == 5
    offsets = [round(t - start, 6) for t in peer.ping_times]
    assert offsets == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert ws.statistics().pings_in_flight == 0


@pytest.mark.parametrize("role", ROLES)
async def test_latency_is_the_round_trip_of_the_last_pong(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await hand_peer(nursery, role, ping_interval=10, ping_timeout=5)
    assert ws.latency is None
    peer.pong_delay = 1.5
    await trio.sleep(12)
    assert ws.latency == pytest.approx(1.5)
    peer.pong_delay = 0.25
    await trio.sleep(10)
    assert ws.latency == pytest.approx(0.25)
    assert ws.statistics().latency == ws.latency
    assert ws.closed is None


async def test_both_sides_keepalive_over_a_real_pair(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await open_pair(
        nursery,
        client_options={"ping_interval": 3},
        server_options={"ping_interval": 4, "ping_timeout": 1},
    )
    await client.send_message("before")
    assert await server.get_message() == "before"
    await trio.sleep(100)
    assert client.closed is None and server.closed is None
    assert client.latency is not None and server.latency is not None
    await server.send_message("after")
    assert await client.get_message() == "after"


async def test_a_late_pong_within_the_timeout_is_fine(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=2, ping_timeout=5)
    peer.pong_delay = 4.5  # longer than the interval, within the timeout
    start = trio.current_time()
    await trio.sleep(30)
    assert ws.closed is None
    # One ping at a time: the next goes as soon as the late pong is in.
    offsets = [round(t - start, 6) for t in peer.ping_times]
    assert offsets == [2.0, 6.5, 11.0, 15.5, 20.0, 24.5, 29.0]
    assert ws.latency == pytest.approx(4.5)


# ----------------------------------------------------------------------
# On, with a peer that stops answering


@pytest.mark.parametrize("role", ROLES)
async def test_no_pong_closes_with_1011_after_the_timeout(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await hand_peer(nursery, role, ping_interval=10, ping_timeout=3)
    peer.answer_pings = False
    start = trio.current_time()
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert trio.current_time() - start == pytest.approx(13)
    assert info.value.reason == KEEPALIVE_TIMEOUT
    assert ws.closed == KEEPALIVE_TIMEOUT
    assert ws.close_sent == KEEPALIVE_TIMEOUT
    await trio.sleep(1)
    # The peer got our close frame, with the code and reason.
    assert [(f.code, f.reason) for f in peer.close_frames()] == [(1011, "keepalive ping timeout")]
    # The connection was failed: we did not wait for the peer's answer.
    assert ws.close_received is None
    with pytest.raises(ConnectionClosed):
        await ws.send_message("too late")


async def test_the_timeout_defaults_to_the_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=4)
    peer.answer_pings = False
    start = trio.current_time()
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    assert trio.current_time() - start == pytest.approx(8)
    assert ws.closed == KEEPALIVE_TIMEOUT


async def test_an_infinite_timeout_keeps_pinging_and_never_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=1, ping_timeout=math.inf)
    peer.answer_pings = False
    await trio.sleep(1000)
    assert ws.closed is None
    assert len(peer.pings()) == 1  # one in flight at a time; it is never answered


async def test_messages_received_before_the_timeout_stay_readable(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(
        nursery, ping_interval=5, ping_timeout=1, message_queue_size=10
    )
    peer.answer_pings = False
    await peer.send(TextMessage(data="one"))
    await peer.send(BytesMessage(data=b"two"))
    await trio.sleep(10)
    assert ws.closed == KEEPALIVE_TIMEOUT
    assert await ws.get_message() == "one"
    assert await ws.get_message() == b"two"
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == KEEPALIVE_TIMEOUT


async def test_the_connection_is_dropped_without_waiting_for_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        ws, peer = await client_with_hand_peer(nursery, ping_interval=2, ping_timeout=1)
        peer.answer_pings = False
        peer.answer_close = False
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
    # The nursery ended by itself at once: the stream was closed right after
    # our close frame, and the keepalive task was gone.
    assert trio.current_time() - start == pytest.approx(3)
    assert ws.closed == KEEPALIVE_TIMEOUT
    assert ws.close_sent == KEEPALIVE_TIMEOUT
    assert [(f.code, f.reason) for f in peer.close_frames()] == [(1011, "keepalive ping timeout")]
    assert ws.close_received is None


@pytest.mark.parametrize("role", ROLES)
async def test_a_peer_that_stops_reading_counts_as_gone(
    role: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that does not read cannot see our ping: the timeout covers
    the time the ping waits behind a stuck write, and the stuck writer is
    released with ConnectionClosed."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        ws, _ = await hand_peer(
            nursery,
            role,
            stream_pair=trio.testing.lockstep_stream_pair,
            run_peer=False,  # the peer never reads again
            ping_interval=2,
            ping_timeout=1,
        )
        await trio.sleep(0.5)
        with pytest.raises(ConnectionClosed) as info:
            await ws.send_message(b"x" * 100_000)  # blocks: nobody reads
        assert info.value.reason == KEEPALIVE_TIMEOUT
    assert trio.current_time() - start == pytest.approx(3)
    assert ws.closed == KEEPALIVE_TIMEOUT
    assert ws.close_sent is None  # it could not get past the stuck write


@pytest.mark.parametrize("role", ROLES)
async def test_a_slow_reader_within_the_timeout_is_not_cut_off(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await hand_peer(
        nursery,
        role,
        stream_pair=trio.testing.lockstep_stream_pair,
        run_peer=False,
        ping_interval=2,
        ping_timeout=5,
    )
    nursery.start_soon(ws.send_message, b"y" * 50_000)
    await trio.sleep(4)  # the ping (sent at 2 s) waits behind the stuck write
    nursery.start_soon(peer.run)  # the peer reads at last
    await trio.sleep(20)
    assert ws.closed is None
    assert any(isinstance(e, BytesMessage) for e in peer.events)
    assert ws.latency is not None


# ----------------------------------------------------------------------
# The task's lifetime


@pytest.mark.parametrize("role", ROLES)
async def test_closing_ends_the_keepalive_at_once(
    role: str, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        ws, _ = await hand_peer(nursery, role, ping_interval=1000)
        assert any(task.name.endswith(" keepalive") for task in nursery.child_tasks)
        await ws.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert not any(task.name.endswith(" keepalive") for task in nursery.child_tasks)
        nursery.cancel_scope.cancel()  # stops the hand peer
    # Nothing waited for the 1000 s interval.
    assert trio.current_time() - start < CLOSE_GRACE + 1


async def test_the_peer_closing_ends_the_keepalive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=1000)
    await peer.send(CloseConnection(code=1001, reason="bye"))
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    await trio.testing.wait_all_tasks_blocked()
    assert not any(task.name.endswith(" keepalive") for task in nursery.child_tasks)


async def test_open_websocket_block_exits_without_waiting_for_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: Any) -> None:
        ws = await request.accept()
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        start = trio.current_time()
        async with open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, ping_interval=500
        ) as ws:
            await ws.send_message("done")
        assert trio.current_time() - start < 500
        nursery.cancel_scope.cancel()


async def test_serve_websocket_pings_its_clients(nursery: trio.Nursery) -> None:
    """Real TCP: the server's keepalive runs next to each connection."""
    latencies: list[float | None] = []
    done = trio.Event()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        for _ in range(1000):
            if ws.latency is not None:
                break
            await trio.sleep(0.01)
        latencies.append(ws.latency)
        done.set()

    server = await nursery.start(
        lambda task_status: serve_websocket(
            handler,
            "127.0.0.1",
            0,
            None,
            ping_interval=0.02,
            ping_timeout=10,
            task_status=task_status,
        )
    )
    async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
        with trio.fail_after(15):
            await done.wait()
        assert ws.closed is None or ws.closed.code == 1000
    assert latencies and latencies[0] is not None
    assert latencies[0] >= 0


# ----------------------------------------------------------------------
# Keepalive pings and the user's pings


async def test_user_pings_work_next_to_the_keepalive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = await open_pair(nursery, client_options={"ping_interval": 0.5})
    for index in range(20):
        await client.ping(b"user-%d" % index)
        await trio.sleep(0.3)
    assert client.closed is None


async def test_a_user_ping_may_reuse_the_payload_of_a_keepalive_ping(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=1, ping_timeout=10)
    peer.pong_delay = 2
    await trio.sleep(1.5)
    [keepalive_ping] = peer.pings()
    # The same payload as the keepalive ping in flight: no ValueError, and
    # the pong answers both.
    with trio.fail_after(5):
        await ws.ping(keepalive_ping.payload)
    assert ws.closed is None


async def test_pongs_are_read_while_the_application_is_not_reading(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Unread messages (within the read-ahead bound) do not hold up pongs."""
    ws, peer = await client_with_hand_peer(nursery, ping_interval=1, ping_timeout=1)
    for index in range(20):
        await peer.send(TextMessage(data=f"unread {index}"))
    await trio.sleep(30)  # the application takes nothing all this time
    assert ws.closed is None
    assert ws.statistics().messages_buffered == 20
    assert len(peer.pings()) >= 29


async def test_a_user_ping_waiting_when_the_keepalive_fails_raises_connection_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, ping_interval=5, ping_timeout=2)
    peer.answer_pings = False
    with pytest.raises(ConnectionClosed) as info:
        await ws.ping(b"mine")
    assert info.value.reason == KEEPALIVE_TIMEOUT
    assert ws.statistics().pings_in_flight == 0


# ----------------------------------------------------------------------
# Against an independent implementation (real TCP on 127.0.0.1)

needs_websockets_trio = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="websockets' Trio API needs websockets 17, hence Python 3.11",
)


@needs_websockets_trio
async def test_our_keepalive_against_a_websockets_server() -> None:
    websockets_server = require_module("websockets.trio.server")

    async def echo(peer: Any) -> None:
        async for message in peer:
            await peer.send(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(websockets_server.serve, echo, 0, host="127.0.0.1", ping_interval=None)
        )
        port = server.listeners[0].socket.getsockname()[1]
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, ping_interval=0.02, ping_timeout=10
        ) as ws:
            for _ in range(1000):  # real time: up to 10 s
                if ws.latency is not None:
                    break
                await trio.sleep(0.01)
            assert ws.latency is not None
            assert ws.closed is None
            await ws.send_message("still open")
            assert await ws.get_message() == "still open"
        await server.aclose()
        nursery.cancel_scope.cancel()


@needs_websockets_trio
async def test_our_server_keepalive_against_a_websockets_client(nursery: trio.Nursery) -> None:
    websockets_client = require_module("websockets.trio.client")

    async def handler(request: Any) -> None:
        ws = await request.accept()
        for _ in range(1000):  # real time: up to 10 s
            if ws.latency is not None:
                break
            await trio.sleep(0.01)
        await ws.send_message(f"latency measured: {ws.latency is not None}, closed: {ws.closed}")

    server = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, ping_interval=0.02, ping_timeout=10)
    )
    async with websockets_client.connect(
        f"ws://127.0.0.1:{server.port}/", ping_interval=None
    ) as peer:
        with trio.fail_after(15):
            assert await peer.recv() == "latency measured: True, closed: None"
