"""``ReconnectingWebSocket``: reconnecting with backoff against real
loopback servers that drop, refuse or reject.

Backoff is checked with trio's autojump clock. To keep the clock from
jumping while loopback I/O is still in flight, every timeout on both sides
is infinite: the only deadlines left are the backoff pauses (and the
servers' own sleeps), so a jump can only end one of those, and the times
read from the clock are exact. The jitter comes from an injected random
source.
"""

from __future__ import annotations

import itertools
import math
import random
import ssl
import sys
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import accept_by_hand, read_request_head

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    ReconnectingWebSocket,
    WebSocketConnection,
    WebSocketRequest,
    default_retry_policy,
    serve_websocket,
)
from trio_websocket._extras.reconnect import backoff_delay

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

NO_TIMEOUTS = {"connect_timeout": math.inf, "disconnect_timeout": math.inf}


class FixedRandom(random.Random):
    """A random source that always returns ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Server:
    """A loopback WebSocket server whose n-th connection (0-based) follows
    ``plan[n]`` (the last entry repeats):

    - ``"close"``: send a greeting, then close with 1001 (going away);
    - ``"hold"``: send a greeting, then echo until the client closes;
    - ``"reject:<status>"``: refuse the handshake with that status;
    - ``"linger:<seconds>"``: send a greeting, wait, then close with 1001.
    """

    def __init__(self, *plan: str) -> None:
        self.plan = list(plan)
        self.connections = 0
        self.received: list[list[str | bytes]] = []
        self.close_codes: list[int | None] = []
        self.connected_at: list[float] = []
        self.subprotocols: list[tuple[str, ...]] = []
        self.closed = trio.Event()  # set when a connection has closed

    async def handle(self, request: WebSocketRequest) -> None:
        index = self.connections
        self.connections += 1
        step = self.plan[min(index, len(self.plan) - 1)]
        self.subprotocols.append(request.proposed_subprotocols)
        if step.startswith("reject:"):
            await request.reject(int(step.split(":")[1]))
            return
        ws = await request.accept()
        self.connected_at.append(trio.current_time())
        messages: list[str | bytes] = []
        self.received.append(messages)
        try:
            await ws.send_message(f"hello {index}")
            if step == "close":
                await ws.aclose(1001)
            elif step.startswith("linger:"):
                await trio.sleep(float(step.split(":")[1]))
                await ws.aclose(1001)
            else:
                for _ in range(1000):
                    message = await ws.get_message()
                    messages.append(message)
                    await ws.send_message(message)
        except ConnectionClosed:
            pass
        self.close_codes.append(ws.closed.code if ws.closed else None)
        self.closed.set()

    async def start(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(
            partial(serve_websocket, self.handle, "127.0.0.1", 0, None, **NO_TIMEOUTS)
        )
        return f"ws://127.0.0.1:{server.port}/feed"


async def closed_port_url() -> str:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"ws://127.0.0.1:{port}/"


async def read_forever(ws: WebSocketConnection, into: list[Any] | None = None) -> None:
    for _ in range(10_000):
        message = await ws.get_message()
        if into is not None:
            into.append(message)


def recording_policy(times: list[float]) -> Any:
    def policy(error: BaseException) -> bool:
        times.append(trio.current_time())
        return default_retry_policy(error)

    return policy


# ---------------------------------------------------------------------------
# Reconnecting


async def test_reconnects_after_each_close_and_resubscribes_with_on_connect(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server("close", "close", "hold")
    url = await server.start(nursery)
    greetings: list[Any] = []

    async def on_connect(ws: WebSocketConnection) -> None:
        await ws.send_message("subscribe")

    async def handler(ws: WebSocketConnection) -> None:
        await read_forever(ws, greetings)

    client = ReconnectingWebSocket(
        url, handler, on_connect=on_connect, rng=FixedRandom(0), **NO_TIMEOUTS
    )
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        for _ in range(1000):
            if server.received and len(server.received) == 3 and server.received[2]:
                break
            await trio.sleep(0.01)
        connection = await client.wait_connected()
        assert connection is client.connection
        client.stop()
    assert greetings[:1] == ["hello 0"]
    assert "hello 1" in greetings and "hello 2" in greetings
    assert server.connections == client.attempts == client.connections == 3
    assert server.received[2] == ["subscribe"]  # on_connect ran on the third connection too
    assert isinstance(client.last_error, ConnectionClosed)
    assert client.last_error.reason is not None
    assert client.last_error.reason.code == 1001
    assert client.connection is None
    assert server.close_codes[-1] == 1000  # stop() closed cleanly


async def test_reconnects_after_the_tcp_connection_is_cut(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cuts = 0
    served = trio.Event()

    async def accept_then_cut(stream: trio.abc.Stream) -> None:
        nonlocal cuts
        head = await read_request_head(stream)
        await accept_by_hand(stream, head)
        cuts += 1
        if cuts == 2:
            served.set()
        await trio.aclose_forcefully(stream)  # no close frame

    listeners = await nursery.start(partial(trio.serve_tcp, accept_then_cut, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    client = ReconnectingWebSocket(url, read_forever, rng=FixedRandom(0), **NO_TIMEOUTS)
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        await served.wait()
        client.stop()
    assert client.attempts >= 2
    assert isinstance(client.last_error, ConnectionClosed)
    assert client.last_error.reason is not None
    assert client.last_error.reason.code == 1006


async def test_backoff_grows_by_the_factor_up_to_the_cap_then_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    url = await closed_port_url()
    failed_at: list[float] = []
    client = ReconnectingWebSocket(
        url,
        read_forever,
        initial_delay=1,
        backoff_factor=2,
        max_delay=5,
        rng=FixedRandom(0),  # no jitter taken off
        max_attempts=6,
        retry_policy=recording_policy(failed_at),
        **NO_TIMEOUTS,
    )
    with pytest.raises(HandshakeError) as info:
        await client.run()
    assert info.value.phase == "connect"
    assert client.attempts == 6
    assert client.failures == 6
    assert client.connections == 0
    assert client.last_error is info.value
    pauses = [later - earlier for earlier, later in itertools.pairwise(failed_at)]
    assert pauses == pytest.approx([1, 2, 4, 5, 5])


async def test_jitter_comes_from_the_injected_random_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    url = await closed_port_url()
    failed_at: list[float] = []
    client = ReconnectingWebSocket(
        url,
        read_forever,
        initial_delay=2,
        backoff_factor=3,
        max_delay=100,
        jitter=0.5,
        rng=random.Random(1234),
        max_attempts=4,
        retry_policy=recording_policy(failed_at),
        **NO_TIMEOUTS,
    )
    with pytest.raises(HandshakeError):
        await client.run()
    same_draws = random.Random(1234)
    expected = [2 * (1 - 0.5 * same_draws.random()) * 3**n for n in range(3)]
    pauses = [later - earlier for earlier, later in itertools.pairwise(failed_at)]
    assert pauses == pytest.approx(expected)
    assert all(base / 2 <= pause <= base for pause, base in zip(pauses, [2, 6, 18], strict=True))


async def test_short_lived_connections_back_off_and_a_healthy_one_resets(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Three connections dropped at once (pauses 1, 2, 4), one that lasts
    # 30 s (the pause after it starts over at 1), one more dropped at once
    # (pause 2), then one that holds.
    server = Server("close", "close", "close", "linger:30", "close", "hold")
    url = await server.start(nursery)
    client = ReconnectingWebSocket(
        url, read_forever, rng=FixedRandom(0), healthy_after=10, **NO_TIMEOUTS
    )
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        for _ in range(10_000):
            if server.connections == 6:
                break
            await trio.sleep(0.01)
        await client.wait_connected()
        assert client.failures == 2  # the last connection has not lasted yet
        await trio.sleep(10)
        assert client.failures == 0  # now it has
        client.stop()
    opened = server.connected_at
    pauses = [later - earlier for earlier, later in itertools.pairwise(opened)]
    assert pauses == pytest.approx([1, 2, 4, 30 + 1, 2])


async def test_retries_a_server_error_until_it_recovers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server("reject:503", "reject:503", "hold")
    url = await server.start(nursery)
    client = ReconnectingWebSocket(url, read_forever, rng=FixedRandom(0), **NO_TIMEOUTS)
    await_connected = trio.Event()

    async def on_connect(ws: WebSocketConnection) -> None:
        await_connected.set()

    client = ReconnectingWebSocket(
        url, read_forever, on_connect=on_connect, rng=FixedRandom(0), **NO_TIMEOUTS
    )
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        await await_connected.wait()
        assert isinstance(client.last_error, ConnectionRejected)
        assert client.last_error.status_code == 503
        assert client.attempts == 3
        client.stop()


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_client_errors_are_not_retried(nursery: trio.Nursery, status: int) -> None:
    server = Server(f"reject:{status}")
    url = await server.start(nursery)
    client = ReconnectingWebSocket(url, read_forever, **NO_TIMEOUTS)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        await client.run()
    assert info.value.status_code == status
    assert client.attempts == server.connections == 1
    assert not client.running


async def test_certificate_that_does_not_verify_is_not_retried(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = await nursery.start(
        serve_websocket, Server("hold").handle, "127.0.0.1", 0, server_context
    )
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)  # another CA than the server's
    client = ReconnectingWebSocket(f"wss://127.0.0.1:{server.port}/", read_forever, untrusting)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        await client.run()
    assert info.value.phase == "tls"
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert client.attempts == 1


# ---------------------------------------------------------------------------
# How run() ends


async def test_handler_returning_ends_run_and_closes_with_1000(nursery: trio.Nursery) -> None:
    server = Server("hold")
    url = await server.start(nursery)
    seen: list[Any] = []

    async def handler(ws: WebSocketConnection) -> None:
        seen.append(await ws.get_message())

    client = ReconnectingWebSocket(url, handler)
    with trio.fail_after(10):
        await client.run()
    assert seen == ["hello 0"]
    assert client.attempts == 1
    assert client.connection is None
    with trio.fail_after(10):
        await server.closed.wait()
    assert server.close_codes == [1000]
    with pytest.raises(trio.ClosedResourceError):
        await client.wait_connected()


async def test_close_that_times_out_after_the_handler_returned_is_raised_not_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def accept_and_ignore(stream: trio.abc.Stream) -> None:
        await accept_by_hand(stream, await read_request_head(stream))
        with trio.move_on_after(100):
            while await stream.receive_some():  # never answers the close
                pass

    listeners = await nursery.start(partial(trio.serve_tcp, accept_and_ignore, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"

    async def handler(ws: WebSocketConnection) -> None:
        return None

    client = ReconnectingWebSocket(
        url, handler, connect_timeout=math.inf, disconnect_timeout=3, max_attempts=2
    )
    with pytest.raises(DisconnectionTimeout):
        await client.run()
    assert client.attempts == 1
    assert isinstance(client.last_error, DisconnectionTimeout)


async def test_handler_error_propagates_as_itself_and_closes_the_connection(
    nursery: trio.Nursery,
) -> None:
    server = Server("hold")
    url = await server.start(nursery)

    async def handler(ws: WebSocketConnection) -> None:
        await ws.get_message()
        raise KeyError("bug in the handler")

    client = ReconnectingWebSocket(url, handler)
    with trio.fail_after(10), pytest.raises(KeyError, match="bug in the handler"):
        await client.run()
    assert client.attempts == 1
    assert client.connection is None


async def test_connection_closed_inside_a_handler_nursery_is_a_drop(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server("close", "hold")
    url = await server.start(nursery)
    done = trio.Event()

    async def handler(ws: WebSocketConnection) -> None:
        if server.connections == 2:
            done.set()
        async with trio.open_nursery() as tasks:
            tasks.start_soon(read_forever, ws)
            tasks.start_soon(trio.sleep_forever)

    client = ReconnectingWebSocket(url, handler, rng=FixedRandom(0), **NO_TIMEOUTS)
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        await done.wait()
        client.stop()
    assert client.attempts == 2
    # The drop itself, not the handler nursery's ExceptionGroup.
    assert isinstance(client.last_error, ConnectionClosed)


async def test_giving_up_on_drops_seen_in_a_handler_nursery_raises_connection_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server("close")
    url = await server.start(nursery)

    async def handler(ws: WebSocketConnection) -> None:
        async with trio.open_nursery() as tasks:
            tasks.start_soon(read_forever, ws)

    client = ReconnectingWebSocket(url, handler, max_attempts=2, **NO_TIMEOUTS)
    with pytest.raises(ConnectionClosed):
        await client.run()
    assert client.attempts == 2


async def test_stop_during_backoff_returns_without_waiting(
    mock_clock: trio.testing.MockClock,
) -> None:
    url = await closed_port_url()
    failed = trio.Event()

    def policy(error: BaseException) -> bool:
        failed.set()
        return True

    client = ReconnectingWebSocket(
        url, read_forever, initial_delay=100, max_delay=100, retry_policy=policy
    )
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        with trio.fail_after(10):
            await failed.wait()  # the mock clock does not move: no autojump
        await trio.testing.wait_all_tasks_blocked()  # now in the pause
        assert client.failures == 1
        start = trio.current_time()
        client.stop()
        client.stop()  # idempotent
    assert trio.current_time() == start
    assert client.attempts == 1
    assert not client.running


async def test_stop_before_run_makes_run_return_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = ReconnectingWebSocket("ws://127.0.0.1:1/", read_forever)
    assert repr(client) == (
        "<ReconnectingWebSocket ws://127.0.0.1:1/ not started, attempts=0, "
        "connections=0, last_error=None>"
    )
    client.stop()
    with trio.fail_after(1):
        await client.run()
    assert client.attempts == 0
    assert "stopped" in repr(client)
    with pytest.raises(RuntimeError, match="once"):
        await client.run()


async def test_stop_from_inside_the_handler_closes_cleanly(nursery: trio.Nursery) -> None:
    server = Server("hold")
    url = await server.start(nursery)

    async def handler(ws: WebSocketConnection) -> None:
        await ws.get_message()
        client.stop()
        await trio.sleep_forever()

    client = ReconnectingWebSocket(url, handler)
    with trio.fail_after(10):
        await client.run()
        await server.closed.wait()
    assert server.close_codes == [1000]


async def test_cancelling_the_caller_closes_the_connection_and_leaves_no_task(
    nursery: trio.Nursery,
) -> None:
    server = Server("hold")
    url = await server.start(nursery)
    client = ReconnectingWebSocket(url, read_forever)
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as inner:
            await inner.start(client.run)
            connection = client.connection
            assert connection is not None
            scope.cancel()
    assert scope.cancelled_caught
    assert connection.closed is not None
    assert client.connection is None
    assert not client.running


async def test_start_returns_once_connected_and_other_tasks_can_send(
    nursery: trio.Nursery,
) -> None:
    server = Server("hold")
    url = await server.start(nursery)
    echoed = trio.Event()

    async def handler(ws: WebSocketConnection) -> None:
        for _ in range(100):
            if await ws.get_message() == "from another task":
                echoed.set()

    client = ReconnectingWebSocket(url, handler)
    async with trio.open_nursery() as inner:
        with trio.fail_after(10):
            await inner.start(client.run)
            assert client.connection is not None
            assert " connected, attempts=1, connections=1," in repr(client)
            ws = await client.wait_connected()
            await ws.send_message("from another task")
            await echoed.wait()
        client.stop()
    assert server.received[0] == ["from another task"]


async def test_connect_options_are_used_for_every_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = Server("close", "hold")
    url = await server.start(nursery)
    connected = trio.Event()

    async def on_connect(ws: WebSocketConnection) -> None:
        if server.connections == 2:
            connected.set()

    client = ReconnectingWebSocket(
        url,
        read_forever,
        on_connect=on_connect,
        subprotocols=["chat.v2"],
        rng=FixedRandom(0),
        **NO_TIMEOUTS,
    )
    async with trio.open_nursery() as inner:
        inner.start_soon(client.run)
        await connected.wait()
        client.stop()
    assert server.subprotocols == [("chat.v2",), ("chat.v2",)]


# ---------------------------------------------------------------------------
# The policy, the delays, the arguments


def cert_failure() -> HandshakeError:
    error = HandshakeError("certificate", phase="tls")
    error.__cause__ = ssl.SSLCertVerificationError("unknown CA")
    return error


def refused_redirect() -> HandshakeError:
    error = HandshakeError("drops TLS", phase="http")
    error.__cause__ = ConnectionRejected(302, [], None)
    return error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionClosed(None), True),
        (HandshakeError("dns", phase="dns"), True),
        (HandshakeError("refused", phase="connect"), True),
        (HandshakeError("reset during TLS", phase="tls"), True),
        (ConnectionTimeout("slow", phase="http"), True),
        (ConnectionRejected(500, [], None), True),
        (ConnectionRejected(503, [], None), True),
        (ConnectionRejected(429, [], None), True),
        (ConnectionRejected(408, [], None), True),
        (ConnectionRejected(400, [], None), False),
        (ConnectionRejected(403, [], None), False),
        (cert_failure(), False),
        (refused_redirect(), False),
        (ValueError("bad"), False),
        (ExceptionGroup("drop", [ConnectionClosed(None)]), True),
        (ExceptionGroup("mixed", [ConnectionClosed(None), KeyError()]), False),
    ],
)
def test_default_retry_policy(error: BaseException, retried: bool) -> None:
    assert default_retry_policy(error) is retried


def test_backoff_delay_is_capped_and_never_overflows() -> None:
    fixed = FixedRandom(0)
    delays = [
        backoff_delay(n, initial_delay=0.5, backoff_factor=2, max_delay=30, jitter=1, rng=fixed)
        for n in (1, 2, 3, 7, 8, 10_000)
    ]
    assert delays == [0.5, 1, 2, 30, 30, 30]
    full_jitter = backoff_delay(
        3, initial_delay=1, backoff_factor=2, max_delay=60, jitter=1, rng=FixedRandom(0.75)
    )
    assert full_jitter == pytest.approx(1)  # 4 s, minus 75 % of it
    assert backoff_delay(
        10_000, initial_delay=1, backoff_factor=10, max_delay=math.inf, jitter=0, rng=fixed
    ) == pytest.approx(10.0**64)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"url": "http://example.com/"}, ValueError),
        ({"url": "ws://example.com/", "ssl_context": ssl.create_default_context()}, ValueError),
        ({"initial_delay": -1}, ValueError),
        ({"backoff_factor": 0.5}, ValueError),
        ({"max_delay": 0.1, "initial_delay": 1}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": 2.5}, TypeError),
        ({"initial_delay": "1"}, TypeError),
        ({"handler": None}, TypeError),
        ({"no_such_option": 1}, TypeError),
        ({"url": "ws://example.com/", "ssl_context": None, "extra": 1}, TypeError),
    ],
)
def test_bad_arguments_fail_at_construction(arguments: dict[str, Any], error: type) -> None:
    arguments = {"url": "ws://example.com/", "handler": read_forever, **arguments}
    with pytest.raises(error):
        ReconnectingWebSocket(**arguments)
