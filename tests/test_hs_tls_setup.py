"""What each TLS connection costs to set up, beyond trio's own: the
endpoints of a TLS stream over a lean socket read one layer down without
asking the TLS stream for names it does not have (its ``__getattr__``),
and ``trio.SSLStream``'s layout checked once, not for every stream."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from test_tls_handshake import client_context, default_pair, serve_on_loopback, server_context, tcp

from trio_websocket import WebSocketRequest, open_websocket_url
from trio_websocket._core.endpoint import Endpoint, _socket_endpoint, stream_endpoint
from trio_websocket._wire import tls_stream as tls_module
from trio_websocket._wire.socket_stream import LeanSocketStream
from trio_websocket._wire.tls_stream import tls_stream


@pytest.fixture
def ssl_getattr_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names looked up through ``trio.SSLStream.__getattr__``."""
    calls: list[str] = []
    original = trio.SSLStream.__getattr__

    def counting(self: trio.SSLStream[Any], name: str) -> Any:
        calls.append(name)
        return original(self, name)

    monkeypatch.setattr(trio.SSLStream, "__getattr__", counting)
    return calls


def named_tls_stream() -> tuple[trio.SSLStream[Any], socket.socket, socket.socket]:
    """A server's TLS stream over a lean socket that knows its names, as
    the server's acceptor makes them."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        peer = socket.create_connection(listener.getsockname())
        ours, address = listener.accept()
    lean = LeanSocketStream(ours, sockname=ours.getsockname(), peername=address)
    return tls_stream(lean, server_context(), server_side=True), ours, peer


def test_a_tls_streams_endpoints_without_its_getattr(ssl_getattr_calls: list[str]) -> None:
    stream, ours, peer = named_tls_stream()
    try:
        local = stream_endpoint(stream, local=True)
        remote = stream_endpoint(stream, local=False)
        assert ssl_getattr_calls == []
        assert local == Endpoint("127.0.0.1", ours.getsockname()[1], True)
        assert remote == Endpoint("127.0.0.1", peer.getsockname()[1], True)
        # What the general path (any layers) finds.
        transport = stream.transport_stream
        assert local == _socket_endpoint(transport, stream, True, True)
        assert remote == _socket_endpoint(transport, stream, False, True)
    finally:
        ours.close()
        peer.close()


def test_a_tls_stream_whose_socket_has_no_name_is_described_by_its_repr() -> None:
    ours, peer = socket.socketpair()  # (a Unix socket: a name that is no address)
    try:
        stream = tls_stream(LeanSocketStream(ours), server_context(), server_side=True)
        assert stream_endpoint(stream, local=False) == repr(ours.getpeername())
        ours.close()
        assert stream_endpoint(stream, local=True) == repr(stream)
    finally:
        ours.close()
        peer.close()


@pytest.mark.usefixtures("fast_paths_on")
async def test_the_layout_is_checked_for_the_first_stream_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    known, direct = tls_module._has_known_layout, tls_module._has_direct_layout

    def counting_known(stream: trio.SSLStream[Any]) -> bool:
        checked.append("known")
        return known(stream)

    def counting_direct(stream: trio.SSLStream[Any]) -> bool:
        checked.append("direct")
        return direct(stream)

    monkeypatch.setattr(tls_module, "_has_known_layout", counting_known)
    monkeypatch.setattr(tls_module, "_has_direct_layout", counting_direct)
    monkeypatch.setattr(tls_module, "_known_layout", None)
    monkeypatch.setattr(tls_module, "_direct_layout", None)
    with trio.fail_after(10):
        for _ in range(3):
            sockets = tcp()
            ours, peer = default_pair(tls_stream, sockets)
            # Every one of them on the direct paths all the same.
            assert "receive_some" in vars(ours)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send_all, b"hello")
                assert await ours.receive_some(10) == b"hello"
            await ours.aclose()
            await peer.aclose()
            sockets.ours.close()
            sockets.peer.close()
    assert checked == ["known", "direct"]


def test_a_layout_found_unknown_stays_plain_for_every_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tls_module, "_known_layout", False)
    ours, peer = socket.socketpair()
    try:
        for _ in range(2):
            stream = tls_stream(LeanSocketStream(ours), server_context(), server_side=True)
            assert "receive_some" not in vars(stream)
    finally:
        ours.close()
        peer.close()


async def test_reading_a_request_over_tls_asks_no_name_of_the_tls_stream(
    ssl_getattr_calls: list[str],
) -> None:
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await serve_on_loopback(nursery, echo)
            async with open_websocket_url(
                f"wss://127.0.0.1:{server.port}/", ssl_context=client_context()
            ) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
            nursery.cancel_scope.cancel()
    # (The client's own streams are trio's, as are their lookups.)
    assert "receive_now" not in ssl_getattr_calls


async def test_steady_reads_and_writes_tell_the_finished_handshake_without_its_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(tls_stream, sockets)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await ours.do_handshake()
        once_type = type(ours._handshook)
        asked: list[bool] = []
        done = once_type.done

        def counting(self: Any) -> bool:
            asked.append(True)
            return bool(done.fget(self))  # type: ignore[attr-defined]

        monkeypatch.setattr(once_type, "done", property(counting))
        for _ in range(3):
            await ours.send_all(b"ping")
            assert await peer.receive_some(10) == b"ping"
            await peer.send_all(b"pong")
            assert await ours.receive_some(10) == b"pong"
        assert asked == []
        monkeypatch.undo()
        await ours.aclose()
        await peer.aclose()
        sockets.ours.close()
        sockets.peer.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_after_sending_a_flight_the_handshake_waits_for_the_answer_before_reading(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    found_nothing: list[bool] = []
    receive_now = LeanSocketStream.receive_now

    def counting(self: LeanSocketStream, max_bytes: int) -> bytes | None:
        data = receive_now(self, max_bytes)
        if data is None:
            found_nothing.append(True)
        return data

    monkeypatch.setattr(LeanSocketStream, "receive_now", counting)
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(tls_stream, sockets, version=version)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await sockets.arrived(100)  # the client's hello
            await ours.do_handshake()
        assert ours.version() == peer.version() == f"TLSv{version}"
        # (The peer, a task of this thread, can only answer a flight once
        # ours waits: a read right after sending would find nothing.)
        assert found_nothing == []
        await ours.send_all(b"after")
        assert await peer.receive_some(10) == b"after"
        await ours.aclose()
        await peer.aclose()
        sockets.ours.close()
        sockets.peer.close()
