"""Our client against our server over a Unix domain socket, plain and TLS.

Both ends are the library's public entry points: ``serve_websocket(handler,
None, None, ssl_context, unix_socket_path=...)`` and
``open_websocket_url(url, ssl_context, unix_socket_path=...)``. The URL
still gives the Host header, the resource and, over TLS, the name the
certificate is checked against; nothing is looked up by name.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    HTTPRequest,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX sockets")


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # A short directory: socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="tws-") as directory:
        yield Path(directory) / "ws.sock"


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


class Recorder:
    """An echo handler that remembers each request's path and, through a
    ``process_request`` hook (which sees every header), its Host header."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.hosts: list[str | None] = []

    def see_request(self, request: HTTPRequest) -> None:
        self.hosts.append(request.header("host"))

    async def handle(self, request: WebSocketRequest) -> None:
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol=offered[0] if offered else None)
        self.paths.append(request.path)
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass


async def start_server(
    nursery: trio.Nursery,
    handler: Recorder,
    path: Path | str,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocketServer:
    server: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            handler.handle,
            None,
            None,
            ssl_context,
            unix_socket_path=path,
            process_request=handler.see_request,
        )
    )
    return server


async def test_plain_round_trip_with_path_host_and_subprotocol(
    nursery: trio.Nursery, socket_path: Path
) -> None:
    recorder = Recorder()
    await start_server(nursery, recorder, socket_path)
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    async with open_websocket_url(
        "ws://chat.internal/rooms/7?user=ann",
        subprotocols=["chat.v2", "chat.v1"],
        unix_socket_path=socket_path,
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00\xff" * 40_000)
        assert await ws.get_message() == b"\x00\xff" * 40_000
    assert ws.closed is not None and ws.closed.code == 1000
    assert recorder.paths == ["/rooms/7?user=ann"]
    assert recorder.hosts == ["chat.internal"]


async def test_tls_round_trip_checks_the_url_host(
    nursery: trio.Nursery,
    socket_path: Path,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    recorder = Recorder()
    await start_server(nursery, recorder, socket_path, server_context)
    async with open_websocket_url(
        "wss://localhost/secure", client_context, unix_socket_path=socket_path
    ) as ws:
        # Larger than one TLS record (16 KiB), both ways.
        big = "x" * 200_000
        await ws.send_message(big)
        assert await ws.get_message() == big
    assert ws.closed is not None and ws.closed.code == 1000
    assert (recorder.paths, recorder.hosts) == (["/secure"], ["localhost"])


async def test_tls_refuses_a_certificate_for_another_name(
    nursery: trio.Nursery,
    socket_path: Path,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    await start_server(nursery, Recorder(), socket_path, server_context)
    with pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(
            "wss://other.example/", client_context, unix_socket_path=socket_path
        ):
            pass  # pragma: no cover
    cause: BaseException | None = caught.value
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError)


async def test_plain_client_against_a_tls_server_fails_cleanly(
    nursery: trio.Nursery, socket_path: Path, server_context: ssl.SSLContext
) -> None:
    await start_server(nursery, Recorder(), socket_path, server_context)
    with trio.fail_after(10), pytest.raises(HandshakeError):
        async with open_websocket_url("ws://localhost/", unix_socket_path=socket_path):
            pass  # pragma: no cover


@pytest.mark.parametrize("secure", [False, True])
async def test_many_clients_at_once(
    nursery: trio.Nursery,
    socket_path: Path,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    secure: bool,
) -> None:
    recorder = Recorder()
    await start_server(nursery, recorder, socket_path, server_context if secure else None)
    url = "wss://localhost/" if secure else "ws://localhost/"
    answers: dict[int, str | bytes] = {}

    async def client(number: int) -> None:
        async with open_websocket_url(
            url, client_context if secure else None, unix_socket_path=socket_path
        ) as ws:
            await ws.send_message(f"client {number}")
            answers[number] = await ws.get_message()

    with trio.fail_after(15):
        async with trio.open_nursery() as clients:
            for number in range(20):
                clients.start_soon(client, number)
    assert answers == {number: f"client {number}" for number in range(20)}
    assert len(recorder.paths) == 20


@pytest.mark.parametrize("secure", [False, True])
async def test_graceful_shutdown_reaches_the_client_and_removes_the_file(
    socket_path: Path,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    secure: bool,
) -> None:
    url = "wss://localhost/" if secure else "ws://localhost/"
    async with trio.open_nursery() as nursery:
        server = await start_server(
            nursery, Recorder(), socket_path, server_context if secure else None
        )
        async with open_websocket_url(
            url, client_context if secure else None, unix_socket_path=socket_path
        ) as ws:
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            with trio.fail_after(10):
                report = await server.aclose(reason="maintenance")
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
        assert caught.value.reason.code == 1001
        assert caught.value.reason.reason == "maintenance"
        assert report.closed_cleanly == 1
        assert report.forced == 0
    assert not await trio.Path(socket_path).exists()
    with pytest.raises(HandshakeError):
        async with open_websocket_url(url, unix_socket_path=socket_path):
            pass  # pragma: no cover


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract names are Linux only")
async def test_abstract_socket_name_end_to_end(nursery: trio.Nursery) -> None:
    name = f"\0trio-websocket-e2e-{os.getpid()}-{id(nursery)}"
    await start_server(nursery, Recorder(), name)
    async with open_websocket_url("ws://localhost/", unix_socket_path=name) as ws:
        await ws.send_message("abstract")
        assert await ws.get_message() == "abstract"
