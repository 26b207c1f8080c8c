"""The lean socket stream (``_wire.socket_stream``): trio ``SocketStream``
semantics over real loopback sockets, the guarded fast path, and that the
server and the client really use it.

Each behaviour is checked on real TCP (and Unix) sockets, since what is
being replaced is trio's socket layer itself.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trio_websocket import (
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    serve_websocket,
)
from trio_websocket._core.endpoint import stream_endpoint
from trio_websocket._wire import socket_stream as _socket_stream
from trio_websocket._wire.socket_stream import LeanSocketStream, acceptor_for, lean_stream

#: These tests check a fast path's own workings: they force the fast paths
#: on, also in CI's run of the suite with TRIO_WEBSOCKET_FAST_PATHS=0.
pytestmark = pytest.mark.usefixtures("fast_paths_on")

#: Larger than the kernel's socket buffers on loopback (both directions
#: together), so sends are partial and must loop.
BIG = 8 * 1024 * 1024


def _pattern(size: int, seed: int) -> bytes:
    # Bytes that differ along the way, so a lost or repeated chunk shows.
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[LeanSocketStream, LeanSocketStream]]:
    """(client, server): both lean, the client made from trio's
    ``open_tcp_stream``, the server accepted by ``acceptor_for``."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = lean_stream(await trio.open_tcp_stream("127.0.0.1", port))
        server = await acceptor_for(listener)()
    assert isinstance(client, LeanSocketStream)
    assert isinstance(server, LeanSocketStream)
    try:
        yield client, server
    finally:
        await client.aclose()
        await server.aclose()


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        data = await stream.receive_some(size - len(chunks))
        assert data, "unexpected EOF"
        chunks += data
    return bytes(chunks)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = bytearray()
    while data := await stream.receive_some():
        chunks += data
    return bytes(chunks)


def reset(stream: LeanSocketStream) -> None:
    """Close ``stream``'s socket so that the peer sees a TCP reset."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


# ---------------------------------------------------------------------------
# The fast path is active with the pinned trio


async def test_fast_path_is_active_with_the_pinned_trio() -> None:
    # If a trio upgrade changes its socket internals, this fails (and the
    # library quietly falls back to trio's own streams).
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        assert isinstance(listener, trio.SocketListener)
        assert isinstance(acceptor_for(listener), _socket_stream._LeanAcceptor)
        tls = trio.SSLListener(listener, ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
        assert isinstance(acceptor_for(tls), _socket_stream._LeanAcceptor)
        port = listener.socket.getsockname()[1]
        trio_stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream = lean_stream(trio_stream)
        assert isinstance(stream, LeanSocketStream)
        # The same socket, not a copy: the trio socket is kept as .socket.
        assert stream.socket is trio_stream.socket
        await stream.aclose()
        assert trio_stream.socket.fileno() == -1


async def test_accepted_streams_get_trio_s_tcp_options() -> None:
    async with tcp_pair() as (client, server):
        for stream in (client, server):
            assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                lowat = stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
                assert lowat == _socket_stream.NOTSENT_LOWAT


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::"])
async def test_accepted_streams_know_their_addresses_as_the_kernel_does(host: str) -> None:
    """The peer's address comes from accept() and ours from a listener on
    one address (no system call on the handshake path); on a wildcard
    listener ours is asked for. Either way they are the socket's own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    sock = trio.socket.socket(family)
    try:
        await sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot listen on {host}: {exc}")
    sock.listen()
    listener = trio.SocketListener(sock)
    connect_to = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    async with listener:
        client = await trio.open_tcp_stream(connect_to, sock.getsockname()[1])
        async with client:
            server = await acceptor_for(listener)()
            async with server:
                assert isinstance(server, LeanSocketStream)
                raw = server._sock
                assert server.getsockname() == raw.getsockname()
                assert server.getpeername() == raw.getpeername()
                assert server._peername is not None
                assert (server._sockname is None) is (host in ("0.0.0.0", "::"))
                assert client.socket.getsockname() == server.getpeername()


async def test_other_streams_and_listeners_are_left_alone() -> None:
    one, _ = trio.testing.memory_stream_pair()
    assert lean_stream(one) is one

    class OwnListener(trio.abc.Listener[trio.abc.Stream]):
        async def accept(self) -> trio.abc.Stream:
            return one

        async def aclose(self) -> None:
            pass

    own = OwnListener()
    assert acceptor_for(own) == own.accept
    assert await acceptor_for(own)() is one


# ---------------------------------------------------------------------------
# Data, EOF and half-close


async def test_big_data_both_ways_at_once_arrives_whole() -> None:
    # More than the socket buffers hold: each send_all is partial many times
    # over, and only completes because the other side reads meanwhile.
    to_server, to_client = _pattern(BIG, 1), _pattern(BIG + 12345, 2)
    got: dict[str, bytes] = {}
    async with tcp_pair() as (client, server):

        async def exchange(name: str, stream: LeanSocketStream, data: bytes, expect: int) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, data)
                got[name] = await receive_exactly(stream, expect)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(exchange, "client", client, to_server, len(to_client))
            nursery.start_soon(exchange, "server", server, to_client, len(to_server))
    assert got["server"] == to_server
    assert got["client"] == to_client


@pytest.mark.parametrize("kind", [bytearray, memoryview])
async def test_send_all_takes_any_bytes_like(kind: Callable[[bytes], Any]) -> None:
    data = _pattern(3 * 1024 * 1024 + 1, 3)
    async with tcp_pair() as (client, server):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, kind(data))
            assert await receive_exactly(server, len(data)) == data
        # A view of wider items is sent as its bytes.
        words = memoryview(bytearray(b"abcdefgh")).cast("I")
        await client.send_all(words)
        assert await receive_exactly(server, 8) == b"abcdefgh"


async def test_receive_some_limits() -> None:
    async with tcp_pair() as (client, server):
        with pytest.raises(ValueError):
            await server.receive_some(0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x" * 400_000)
            assert len(await server.receive_some(10)) == 10
            # None reads up to 128 KiB (what a TLS stream over it reads at
            # once), more than trio's 64 KiB.
            await trio.sleep(0.05)
            assert 65536 < len(await server.receive_some(None)) <= 131072
            nursery.cancel_scope.cancel()


async def test_peer_close_is_eof() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(b"last words")
        await client.aclose()
        assert await receive_until_eof(server) == b"last words"
        assert await server.receive_some() == b""


async def test_send_eof_half_closes() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(b"request")
        await client.send_eof()
        await client.send_eof()  # idempotent
        assert await receive_until_eof(server) == b"request"
        # The other direction still works.
        await server.send_all(b"answer")
        await server.aclose()
        assert await receive_until_eof(client) == b"answer"
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"more")


async def test_wait_send_all_might_not_block_returns_when_writable() -> None:
    async with tcp_pair() as (client, _server):
        with trio.fail_after(5):
            await client.wait_send_all_might_not_block()


# ---------------------------------------------------------------------------
# Errors


async def test_peer_reset_is_broken_resource_chained_from_the_os_error() -> None:
    async with tcp_pair() as (client, server):
        reset(client)
        with pytest.raises(trio.BrokenResourceError) as caught:
            await server.receive_some()
        assert isinstance(caught.value.__cause__, ConnectionResetError)


async def test_send_to_a_reset_peer_is_broken_resource() -> None:
    async with tcp_pair() as (client, server):
        reset(client)
        await trio.sleep(0.05)
        with pytest.raises(trio.BrokenResourceError) as caught:
            for _ in range(100):
                await server.send_all(b"x" * 65536)
        assert isinstance(caught.value.__cause__, OSError)


async def test_use_after_close_is_closed_resource() -> None:
    async with tcp_pair() as (client, _server):
        await client.aclose()
        await client.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"data")
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"")
        with pytest.raises(trio.ClosedResourceError):
            await client.wait_send_all_might_not_block()
        with pytest.raises(trio.ClosedResourceError):
            await client.send_eof()


async def _closing_wakes(operation: Callable[[LeanSocketStream], Awaitable[object]]) -> None:
    """``operation`` blocks on the client; aclose() from another task must
    end it with ClosedResourceError (within 5 s: a waiter nobody wakes
    would otherwise hang)."""
    outcome: list[str] = []
    async with tcp_pair() as (client, _server):

        async def blocked() -> None:
            try:
                await operation(client)
            except trio.ClosedResourceError:
                outcome.append("closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.deadline = trio.current_time() + 5
            await client.aclose()
    assert outcome == ["closed"]


async def test_aclose_wakes_a_blocked_receive() -> None:
    await _closing_wakes(lambda stream: stream.receive_some())


async def test_aclose_wakes_a_blocked_send() -> None:
    # The server never reads: this fills the buffers and waits.
    await _closing_wakes(lambda stream: stream.send_all(b"x" * BIG))


async def test_two_senders_at_once_is_busy_resource() -> None:
    async with tcp_pair() as (client, _server):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x" * BIG)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await client.send_all(b"y")
            with pytest.raises(trio.BusyResourceError):
                await client.wait_send_all_might_not_block()
            with pytest.raises(trio.BusyResourceError):
                await client.send_eof()
            nursery.cancel_scope.cancel()
        # The stream is not left marked busy by the cancelled send.
        with pytest.raises(trio.BrokenResourceError):
            reset(_server)
            await trio.sleep(0.05)
            for _ in range(100):
                await client.send_all(b"z" * 65536)


# ---------------------------------------------------------------------------
# Cancellation and scheduling


async def test_cancelled_operations_touch_nothing() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(b"waiting")
        await trio.sleep(0.05)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await server.receive_some()
            with pytest.raises(trio.Cancelled):
                await server.send_all(b"never")
        # The data is still there, and nothing was sent.
        assert await server.receive_some() == b"waiting"
        await server.send_eof()
        assert await receive_until_eof(client) == b""


@pytest.mark.parametrize("cancel_after", [0, 1, 2, 3, 5, 8, 13])
async def test_a_cancel_between_receives_loses_no_data(cancel_after: int) -> None:
    # A receiver reads in a scope that another task cancels at some point:
    # what it read plus what is read afterwards is everything sent.
    data = _pattern(1024 * 1024, 4)
    async with tcp_pair() as (client, server):
        received = bytearray()

        async def send_then_eof() -> None:
            await client.send_all(data)
            await client.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof)
            with trio.CancelScope() as scope:

                async def cancel_later() -> None:
                    for _ in range(cancel_after):
                        await trio.lowlevel.checkpoint()
                    scope.cancel()

                nursery.start_soon(cancel_later)
                while True:
                    received += await server.receive_some(4096)
            # (Inside the nursery: the sender waits for this reader.)
            received += await receive_until_eof(server)
    assert bytes(received) == data


async def test_a_peer_that_always_has_data_cannot_starve_other_tasks() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(b"x" * 20_000)
        await trio.sleep(0.05)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            for _ in range(50):
                # Each read succeeds at once, yet lets the ticker run.
                assert await server.receive_some(10)
            nursery.cancel_scope.cancel()
        assert ticks >= 25


# ---------------------------------------------------------------------------
# The trio socket, endpoints, TLS and Unix sockets


async def test_socket_attribute_and_endpoints_match_trio_s() -> None:
    async with tcp_pair() as (client, server):
        server_name = server.socket.getsockname()
        assert isinstance(server.socket, trio.socket.SocketType)
        assert server.socket is server.socket
        assert server_name == client.socket.getpeername()
        port = server_name[1]
        assert stream_endpoint(client, local=False) == Endpoint("127.0.0.1", port, False)
        assert stream_endpoint(server, local=True) == Endpoint("127.0.0.1", port, False)
    # Closed: the socket says so as trio's would. An accepted stream still
    # knows the addresses it was accepted with; one that has to ask the
    # socket falls back to the repr, as for trio's streams.
    assert server.socket.fileno() == -1
    with pytest.raises(OSError):
        server.socket.getsockname()
    assert stream_endpoint(server, local=True) == Endpoint("127.0.0.1", port, False)
    assert stream_endpoint(client, local=True) == repr(client)
    assert repr(client).startswith("<LeanSocketStream")


async def test_socket_made_after_close_still_behaves_as_closed() -> None:
    async with tcp_pair() as (client, _server):
        pass
    assert client.socket.fileno() == -1
    assert client.socket.family == socket.AF_INET
    with pytest.raises(OSError):
        client.socket.getpeername()


async def test_shutdown_through_the_socket_counts_as_eof() -> None:
    async with tcp_pair() as (client, server):
        client.socket.shutdown(socket.SHUT_WR)
        assert await server.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def test_tls_runs_on_top() -> None:
    server_context, client_context = _tls_contexts()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    tls_listener = trio.SSLListener(listener, server_context, https_compatible=True)
    data = _pattern(2 * 1024 * 1024, 5)
    async with tls_listener:
        port = listener.socket.getsockname()[1]
        client_tcp = lean_stream(await trio.open_tcp_stream("127.0.0.1", port))
        client = trio.SSLStream(client_tcp, client_context, server_hostname="127.0.0.1")
        server = await acceptor_for(tls_listener)()
        assert isinstance(server, trio.SSLStream)
        assert isinstance(server.transport_stream, LeanSocketStream)
        async with client, server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, data)
                assert await receive_exactly(server, len(data)) == data
            await server.send_all(b"back")
            assert await receive_exactly(client, 4) == b"back"
            assert stream_endpoint(client, local=False) == Endpoint("127.0.0.1", port, True)


async def test_unix_sockets_are_lean_too() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "s")
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(8)
        async with trio.SocketListener(sock) as listener:
            client = lean_stream(await trio.open_unix_socket(path))
            server = await acceptor_for(listener)()
            assert isinstance(client, LeanSocketStream)
            assert isinstance(server, LeanSocketStream)
            async with client, server:
                data = _pattern(1024 * 1024, 6)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send_all, data)
                    assert await receive_exactly(server, len(data)) == data
                await client.send_eof()
                assert await server.receive_some() == b""
                # Not TCP: described as trio's Unix streams are.
                assert stream_endpoint(server, local=True) == repr(path)


async def test_accept_on_a_closed_listener_is_closed_resource() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    accept = acceptor_for(listener)
    async with trio.open_nursery() as nursery:

        async def waiting_accept() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await accept()

        nursery.start_soon(waiting_accept)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await accept()


# ---------------------------------------------------------------------------
# The library uses it (and falls back when it must)


async def _echo_round_trip(
    server_context: ssl.SSLContext | None = None,
    client_context: ssl.SSLContext | None = None,
) -> tuple[WebSocketConnection, WebSocketConnection]:
    """Serve, connect, echo once; the (client, server) connections."""
    seen: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        seen.append(ws)
        await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            serve_websocket, handler, "127.0.0.1", 0, server_context
        )
        async with open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=client_context or False
        ) as client:
            await client.send_message("hello")
            assert await client.get_message() == "hello"
            client_seen = client
        nursery.cancel_scope.cancel()
    return client_seen, seen[0]


async def test_server_and_client_use_the_lean_stream() -> None:
    client, server = await _echo_round_trip()
    assert type(client._stream) is LeanSocketStream
    assert type(server._stream) is LeanSocketStream
    # The endpoints are the sockets' names...
    assert isinstance(server.local, Endpoint)
    assert server.local == client.remote
    assert server.remote == client.local
    # ... read without making a trio socket (a system call per connection).
    assert server._stream._trio_socket is None


async def test_server_and_client_use_the_lean_stream_under_tls() -> None:
    client, server = await _echo_round_trip(*_tls_contexts())
    for connection in (client, server):
        stream = connection._stream
        assert isinstance(stream, trio.SSLStream)
        assert type(stream.transport_stream) is LeanSocketStream
        assert connection.remote.is_ssl  # type: ignore[union-attr]


async def test_fallback_to_trio_s_streams_when_the_socket_is_not_as_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if trio's internals had changed: everything still works, on
    # trio's own SocketStream.
    monkeypatch.setattr(_socket_stream, "_stdlib_socket_of", lambda trio_socket: None)
    client, server = await _echo_round_trip()
    assert type(client._stream) is trio.SocketStream
    assert type(server._stream) is trio.SocketStream
    client, server = await _echo_round_trip(*_tls_contexts())
    assert type(client._stream.transport_stream) is trio.SocketStream  # type: ignore[attr-defined]
    assert type(server._stream.transport_stream) is trio.SocketStream  # type: ignore[attr-defined]


async def test_fallback_when_the_trio_socket_has_no_stdlib_socket() -> None:
    trio_socket = trio.socket.socket()
    try:
        assert _socket_stream._stdlib_socket_of(trio_socket) is not None
        assert _socket_stream._stdlib_socket_of(object()) is None

        class Fake(trio.socket.SocketType):
            def fileno(self) -> int:
                return trio_socket.fileno()

        assert _socket_stream._stdlib_socket_of(Fake()) is None
    finally:
        trio_socket.close()
    # A closed one is not taken either.
    assert _socket_stream._stdlib_socket_of(trio_socket) is None


async def test_fallback_for_an_ssl_listener_not_laid_out_as_expected() -> None:
    server_context, _ = _tls_contexts()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    tls = trio.SSLListener(listener, server_context)
    async with tls:
        # As if trio had renamed its private attribute.
        del tls._ssl_context
        assert acceptor_for(tls) == tls.accept


async def test_an_ssl_listener_over_another_listener_is_left_alone() -> None:
    server_context, _ = _tls_contexts()
    memory = trio.testing.memory_stream_pair()[0]

    class OwnListener(trio.abc.Listener[trio.abc.Stream]):
        async def accept(self) -> trio.abc.Stream:
            return memory

        async def aclose(self) -> None:
            pass

    tls = trio.SSLListener(OwnListener(), server_context)
    assert acceptor_for(tls) == tls.accept


class _ScriptedListening:
    """Stands in for a listening socket: ``accept()`` plays a script of
    results (an exception to raise, or a value to return); readiness is
    that of a real socket that always has data."""

    def __init__(self, script: list[object], readable: socket.socket) -> None:
        self._script = script
        self._readable = readable

    def accept(self) -> tuple[object, object]:
        step = self._script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step, ("127.0.0.1", 1)

    def fileno(self) -> int:
        return self._readable.fileno()


@pytest.mark.parametrize("first", ["now", "after a wait"])
async def test_accept_skips_connections_that_failed_before_we_got_them(first: str) -> None:
    one, two = socket.socketpair()
    with one, two:
        two.send(b"ready")  # ``one`` is readable: a wait ends at once
        accepted = object()
        script: list[object] = [
            OSError(errno.ECONNABORTED, "aborted"),
            OSError(errno.ECONNRESET, "reset"),
            accepted,
        ]
        if first == "after a wait":
            script.insert(0, BlockingIOError())
        listening = _ScriptedListening(script, one)
        connection, _ = await _socket_stream._accept_socket(listening)  # type: ignore[arg-type]
        assert connection is accepted
        assert not script


@pytest.mark.parametrize("first", ["now", "after a wait"])
async def test_accept_raises_capacity_errors_and_closed_means_closed(first: str) -> None:
    one, two = socket.socketpair()
    with one, two:
        two.send(b"ready")
        wait: list[object] = [BlockingIOError()] if first == "after a wait" else []
        full = _ScriptedListening([*wait, OSError(errno.EMFILE, "too many open files")], one)
        with pytest.raises(OSError) as caught:
            await _socket_stream._accept_socket(full)  # type: ignore[arg-type]
        assert caught.value.errno == errno.EMFILE
        closed = _ScriptedListening([*wait, OSError(errno.EBADF, "bad fd")], one)
        with pytest.raises(trio.ClosedResourceError):
            await _socket_stream._accept_socket(closed)  # type: ignore[arg-type]


async def test_two_receivers_waiting_at_once_is_busy_resource() -> None:
    async with tcp_pair() as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        # The first one still gets the data.
        await client.send_all(b"for the first")


async def test_send_all_lets_go_of_the_caller_s_buffer() -> None:
    # A bytearray can be resized once send_all returns (or fails).
    async with tcp_pair() as (client, server):
        buffer = bytearray(b"0123456789")
        await client.send_all(memoryview(buffer)[2:6])
        buffer += b"more"
        assert await receive_exactly(server, 4) == b"2345"
        reset(server)
        await trio.sleep(0.05)
        with pytest.raises(trio.BrokenResourceError) as caught:
            for _ in range(100):
                await client.send_all(memoryview(buffer))
        # Even while the traceback (and so send_all's frame) is kept.
        assert caught.value.__traceback__ is not None
        buffer += b"again"


async def test_an_accepted_socket_is_what_the_stdlib_accept_makes() -> None:
    async with tcp_pair() as (_client, server):
        sock = server._sock
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert not sock.getblocking()


async def test_trio_is_told_of_a_close_only_when_someone_may_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[int] = []
    real = _socket_stream.notify_closing

    def notify(sock: socket.socket) -> None:
        told.append(sock.fileno())
        real(sock)

    monkeypatch.setattr(_socket_stream, "notify_closing", notify)
    with trio.fail_after(5):
        # Nobody ever waited on the server's socket: no notice (trio holds
        # no registration of it).
        async with tcp_pair() as (client, server):
            await client.send_all(b"x")
            assert await receive_exactly(server, 1) == b"x"
            fileno = server._sock.fileno()
            await server.aclose()
            assert fileno not in told
        # A receive that waited: trio is told, and a task still waiting
        # gets ClosedResourceError.
        async with tcp_pair() as (client, server):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await server.receive_some()

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                fileno = server._sock.fileno()
                await server.aclose()
            assert fileno in told
