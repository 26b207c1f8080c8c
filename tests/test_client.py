"""The client entry points: ``open_websocket*``, ``connect_websocket*``.

These talk to real loopback TCP servers, because opening the socket is part
of what they do. The peer is either our own ``serve_websocket`` or a server
driven by hand (``RawServer``) that reads the request bytes and answers with
wsproto, garbage, or nothing at all. Timeouts use trio's mock clock: a test
lets the clock jump only in the phase where the timeout is expected, so a
jump taken while loopback I/O is still in flight cannot fire a different one.
Names are resolved by a custom trio hostname resolver where a test needs a
default port (80) that it cannot listen on.
"""

from __future__ import annotations

import base64
import socket
import sys
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import (
    LoopbackResolver,
    accept_by_hand,
    answer_close_by_hand,
    echo_handler,
    read_request_head,
)
from wsproto.utilities import ProtocolError

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

# ---------------------------------------------------------------------------
# Helpers


class BlockError(Exception):
    """Raised by a test inside an ``open_websocket`` block."""


async def start_echo_server(nursery: trio.Nursery) -> WebSocketServer:
    return await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> WebSocketServer:
    return await start_echo_server(nursery)


async def start_tcp(nursery: trio.Nursery, handler: Any, host: str = "127.0.0.1") -> int:
    """Serve ``handler`` (raw trio streams) on ``host``; return the port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=host))
    return int(listeners[0].socket.getsockname()[1])


async def drain_until_eof(stream: trio.abc.Stream) -> None:
    try:
        for _ in range(100_000):
            if not await stream.receive_some():
                return
    except trio.BrokenResourceError:
        return  # reset by the peer: gone all the same
    raise AssertionError("the peer kept sending")


def header_values(head: bytes, name: bytes) -> list[bytes]:
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            values.append(value.strip())
    return values


class RawServer:
    """A loopback server driven by hand, one behaviour for every connection.

    - ``accept``: answers the handshake with wsproto, then the close.
    - ``silent``: reads the request and never answers.
    - ``garbage``: answers with bytes that are not HTTP.
    - ``hangup``: reads the request and closes the connection.
    - ``accept_then_ignore``: completes the handshake, then reads and
      ignores everything (never answers the close).
    - ``reject_until_eof``: answers 503 with a body that ends where the
      connection does (no Content-Length, as HTTP/1.1 allows).
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.heads: list[bytes] = []
        self.request_received = trio.Event()
        self.data_after_handshake = trio.Event()
        self.client_gone = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            head = await read_request_head(stream)
            self.heads.append(head)
            self.request_received.set()
            if self.behaviour == "accept":
                connection = await accept_by_hand(stream, head)
                await answer_close_by_hand(stream, connection)
            elif self.behaviour == "silent":
                await drain_until_eof(stream)
            elif self.behaviour == "garbage":
                await stream.send_all(b"HELLO THERE\r\nthis is not http\r\n\r\n")
                await drain_until_eof(stream)
            elif self.behaviour == "hangup":
                await stream.aclose()
            elif self.behaviour == "reject_until_eof":
                await stream.send_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n"
                    b"x-reason: maintenance\r\n\r\nbusy, try later"
                )
                await stream.aclose()
            elif self.behaviour == "accept_then_ignore":
                await accept_by_hand(stream, head)
                if await stream.receive_some():
                    self.data_after_handshake.set()
                    await drain_until_eof(stream)
            else:  # pragma: no cover
                raise AssertionError(self.behaviour)
        finally:
            self.client_gone.set()

    async def start(self, nursery: trio.Nursery, host: str = "127.0.0.1") -> int:
        return await start_tcp(nursery, self.handle, host)


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the run, walked from the root task."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found: set[trio.lowlevel.Task] = set()
    pending = [root]
    while pending:
        task = pending.pop()
        found.add(task)
        for child_nursery in task.child_nurseries:
            pending.extend(child_nursery.child_tasks)
    return found


async def closed_port() -> int:
    """A loopback port nobody listens on."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything reachable through __cause__/__context__."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 100:
        current = pending.pop()
        if any(current is other for other in seen):
            continue
        seen.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen


# ---------------------------------------------------------------------------
# Opening a connection


async def test_open_websocket_url_echoes_text_and_bytes_over_loopback_tcp(
    echo_server: WebSocketServer,
) -> None:
    url = f"ws://127.0.0.1:{echo_server.port}/echo"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            assert ws.is_client
            assert ws.path == "/echo"
            assert ws.remote == Endpoint("127.0.0.1", echo_server.port, False)
            assert isinstance(ws.local, Endpoint)
            assert ws.local.address == "127.0.0.1"
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\xff")
            assert await ws.get_message() == b"\x00\xff"
        assert ws.closed is not None
        assert ws.closed.code == 1000


async def test_open_websocket_echoes_given_host_port_and_resource(
    echo_server: WebSocketServer,
) -> None:
    with trio.fail_after(10):
        async with open_websocket("127.0.0.1", echo_server.port, "/r?x=1", use_ssl=False) as ws:
            assert ws.path == "/r?x=1"
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"


@pytest.mark.parametrize(
    ("suffix", "expected_path"),
    [
        ("", "/"),
        ("/", "/"),
        ("?x=1", "/?x=1"),
        ("/chat/room", "/chat/room"),
        ("/a/b?x=1&y=two", "/a/b?x=1&y=two"),
        ("/a#section", "/a"),
        ("/a?x=1#frag?y=2", "/a?x=1"),
        ("#frag", "/"),
    ],
)
async def test_server_sees_request_target_with_query_and_without_fragment(
    nursery: trio.Nursery, suffix: str, expected_path: str
) -> None:
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        await echo_handler(request)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{suffix}") as ws:
            assert ws.path == expected_path
    assert paths == [expected_path]


async def test_host_header_is_address_and_port(nursery: trio.Nursery) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/x"):
            pass
    (head,) = raw.heads
    assert head.startswith(b"GET /x HTTP/1.1\r\n")
    assert header_values(head, b"host") == [f"127.0.0.1:{port}".encode()]


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")
async def test_host_header_puts_ipv6_address_in_brackets(nursery: trio.Nursery) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery, host="::1")
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://[::1]:{port}/six") as ws:
            assert isinstance(ws.remote, Endpoint)
            assert ws.remote.address == "::1"
            assert ws.remote.port == port
    (head,) = raw.heads
    assert header_values(head, b"host") == [f"[::1]:{port}".encode()]


@pytest.mark.parametrize(
    ("url", "asked_port", "host_header"),
    [
        ("ws://ws.example.test/", 80, b"ws.example.test"),
        ("ws://ws.example.test:80/", 80, b"ws.example.test"),
        ("ws://ws.example.test:8080/", 8080, b"ws.example.test:8080"),
    ],
)
async def test_host_header_leaves_out_the_default_port(
    nursery: trio.Nursery, url: str, asked_port: int, host_header: bytes
) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    resolver = LoopbackResolver(port)
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(10):
            async with open_websocket_url(url):
                pass
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert resolver.asked == [(b"ws.example.test", asked_port)]
    (head,) = raw.heads
    assert header_values(head, b"host") == [host_header]


async def test_extra_headers_and_subprotocols_are_sent(nursery: trio.Nursery) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        seen["headers"] = list(request.headers)
        seen["subprotocols"] = request.proposed_subprotocols
        ws = await request.accept(subprotocol="chat.v1")
        seen["server_subprotocol"] = ws.subprotocol
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/",
            subprotocols=["chat.v2", "chat.v1"],
            extra_headers=[(b"X-Token", b"abc123"), (b"X-Other", b"two words")],
        ) as ws:
            assert ws.subprotocol == "chat.v1"
    assert (b"x-token", b"abc123") in seen["headers"]
    assert (b"x-other", b"two words") in seen["headers"]
    assert tuple(seen["subprotocols"]) == ("chat.v2", "chat.v1")
    assert seen["server_subprotocol"] == "chat.v1"


async def test_url_credentials_become_basic_authorization_header(nursery: trio.Nursery) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://alice:s%3Acr%40t@127.0.0.1:{port}/private"):
            pass
    (head,) = raw.heads
    expected = b"Basic " + base64.b64encode(b"alice:s:cr@t")
    assert header_values(head, b"authorization") == [expected]
    # The credentials are not part of the Host header or the target.
    assert header_values(head, b"host") == [f"127.0.0.1:{port}".encode()]
    assert head.startswith(b"GET /private HTTP/1.1\r\n")


async def test_url_credentials_are_sent_alongside_extra_headers(nursery: trio.Nursery) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://bob:pw@127.0.0.1:{port}/", extra_headers=[(b"X-Extra", b"1")]
        ):
            pass
    (head,) = raw.heads
    assert header_values(head, b"authorization") == [b"Basic " + base64.b64encode(b"bob:pw")]
    assert header_values(head, b"x-extra") == [b"1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/",
        "https://127.0.0.1/",
        "ftp://127.0.0.1/",
        "127.0.0.1:8000/",
        "ws:///path",
        "ws://:8000/",
        "wss://",
    ],
)
async def test_unusable_url_raises_value_error(nursery: trio.Nursery, url: str) -> None:
    with pytest.raises(ValueError):
        async with open_websocket_url(url):
            pytest.fail("connected with an unusable URL")
    with pytest.raises(ValueError):
        await connect_websocket_url(nursery, url)
    assert not nursery.child_tasks


# ---------------------------------------------------------------------------
# Failures before the connection is open


async def test_closed_port_raises_handshake_error_with_cause() -> None:
    port = await closed_port()
    with trio.fail_after(10):
        with pytest.raises(HandshakeError) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
                pytest.fail("connected to a closed port")
    assert type(info.value) is HandshakeError
    assert isinstance(info.value.__cause__, OSError)


async def test_connect_websocket_to_closed_port_raises_handshake_error(
    nursery: trio.Nursery,
) -> None:
    port = await closed_port()
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        await connect_websocket(nursery, "127.0.0.1", port, "/", use_ssl=False)
    assert isinstance(info.value.__cause__, OSError)
    assert not nursery.child_tasks


async def test_server_rejection_raises_connection_rejected_with_status_headers_body(
    nursery: trio.Nursery,
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(403, extra_headers=[(b"X-Reason", b"banned")], body=b"go away")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            pytest.fail("connected although the server rejected")
    rejected = info.value
    assert rejected.status_code == 403
    assert (b"x-reason", b"banned") in [(k.lower(), v) for k, v in rejected.headers]
    assert rejected.body == b"go away"


async def test_rejection_whose_body_ends_with_the_connection_is_still_a_rejection(
    nursery: trio.Nursery,
) -> None:
    raw = RawServer("reject_until_eof")
    port = await raw.start(nursery)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
            pytest.fail("connected to a server that rejected the handshake")
    assert info.value.status_code == 503
    assert (b"x-reason", b"maintenance") in info.value.headers
    assert info.value.body == b"busy, try later"


async def test_garbage_answer_raises_handshake_error(nursery: trio.Nursery) -> None:
    raw = RawServer("garbage")
    port = await raw.start(nursery)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
            pytest.fail("connected to a server that answered garbage")
    assert type(info.value) is HandshakeError
    assert isinstance(info.value.__cause__, ProtocolError)
    with trio.fail_after(10):
        await raw.client_gone.wait()


async def test_server_hanging_up_during_handshake_raises_handshake_error(
    nursery: trio.Nursery,
) -> None:
    raw = RawServer("hangup")
    port = await raw.start(nursery)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
            pytest.fail("connected to a server that hung up")
    assert type(info.value) is HandshakeError


async def test_server_that_never_answers_raises_connection_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    raw = RawServer("silent")
    port = await raw.start(nursery)
    start = trio.current_time()
    with pytest.raises(ConnectionTimeout):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", connect_timeout=5):
            pytest.fail("connected to a server that never answered")
    assert trio.current_time() - start == pytest.approx(5)
    # The client closed its socket; jump only if nothing happens for a while.
    autojump_clock.autojump_threshold = 0.5
    with trio.fail_after(60):
        await raw.client_gone.wait()


async def test_connection_timeout_also_covers_open_websocket(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    raw = RawServer("silent")
    port = await raw.start(nursery)
    start = trio.current_time()
    with pytest.raises(ConnectionTimeout):
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False, connect_timeout=3):
            pytest.fail("connected to a server that never answered")
    assert trio.current_time() - start == pytest.approx(3)


# ---------------------------------------------------------------------------
# Closing


async def test_unanswered_close_raises_disconnection_timeout(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    raw = RawServer("accept_then_ignore")
    port = await raw.start(nursery)
    with pytest.raises(DisconnectionTimeout):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", disconnect_timeout=7):
            start = trio.current_time()
            # Connected without the clock moving; now only the close is left.
            mock_clock.autojump_threshold = 0
    assert trio.current_time() - start == pytest.approx(7)
    assert raw.data_after_handshake.is_set()  # the close frame was sent
    mock_clock.autojump_threshold = 0.5
    with trio.fail_after(60):
        await raw.client_gone.wait()  # and the socket closed after the timeout


async def test_block_error_survives_a_close_timeout_as_itself(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    # The block's own error is what the caller sees, not DisconnectionTimeout
    # (which used to replace it, leaving it only as __context__); the close
    # still gives up after disconnect_timeout.
    raw = RawServer("accept_then_ignore")
    port = await raw.start(nursery)
    with pytest.raises(BlockError) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", disconnect_timeout=7) as ws:
            start = trio.current_time()
            mock_clock.autojump_threshold = 0
            raise BlockError("from the block")
    assert type(info.value) is BlockError
    assert trio.current_time() - start == pytest.approx(7)
    chain = exception_chain(info.value)
    assert not any(isinstance(exc, (DisconnectionTimeout, BaseExceptionGroup)) for exc in chain)
    assert ws.close_sent is not None and ws.close_received is None


async def start_close_watching_server(
    nursery: trio.Nursery,
) -> tuple[WebSocketServer, list[ConnectionClosed], trio.Event]:
    """A server whose handler accepts, waits for a message, and records the
    ``ConnectionClosed`` that ends the wait (in the list; the Event is set
    once the handler is done)."""
    seen: list[ConnectionClosed] = []
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            seen.append(exc)
        done.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return server, seen, done


async def test_closing_the_block_closes_cleanly_with_1000(nursery: trio.Nursery) -> None:
    server, seen, done = await start_close_watching_server(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            pass
        await done.wait()
    assert ws.closed is not None
    assert ws.closed.code == 1000
    (closed,) = seen
    assert closed.reason is not None
    assert closed.reason.code == 1000


# ---------------------------------------------------------------------------
# Cancellation


async def test_cancel_before_connecting_raises_cancelled_to_its_own_scope(
    nursery: trio.Nursery,
) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    seen: list[BaseException] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
                pytest.fail("block entered although cancelled")
        except BaseException as exc:
            seen.append(exc)
            raise
    assert scope.cancelled_caught
    assert len(seen) == 1
    assert isinstance(seen[0], trio.Cancelled)
    assert raw.heads == []


async def test_cancel_during_handshake_closes_socket_and_leaves_no_task(
    nursery: trio.Nursery,
) -> None:
    raw = RawServer("silent")
    port = await raw.start(nursery)
    before = live_tasks()
    seen: list[BaseException] = []

    async def cancel_when_request_arrives(scope: trio.CancelScope) -> None:
        await raw.request_received.wait()
        scope.cancel()

    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_when_request_arrives, scope)
            try:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
                    pytest.fail("block entered although the server never answered")
            except BaseException as exc:
                seen.append(exc)
                raise
        assert scope.cancelled_caught
        await raw.client_gone.wait()
    assert len(seen) == 1
    assert isinstance(seen[0], trio.Cancelled)
    await trio.testing.wait_all_tasks_blocked()
    assert live_tasks() - before == set()


async def test_cancel_inside_block_closes_connection_and_leaves_no_task(
    nursery: trio.Nursery,
) -> None:
    server_saw: list[ConnectionClosed] = []
    handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            server_saw.append(exc)
        handler_done.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    before = live_tasks()
    seen: list[BaseException] = []
    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            try:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                    scope.cancel()
                    await trio.sleep_forever()
            except BaseException as exc:
                seen.append(exc)
                raise
        assert scope.cancelled_caught
        await handler_done.wait()
    assert len(seen) == 1
    assert isinstance(seen[0], trio.Cancelled)
    assert ws.closed is not None
    assert len(server_saw) == 1
    await trio.testing.wait_all_tasks_blocked()
    assert live_tasks() - before == set()


async def test_cancel_while_closing_aborts_and_raises_cancelled(nursery: trio.Nursery) -> None:
    raw = RawServer("accept_then_ignore")
    port = await raw.start(nursery)
    before = live_tasks()
    seen: list[BaseException] = []

    async def cancel_when_close_frame_arrives(scope: trio.CancelScope) -> None:
        await raw.data_after_handshake.wait()
        scope.cancel()

    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            try:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    nursery.start_soon(cancel_when_close_frame_arrives, scope)
            except BaseException as exc:
                seen.append(exc)
                raise
        assert scope.cancelled_caught
        await raw.client_gone.wait()
    assert len(seen) == 1
    assert isinstance(seen[0], trio.Cancelled)
    assert ws.closed is not None
    await trio.testing.wait_all_tasks_blocked()
    assert live_tasks() - before == set()


# ---------------------------------------------------------------------------
# Exceptions leaving the block


def test_block_exception_propagates_unwrapped_with_cause_context_and_traceback() -> None:
    async def main() -> BaseException:
        async with trio.open_nursery() as nursery:
            server = await start_echo_server(nursery)
            with pytest.raises(BlockError) as info:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                    await ws.send_message("hi")
                    assert await ws.get_message() == "hi"
                    try:
                        raise KeyError("context")
                    except KeyError:
                        raise BlockError("boom") from ValueError("cause")
            nursery.cancel_scope.cancel()
        return info.value

    error = trio.run(main, strict_exception_groups=True)
    assert type(error) is BlockError
    assert str(error) == "boom"
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == "cause"
    assert isinstance(error.__context__, KeyError)
    assert error.__suppress_context__
    tb = error.__traceback__
    assert tb is not None
    for _ in range(1000):
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "main"  # still points at the raise


def test_block_exception_without_cause_keeps_its_context() -> None:
    async def main() -> BaseException:
        async with trio.open_nursery() as nursery:
            server = await start_echo_server(nursery)
            with pytest.raises(BlockError) as info:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
                    try:
                        {}["missing"]
                    except KeyError:
                        raise BlockError("while handling") from None
            nursery.cancel_scope.cancel()
        return info.value

    error = trio.run(main, strict_exception_groups=True)
    assert type(error) is BlockError
    assert error.__cause__ is None
    assert isinstance(error.__context__, KeyError)
    assert error.__suppress_context__


async def test_keyboard_interrupt_in_block_propagates_as_itself(nursery: trio.Nursery) -> None:
    handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass
        handler_done.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        with pytest.raises(KeyboardInterrupt) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                raise KeyboardInterrupt
        await handler_done.wait()  # and the connection was closed
    assert type(info.value) is KeyboardInterrupt
    assert ws.closed is not None


async def test_connection_closed_in_block_propagates_as_itself(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(4001, "go")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionClosed) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 4001
    assert info.value.reason.reason == "go"


# ---------------------------------------------------------------------------
# connect_websocket*: the caller owns the connection


@pytest.mark.parametrize("by_url", [True, False])
async def test_connect_websocket_runs_reader_in_callers_nursery_and_leaves_it_open(
    echo_server: WebSocketServer, by_url: bool
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            if by_url:
                ws = await connect_websocket_url(
                    nursery, f"ws://127.0.0.1:{echo_server.port}/c?k=v"
                )
            else:
                ws = await connect_websocket(
                    nursery, "127.0.0.1", echo_server.port, "/c?k=v", use_ssl=False
                )
            assert len(nursery.child_tasks) == 1  # the reader
            assert ws.closed is None
            assert ws.path == "/c?k=v"
            await trio.testing.wait_all_tasks_blocked()
            assert ws.closed is None  # nothing closes it behind the caller's back
            await ws.send_message("still open")
            assert await ws.get_message() == "still open"
            await ws.aclose()
        assert ws.closed is not None
        assert ws.closed.code == 1000


async def test_connect_websocket_url_sends_credentials(nursery: trio.Nursery) -> None:
    raw = RawServer("accept")
    port = await raw.start(nursery)
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            ws = await connect_websocket_url(inner, f"ws://u:p@127.0.0.1:{port}/q?a=1#f")
            await ws.aclose()
    (head,) = raw.heads
    assert head.startswith(b"GET /q?a=1 HTTP/1.1\r\n")
    assert header_values(head, b"authorization") == [b"Basic " + base64.b64encode(b"u:p")]


async def test_connect_websocket_rejects_bad_use_ssl(nursery: trio.Nursery) -> None:
    with pytest.raises(TypeError):
        await connect_websocket(nursery, "127.0.0.1", 1, "/", use_ssl="yes")  # type: ignore[arg-type]
    assert not nursery.child_tasks



@pytest.mark.parametrize("how", ["connect_websocket", "wrap_client_stream"])
async def test_a_closed_nursery_is_refused_and_the_connection_is_not_left_open(
    nursery: trio.Nursery, how: str
) -> None:
    """The reader cannot start in a nursery that is already closed: the
    call raises trio's RuntimeError, and the socket is closed then and
    there, so the server learns at once (not when the garbage collector
    gets to the socket)."""
    server, seen, done = await start_close_watching_server(nursery)
    async with trio.open_nursery() as closed:
        pass
    with pytest.raises(RuntimeError) as raised:
        if how == "connect_websocket":
            await connect_websocket(closed, "127.0.0.1", server.port, "/", use_ssl=False)
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await wrap_client_stream(closed, stream, "127.0.0.1", "/")
    # (The traceback, kept alive here, still holds the connection and its
    # stream: only closing them on the spot can end the server's wait.)
    assert raised.value.__traceback__ is not None
    with trio.fail_after(5):
        await done.wait()
    assert seen[0].reason.code == 1006
