"""TLS (wss://) over loopback TCP with certificates from a trustme CA.

The server's certificate is issued for ``127.0.0.1``, ``localhost`` and
``ws.example.test`` (the last one is resolved to loopback by a custom trio
hostname resolver, to test the default port 443).
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from conftest import (
    LoopbackResolver,
    accept_by_hand,
    answer_close_by_hand,
    echo_handler,
    read_request_head,
)

from trio_websocket import (
    ConnectionClosed,
    ConnectionTimeout,
    Endpoint,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", "ws.example.test").configure_cert(context)
    return context


@pytest.fixture
def untrusting_context() -> ssl.SSLContext:
    """Verifies certificates, but trusts another CA than the server's."""
    context = ssl.create_default_context()
    trustme.CA().configure_trust(context)
    return context




@pytest.fixture
async def tls_server(nursery: trio.Nursery, server_context: ssl.SSLContext) -> WebSocketServer:
    return await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, server_context)


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in the __cause__/__context__ chain."""
    current: BaseException | None = exc
    for _ in range(100):
        if current is None:
            return None
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
    return None


async def test_wss_round_trip_with_trusted_ca(
    tls_server: WebSocketServer, client_context: ssl.SSLContext
) -> None:
    url = f"wss://127.0.0.1:{tls_server.port}/secure?x=1"
    with trio.fail_after(10):
        async with open_websocket_url(url, client_context) as ws:
            assert ws.path == "/secure?x=1"
            await ws.send_message("over tls")
            assert await ws.get_message() == "over tls"
            big = bytes(range(256)) * 1024
            await ws.send_message(big)
            assert await ws.get_message() == big
        assert ws.closed is not None
        assert ws.closed.code == 1000


async def test_endpoints_report_ssl_on_both_sides(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        seen["request_local"] = request.local
        seen["request_remote"] = request.remote
        ws = await request.accept()
        seen["local"] = ws.local
        seen["remote"] = ws.remote
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, server_context)
    (listener,) = server.listeners
    assert listener == Endpoint("127.0.0.1", server.port, True)
    assert listener.url == f"wss://127.0.0.1:{server.port}"
    with trio.fail_after(10):
        async with open_websocket_url(
            f"wss://127.0.0.1:{server.port}/", ssl_context=client_context
        ) as ws:
            client_local, client_remote = ws.local, ws.remote
    assert client_remote == Endpoint("127.0.0.1", server.port, True)
    assert isinstance(client_local, Endpoint)
    assert client_local.is_ssl
    assert seen["request_local"] == Endpoint("127.0.0.1", server.port, True)
    assert seen["local"] == Endpoint("127.0.0.1", server.port, True)
    assert seen["request_remote"] == client_local
    assert seen["remote"] == client_local


async def test_untrusted_certificate_raises_handshake_error_promptly(
    tls_server: WebSocketServer,
    untrusting_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    url = f"wss://127.0.0.1:{tls_server.port}/"
    # Far below connect_timeout: the failure must not wait for the timeout.
    with trio.fail_after(5), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(url, untrusting_context, connect_timeout=60):
            pytest.fail("connected to a server with an untrusted certificate")
    assert not isinstance(info.value, ConnectionTimeout)
    assert find_cause(info.value, ssl.SSLCertVerificationError) is not None
    # The server shrugged the failed handshake off and serves others.
    with trio.fail_after(10):
        async with open_websocket_url(url, client_context) as ws:
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"


async def test_certificate_for_another_host_raises_handshake_error(
    nursery: trio.Nursery, ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example.test").configure_cert(context)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, context)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"wss://127.0.0.1:{server.port}/", client_context):
            pytest.fail("connected although the certificate names another host")
    assert find_cause(info.value, ssl.SSLCertVerificationError) is not None


async def test_ssl_context_with_ws_url_raises_value_error(
    nursery: trio.Nursery, client_context: ssl.SSLContext
) -> None:
    with pytest.raises(ValueError):
        async with open_websocket_url("ws://127.0.0.1:8000/", client_context):
            pytest.fail("ssl_context accepted for ws://")
    with pytest.raises(ValueError):
        await connect_websocket_url(nursery, "ws://127.0.0.1:8000/", client_context)
    assert not nursery.child_tasks


async def test_use_ssl_true_verifies_with_a_default_context(
    tls_server: WebSocketServer,
) -> None:
    # The default context does not trust the trustme CA: verification is on.
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket("127.0.0.1", tls_server.port, "/", use_ssl=True):
            pytest.fail("connected without verifying the certificate")
    assert find_cause(info.value, ssl.SSLCertVerificationError) is not None


async def test_wss_url_without_context_verifies_with_a_default_context(
    tls_server: WebSocketServer,
) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"wss://127.0.0.1:{tls_server.port}/"):
            pytest.fail("connected without verifying the certificate")
    assert find_cause(info.value, ssl.SSLCertVerificationError) is not None


async def test_connect_websocket_use_ssl_true_verifies(
    nursery: trio.Nursery, tls_server: WebSocketServer
) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        await connect_websocket(nursery, "127.0.0.1", tls_server.port, "/", use_ssl=True)
    assert find_cause(info.value, ssl.SSLCertVerificationError) is not None
    assert not nursery.child_tasks


async def test_use_ssl_accepts_an_ssl_context(
    tls_server: WebSocketServer, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        async with open_websocket(
            "127.0.0.1", tls_server.port, "/ctx", use_ssl=client_context
        ) as ws:
            assert isinstance(ws.remote, Endpoint)
            assert ws.remote.is_ssl
            await ws.send_message(b"ctx")
            assert await ws.get_message() == b"ctx"


async def test_use_ssl_false_talks_plain_tcp_to_a_tls_server(
    tls_server: WebSocketServer,
) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeError):
        async with open_websocket("127.0.0.1", tls_server.port, "/", use_ssl=False):
            pytest.fail("a plain-TCP handshake succeeded against a TLS server")




@pytest.mark.parametrize(
    ("url", "asked_port", "host_header"),
    [
        ("wss://ws.example.test/", 443, b"ws.example.test"),
        ("wss://ws.example.test:443/", 443, b"ws.example.test"),
        ("wss://ws.example.test:80/", 80, b"ws.example.test:80"),
        ("wss://ws.example.test:8443/", 8443, b"ws.example.test:8443"),
    ],
)
async def test_wss_host_header_leaves_out_port_443(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    url: str,
    asked_port: int,
    host_header: bytes,
) -> None:
    heads: list[bytes] = []

    async def raw_handler(stream: trio.abc.Stream) -> None:
        head = await read_request_head(stream)
        heads.append(head)
        connection = await accept_by_hand(stream, head)
        await answer_close_by_hand(stream, connection)

    listeners = await nursery.start(
        partial(
            trio.serve_ssl_over_tcp,
            raw_handler,
            0,
            server_context,
            host="127.0.0.1",
            https_compatible=True,
        )
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    resolver = LoopbackResolver(port)
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(10):
            async with open_websocket_url(url, client_context) as ws:
                assert isinstance(ws.remote, Endpoint)
                assert ws.remote.is_ssl
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert resolver.asked == [(b"ws.example.test", asked_port)]
    (head,) = heads
    values = [
        line.partition(b":")[2].strip()
        for line in head.split(b"\r\n")[1:]
        if line.partition(b":")[0].strip().lower() == b"host"
    ]
    assert values == [host_header]
