"""Clients over Unix domain sockets (``unix_socket_path``).

The server is a ``WebSocketServer`` on a listener bound to a socket file in
a short temporary directory (socket paths are limited to about 100 bytes),
with TLS on top where a test needs it. The URL still gives the Host header,
the resource and the name a certificate is checked against; no name is
looked up.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import echo_handler

from trio_websocket import (
    ConnectionClosed,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    open_websocket,
    open_websocket_url,
)

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX sockets")


class NoLookups(trio.abc.HostnameResolver):
    """Fails the test if any name is looked up."""

    async def getaddrinfo(  # type: ignore[override]
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        raise AssertionError(f"looked up {host!r} although a Unix socket was given")

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
def socket_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="tws-") as directory:
        yield os.path.join(directory, "ws.sock")


def server_context_for(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


async def serve_unix(
    nursery: trio.Nursery,
    path: str,
    handler: Any,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocketServer:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    listener: trio.abc.Listener[Any] = trio.SocketListener(sock)
    if ssl_context is not None:
        listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
    server = WebSocketServer(handler, [listener])
    await nursery.start(server.run)
    return server


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (Host header, path)

    async def handler(self, request: WebSocketRequest) -> None:
        self.requests.append((request._event.host, request.path))
        await echo_handler(request)


@pytest.fixture
async def no_lookups() -> AsyncIterator[None]:
    trio.socket.set_custom_hostname_resolver(NoLookups())
    yield
    trio.socket.set_custom_hostname_resolver(None)


async def test_url_over_unix_socket_sends_host_and_resource_from_the_url(
    nursery: trio.Nursery, socket_path: str, no_lookups: None
) -> None:
    seen = Seen()
    await serve_unix(nursery, socket_path, seen.handler)
    with trio.fail_after(10):
        async with open_websocket_url(
            "ws://localhost/events?since=5", unix_socket_path=socket_path
        ) as ws:
            await ws.send_message("over a unix socket")
            assert await ws.get_message() == "over a unix socket"
            assert ws.path == "/events?since=5"
        assert ws.closed is not None and ws.closed.code == 1000
    assert seen.requests == [("localhost", "/events?since=5")]


async def test_host_header_keeps_a_non_default_port(
    nursery: trio.Nursery, socket_path: str, no_lookups: None
) -> None:
    seen = Seen()
    await serve_unix(nursery, socket_path, seen.handler)
    with trio.fail_after(10):
        async with open_websocket(
            "api.internal", 8080, "/v1", use_ssl=False, unix_socket_path=Path(socket_path)
        ) as ws:
            await ws.send_message(b"\x00bytes")
            assert await ws.get_message() == b"\x00bytes"
    assert seen.requests == [("api.internal:8080", "/v1")]


async def test_connect_websocket_over_unix_socket_leaves_closing_to_the_caller(
    nursery: trio.Nursery, socket_path: str
) -> None:
    await serve_unix(nursery, socket_path, echo_handler)
    with trio.fail_after(10):
        ws = await connect_websocket(
            nursery, "localhost", 80, "/", use_ssl=False, unix_socket_path=os.fsencode(socket_path)
        )
        await ws.send_message("hi")
        assert await ws.get_message() == "hi"
        assert ws.closed is None
        await ws.aclose()
        assert ws.closed is not None


async def test_tls_over_unix_socket_checks_the_certificate_against_the_url_host(
    nursery: trio.Nursery,
    socket_path: str,
    ca: trustme.CA,
    client_context: ssl.SSLContext,
    no_lookups: None,
) -> None:
    seen = Seen()
    await serve_unix(nursery, socket_path, seen.handler, server_context_for(ca, "app.local"))
    with trio.fail_after(10):
        async with open_websocket_url(
            "wss://app.local/secure", client_context, unix_socket_path=socket_path
        ) as ws:
            await ws.send_message("tls over unix")
            assert await ws.get_message() == "tls over unix"
    assert seen.requests == [("app.local", "/secure")]


async def test_tls_over_unix_socket_refuses_a_certificate_for_another_name(
    nursery: trio.Nursery, socket_path: str, ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    await serve_unix(nursery, socket_path, echo_handler, server_context_for(ca, "other.local"))
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(
            "wss://app.local/", client_context, unix_socket_path=socket_path
        ):
            pytest.fail("accepted a certificate for another name")
    assert info.value.phase == "tls"
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_missing_socket_file_is_a_connect_failure_naming_the_path(
    socket_path: str,
) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url("ws://localhost/", unix_socket_path=socket_path):
            pytest.fail("connected to a socket that does not exist")
    assert info.value.phase == "connect"
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert socket_path in str(info.value)


async def test_socket_file_nobody_listens_on_is_a_connect_failure(socket_path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path)
    sock.close()  # the file stays, the listener is gone
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url("ws://localhost/", unix_socket_path=socket_path):
            pytest.fail("connected to a dead socket")
    assert info.value.phase == "connect"
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_same_host_redirect_is_followed_over_the_unix_socket(
    nursery: trio.Nursery, socket_path: str
) -> None:
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        if request.path == "/old":
            await request.reject(301, extra_headers=[(b"Location", b"/new")])
            return
        ws = await request.accept()
        try:
            await ws.send_message(request.path)
            await ws.get_message()
        except ConnectionClosed:
            pass

    await serve_unix(nursery, socket_path, handler)
    with trio.fail_after(10):
        async with open_websocket_url(
            "ws://localhost/old", unix_socket_path=socket_path, max_redirects=1
        ) as ws:
            assert await ws.get_message() == "/new"
    assert paths == ["/old", "/new"]


async def test_redirect_to_another_host_is_refused_over_a_unix_socket(
    nursery: trio.Nursery, socket_path: str
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(302, extra_headers=[(b"Location", b"ws://elsewhere.test/")])

    await serve_unix(nursery, socket_path, handler)
    with trio.fail_after(10), pytest.raises(HandshakeError, match="Unix socket") as info:
        async with open_websocket_url(
            "ws://localhost/", unix_socket_path=socket_path, max_redirects=3
        ):
            pytest.fail("followed a redirect off the Unix socket")
    assert info.value.phase == "http"


@pytest.mark.parametrize("bad", [42, ["/tmp/s"]])
async def test_bad_socket_path_type_raises_type_error(nursery: trio.Nursery, bad: Any) -> None:
    with pytest.raises(TypeError, match="unix_socket_path"):
        await connect_websocket(nursery, "localhost", 80, "/", use_ssl=False, unix_socket_path=bad)


async def test_a_proxy_with_a_unix_socket_is_refused_before_connecting(socket_path: str) -> None:
    with pytest.raises(ValueError, match="unix_socket_path and proxy"):
        async with open_websocket_url(
            "ws://localhost/", unix_socket_path=socket_path, proxy="http://127.0.0.1:9"
        ):
            pytest.fail("connected through a proxy and a Unix socket at once")


async def test_proxy_from_the_environment_does_not_apply_to_a_unix_socket(
    socket_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url("ws://localhost/", unix_socket_path=socket_path, proxy=True):
            pytest.fail("connected to a socket that does not exist")
    assert isinstance(info.value.__cause__, FileNotFoundError)


async def test_timeout_over_a_unix_socket_names_the_socket_and_the_phase(
    nursery: trio.Nursery, socket_path: str, mock_clock: trio.testing.MockClock
) -> None:
    request_arrived = trio.Event()

    async def never_answer(stream: trio.abc.Stream) -> None:
        with trio.move_on_after(60):
            await stream.receive_some()
            request_arrived.set()
            await trio.sleep_forever()

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(socket_path)
    sock.listen()
    nursery.start_soon(trio.serve_listeners, never_answer, [trio.SocketListener(sock)])
    result: dict[str, BaseException] = {}

    async def attempt() -> None:
        try:
            async with open_websocket_url(
                "ws://localhost/", unix_socket_path=socket_path, connect_timeout=5
            ):
                pytest.fail("no answer, no connection")
        except ConnectionTimeout as exc:
            result["error"] = exc

    async with trio.open_nursery() as inner:
        inner.start_soon(attempt)
        with trio.fail_after(10):
            await request_arrived.wait()
        mock_clock.autojump_threshold = 0
    error = result["error"]
    assert isinstance(error, ConnectionTimeout)
    assert error.phase == "http"
    assert "no WebSocket connection to localhost:80 within 5.0 s" in str(error)
    assert f"Unix socket {socket_path!r}" in str(error)
