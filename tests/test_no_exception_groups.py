"""No ExceptionGroup leaves a public call of ours.

Each scenario below drives one public entry point into one of its failure
modes, under ``trio.run(..., strict_exception_groups=True)``, catches what
the call raised, and checks that it is the one documented exception. The
only exception to the rule is a user handler's own error leaving
``serve_websocket``, which follows Trio's nursery rules (last test).
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import accept_by_hand, open_pair, read_request_head

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

Scenario = Callable[[], Awaitable[BaseException | None]]
#: Short real-time limits for the timeout scenarios (real sockets cannot
#: use the autojump clock: it would jump while the kernel works).
SHORT = 0.2


async def raised(call: Callable[[], Awaitable[object]]) -> BaseException | None:
    """What ``call()`` raised, or None."""
    try:
        await call()
    except BaseException as exc:
        return exc
    return None


async def raised_in_block(
    manager: Any, body: Callable[[Any], Awaitable[object]]
) -> BaseException | None:
    """What entering ``manager``, running ``body`` and leaving raised."""

    async def run() -> None:
        async with manager as value:
            await body(value)

    return await raised(run)


def run_strict(scenario: Scenario) -> BaseException | None:
    return trio.run(scenario, strict_exception_groups=True)


def check(outcome: BaseException | None, expected: type[BaseException] | None) -> None:
    assert not isinstance(outcome, BaseExceptionGroup), repr(outcome)
    if expected is None:
        assert outcome is None, repr(outcome)
    else:
        assert isinstance(outcome, expected), repr(outcome)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def tcp_server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A raw TCP server on 127.0.0.1 running ``handler`` per connection."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def ws_server(
    handler: Callable[[WebSocketRequest], Awaitable[None]], **options: Any
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler, "127.0.0.1", 0, None, task_status=task_status, **options
            )
        )
        yield server.port
        nursery.cancel_scope.cancel()


async def silent(stream: trio.SocketStream) -> None:
    """Accepts TCP and never says anything."""
    await trio.sleep_forever()


async def accepts_then_ignores(stream: trio.SocketStream) -> None:
    """Finishes the opening handshake, then reads and ignores everything
    (no pongs, no close answer)."""
    head = await read_request_head(stream)
    await accept_by_hand(stream, head)
    for _ in range(10_000):
        if not await stream.receive_some():
            return


async def rejects(request: WebSocketRequest) -> None:
    await request.reject(403, body=b"no")


async def closes_with_1011(request: WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.aclose(1011, "server failure")


# ----------------------------------------------------------------------
# Client entry points


async def open_to_closed_port() -> BaseException | None:
    return await raised_in_block(
        open_websocket("127.0.0.1", closed_port(), "/", use_ssl=False), trio.sleep
    )


async def open_url_to_closed_port() -> BaseException | None:
    return await raised_in_block(open_websocket_url(f"ws://127.0.0.1:{closed_port()}/"), trio.sleep)


async def connect_to_closed_port() -> BaseException | None:
    async with trio.open_nursery() as nursery:
        return await raised(
            lambda: connect_websocket(nursery, "127.0.0.1", closed_port(), "/", use_ssl=False)
        )


async def connect_url_to_closed_port() -> BaseException | None:
    async with trio.open_nursery() as nursery:
        return await raised(
            lambda: connect_websocket_url(nursery, f"ws://127.0.0.1:{closed_port()}/")
        )


async def open_rejected() -> BaseException | None:
    async with ws_server(rejects) as port:
        return await raised_in_block(
            open_websocket("127.0.0.1", port, "/", use_ssl=False), trio.sleep
        )


async def open_connect_timeout() -> BaseException | None:
    async with tcp_server(silent) as port:
        return await raised_in_block(
            open_websocket("127.0.0.1", port, "/", use_ssl=False, connect_timeout=SHORT),
            trio.sleep,
        )


async def open_disconnect_timeout() -> BaseException | None:
    async with tcp_server(accepts_then_ignores) as port:
        return await raised_in_block(
            open_websocket("127.0.0.1", port, "/", use_ssl=False, disconnect_timeout=SHORT),
            lambda ws: ws.send_message("hi"),
        )


async def open_user_error() -> BaseException | None:
    async def body(ws: Any) -> None:
        raise KeyError("mine")

    async with ws_server(closes_with_1011) as port:
        return await raised_in_block(open_websocket("127.0.0.1", port, "/", use_ssl=False), body)


async def open_user_error_and_disconnect_timeout() -> BaseException | None:
    async def body(ws: Any) -> None:
        raise KeyError("mine")

    async with tcp_server(accepts_then_ignores) as port:
        return await raised_in_block(
            open_websocket("127.0.0.1", port, "/", use_ssl=False, disconnect_timeout=SHORT), body
        )


async def open_peer_closes_then_get_message() -> BaseException | None:
    async def body(ws: Any) -> None:
        await ws.get_message()

    async with ws_server(closes_with_1011) as port:
        return await raised_in_block(open_websocket("127.0.0.1", port, "/", use_ssl=False), body)


async def open_keepalive_timeout() -> BaseException | None:
    async def body(ws: Any) -> None:
        await ws.get_message()  # ends with ConnectionClosed(1011)

    async with tcp_server(accepts_then_ignores) as port:
        return await raised_in_block(
            open_websocket(
                "127.0.0.1",
                port,
                "/",
                use_ssl=False,
                ping_interval=0.05,
            ),
            body,
        )


async def open_cancelled_while_connecting() -> BaseException | None:
    """A cancelled call raises the plain ``Cancelled`` its scope absorbs."""
    async with tcp_server(silent) as port:
        with trio.move_on_after(SHORT):
            outcome = await raised_in_block(
                open_websocket("127.0.0.1", port, "/", use_ssl=False), trio.sleep
            )
            if isinstance(outcome, trio.Cancelled):
                raise outcome
            return outcome
    return None


async def open_bad_use_ssl() -> BaseException | None:
    return await raised_in_block(
        open_websocket("127.0.0.1", 1, "/", use_ssl="yes"),  # type: ignore[arg-type]
        trio.sleep,
    )


async def open_bad_keepalive() -> BaseException | None:
    return await raised_in_block(
        open_websocket("127.0.0.1", 1, "/", use_ssl=False, ping_timeout=1.0), trio.sleep
    )


async def open_bad_url() -> BaseException | None:
    return await raised_in_block(open_websocket_url("http://127.0.0.1/"), trio.sleep)


async def wrap_client_peer_hangs_up() -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.aclose()
    async with trio.open_nursery() as nursery:
        return await raised(lambda: wrap_client_stream(nursery, client_stream, "h", "/"))


async def wrap_client_garbage() -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    async with trio.open_nursery() as nursery:
        return await raised(lambda: wrap_client_stream(nursery, client_stream, "h", "/"))


async def wrap_server_garbage() -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an upgrade
    async with trio.open_nursery() as nursery:
        return await raised(lambda: wrap_server_stream(nursery, server_stream))


async def wrap_server_peer_hangs_up() -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.aclose()
    async with trio.open_nursery() as nursery:
        return await raised(lambda: wrap_server_stream(nursery, server_stream))


async def open_tls_untrusted_certificate() -> BaseException | None:
    """A wss:// server whose certificate the client does not trust."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    trustme.CA().configure_trust(client_context)  # another CA
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler, "127.0.0.1", 0, server_context, task_status=task_status
            )
        )
        outcome = await raised_in_block(
            open_websocket_url(f"wss://127.0.0.1:{server.port}/", client_context), trio.sleep
        )
        nursery.cancel_scope.cancel()
    return outcome


CLIENT_SCENARIOS: list[tuple[Scenario, type[BaseException] | None]] = [
    (open_to_closed_port, HandshakeError),
    (open_url_to_closed_port, HandshakeError),
    (connect_to_closed_port, HandshakeError),
    (connect_url_to_closed_port, HandshakeError),
    (open_rejected, ConnectionRejected),
    (open_tls_untrusted_certificate, HandshakeError),
    (open_connect_timeout, ConnectionTimeout),
    (open_disconnect_timeout, DisconnectionTimeout),
    (open_user_error, KeyError),
    (open_user_error_and_disconnect_timeout, KeyError),  # the block's error, as itself
    (open_peer_closes_then_get_message, ConnectionClosed),
    (open_keepalive_timeout, ConnectionClosed),
    (open_cancelled_while_connecting, None),
    (open_bad_use_ssl, TypeError),
    (open_bad_keepalive, ValueError),
    (open_bad_url, ValueError),
    (wrap_client_peer_hangs_up, HandshakeError),
    (wrap_client_garbage, HandshakeError),
    (wrap_server_garbage, HandshakeError),
    (wrap_server_peer_hangs_up, HandshakeError),
]


@pytest.mark.parametrize(
    ("scenario", "expected"), CLIENT_SCENARIOS, ids=[s.__name__ for s, _ in CLIENT_SCENARIOS]
)
def test_entry_points_raise_one_exception(
    scenario: Scenario, expected: type[BaseException] | None
) -> None:
    check(run_strict(scenario), expected)


# ----------------------------------------------------------------------
# Connection methods


ConnectionCall = Callable[[Any], Awaitable[object]]

METHOD_CALLS: list[tuple[str, ConnectionCall]] = [
    ("get_message", lambda ws: ws.get_message()),
    ("receive", lambda ws: ws.receive()),
    ("send_message", lambda ws: ws.send_message("x")),
    ("send", lambda ws: ws.send(b"x")),
    ("ping", lambda ws: ws.ping()),
    ("pong", lambda ws: ws.pong()),
    ("aclose", lambda ws: ws.aclose()),
    ("anext", lambda ws: ws.__anext__()),
]


async def after_abnormal_close(call: ConnectionCall) -> BaseException | None:
    async with trio.open_nursery() as nursery:
        client, server = await open_pair(nursery)
        await server.aclose(1011, "broken")
        outcome = await raised(lambda: call(client))
        nursery.cancel_scope.cancel()
    return outcome


async def after_stream_loss(call: ConnectionCall) -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        client, _ = await open_pair(nursery, client_stream, server_stream)
        await trio.aclose_forcefully(server_stream)
        await trio.testing.wait_all_tasks_blocked()
        outcome = await raised(lambda: call(client))
        nursery.cancel_scope.cancel()
    return outcome


async def during_stream_loss(call: ConnectionCall) -> BaseException | None:
    """The stream breaks while the call waits (a ping waiting for its pong,
    a get_message waiting for a message)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        client, server = await open_pair(nursery, client_stream, server_stream)
        await server.aclose(1011)  # the server side stops answering
        outcome: list[BaseException | None] = []

        async def drop_later() -> None:
            await trio.sleep(0.01)
            await trio.aclose_forcefully(client_stream)

        nursery.start_soon(drop_later)
        outcome.append(await raised(lambda: call(client)))
        nursery.cancel_scope.cancel()
    return outcome[0]


@pytest.mark.parametrize(("name", "call"), METHOD_CALLS, ids=[n for n, _ in METHOD_CALLS])
def test_methods_after_an_abnormal_close(name: str, call: ConnectionCall) -> None:
    check(
        run_strict(lambda: after_abnormal_close(call)),
        None if name == "aclose" else ConnectionClosed,
    )


@pytest.mark.parametrize(("name", "call"), METHOD_CALLS, ids=[n for n, _ in METHOD_CALLS])
def test_methods_after_the_stream_is_lost(name: str, call: ConnectionCall) -> None:
    check(
        run_strict(lambda: after_stream_loss(call)), None if name == "aclose" else ConnectionClosed
    )


@pytest.mark.parametrize("name", ["get_message", "receive", "ping", "aclose"])
def test_methods_waiting_when_the_stream_breaks(name: str) -> None:
    call = dict(METHOD_CALLS)[name]
    outcome = run_strict(lambda: during_stream_loss(call))
    check(outcome, None if name == "aclose" else ConnectionClosed)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda ws: ws.send_message(1), ValueError),
        (lambda ws: ws.ping(b"x" * 126), ValueError),
        (lambda ws: ws.pong("text"), ValueError),
        (lambda ws: ws.aclose(999), ValueError),
        (lambda ws: ws.aclose("1000"), TypeError),
    ],
)
def test_methods_with_bad_arguments(call: ConnectionCall, expected: type[BaseException]) -> None:
    async def scenario() -> BaseException | None:
        async with trio.open_nursery() as nursery:
            client, _ = await open_pair(nursery)
            outcome = await raised(lambda: call(client))
            nursery.cancel_scope.cancel()
        return outcome

    check(run_strict(scenario), expected)


def test_receive_after_a_normal_close_is_end_of_channel() -> None:
    async def scenario() -> BaseException | None:
        async with trio.open_nursery() as nursery:
            client, server = await open_pair(nursery)
            await server.aclose()
            return await raised(client.receive)

    check(run_strict(scenario), trio.EndOfChannel)


# ----------------------------------------------------------------------
# WebSocketRequest


async def with_request(
    act: Callable[[WebSocketRequest, trio.abc.Stream], Awaitable[object]],
) -> BaseException | None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        request = await wrap_server_stream(nursery, server_stream)
        outcome = await raised(lambda: act(request, client_stream))
        nursery.cancel_scope.cancel()
    return outcome


async def accept_twice(request: WebSocketRequest, client: trio.abc.Stream) -> None:
    await request.accept()
    await request.accept()


async def reject_after_client_left(request: WebSocketRequest, client: trio.abc.Stream) -> None:
    await client.aclose()
    await request.reject(400)


REQUEST_SCENARIOS: list[
    tuple[str, Callable[..., Awaitable[object]], type[BaseException] | None]
] = [
    ("accept_unknown_subprotocol", lambda r, c: r.accept(subprotocol="nope"), ValueError),
    ("accept_twice", accept_twice, RuntimeError),
    ("reject_then_accept", lambda r, c: _reject_then_accept(r), RuntimeError),
    ("reject_bad_status", lambda r, c: r.reject(101), ValueError),
    ("reject_bad_status_type", lambda r, c: r.reject("404"), TypeError),
    ("reject_after_client_left", reject_after_client_left, None),
]


async def _reject_then_accept(request: WebSocketRequest) -> None:
    await request.reject(403)
    await request.accept()


@pytest.mark.parametrize(
    ("name", "act", "expected"), REQUEST_SCENARIOS, ids=[n for n, _, _ in REQUEST_SCENARIOS]
)
def test_request_accept_and_reject(
    name: str, act: Callable[..., Awaitable[object]], expected: type[BaseException] | None
) -> None:
    check(run_strict(lambda: with_request(act)), expected)


def test_accept_after_the_stream_broke_is_connection_closed() -> None:
    class BrokenStream(trio.abc.Stream):
        """Delivers the request, then fails every write."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("gone")

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            data, self.data = self.data, b""
            return data

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    async def scenario() -> BaseException | None:
        stream = BrokenStream(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, stream)
            return await raised(request.accept)

    check(run_strict(scenario), ConnectionClosed)


# ----------------------------------------------------------------------
# Server start-up


async def handler(request: WebSocketRequest) -> None:
    await request.accept()


async def started(start: Callable[..., Awaitable[object]]) -> BaseException | None:
    """What ``nursery.start(start)`` raised (caught inside the nursery, so
    the nursery's own grouping is not counted)."""
    async with trio.open_nursery() as nursery:
        outcome = await raised(lambda: nursery.start(start))
        nursery.cancel_scope.cancel()
    return outcome


def test_serve_websocket_on_a_port_in_use_is_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = run_strict(
            lambda: started(
                lambda task_status: serve_websocket(
                    handler, "127.0.0.1", port, None, task_status=task_status
                )
            )
        )
    check(outcome, OSError)


def test_serve_websocket_with_bad_options_is_value_error() -> None:
    outcome = run_strict(
        lambda: started(
            lambda task_status: serve_websocket(
                handler, "127.0.0.1", 0, None, ping_interval=-1, task_status=task_status
            )
        )
    )
    check(outcome, ValueError)


def test_server_without_listeners_is_value_error() -> None:
    with pytest.raises(ValueError):
        WebSocketServer(handler, [])


def test_server_run_on_a_broken_listener_raises_its_error() -> None:
    async def scenario() -> BaseException | None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        for listener in listeners:
            await listener.aclose()
        server = WebSocketServer(handler, listeners)
        return await started(server.run)

    outcome = run_strict(scenario)
    check(outcome, (OSError, trio.ClosedResourceError))  # type: ignore[arg-type]


def test_a_handler_error_leaves_serve_websocket_by_trio_rules() -> None:
    """The documented exception to the rule: a handler's own error is not
    ours to hide; it leaves serve_websocket inside Trio's groups."""

    async def failing(request: WebSocketRequest) -> None:
        await request.accept()
        raise KeyError("handler bug")

    async def scenario() -> BaseException | None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    failing, "127.0.0.1", 0, None, task_status=task_status
                )
            )
            async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
                try:
                    await ws.get_message()  # the handler fails: closed with 1011
                except ConnectionClosed:
                    pass
            await trio.sleep_forever()  # until the handler's error arrives
        return None

    with pytest.raises(BaseExceptionGroup) as info:
        run_strict(scenario)
    assert info.value.subgroup(KeyError) is not None
