"""Serving on a Unix domain socket path (``unix_socket_path=``), with raw
trio/wsproto clients on the socket."""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from conftest import echo_handler
from server_fixtures import exchange, upgrade_request
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ShutdownReport,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
)

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


# Small synchronous file checks (not worth a thread in a test).
def exists(path: Path) -> bool:
    return path.exists()


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def read_text(path: Path) -> str:
    return path.read_text()


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Short: socket paths are limited to about 100 bytes.
    directory = Path(os.environ.get("TMPDIR", "/tmp"))
    path = directory / f"tws-{os.getpid()}-{id(tmp_path_factory) % 100000}.sock"
    yield path
    path.unlink(missing_ok=True)


async def raw_wsproto_exchange(path: Path, text: str) -> str:
    """Open the socket, do the handshake and one echo with wsproto by hand."""
    stream = await trio.open_unix_socket(str(path))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="localhost", target="/raw")))
    reply = ""
    accepted = False
    for _ in range(100):
        data = await stream.receive_some()
        assert data, "server closed early"
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
                await stream.send_all(ws.send(Message(data=text)))
            elif isinstance(event, TextMessage):
                reply += event.data
                if event.message_finished:
                    await stream.send_all(ws.send(CloseConnection(code=1000)))
            elif isinstance(event, CloseConnection):
                assert accepted
                await stream.aclose()
                return reply
    raise AssertionError("no close frame")


async def test_serves_a_raw_wsproto_client_on_a_socket_path(
    nursery: trio.Nursery, socket_path: Path
) -> None:
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        await echo_handler(request)

    server = await nursery.start(
        partial(serve_websocket, handler, None, None, None, unix_socket_path=socket_path)
    )
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    with pytest.raises(RuntimeError):
        server.port  # noqa: B018 -- no TCP port to report
    with trio.fail_after(10):
        assert await raw_wsproto_exchange(socket_path, "over unix") == "over unix"
    assert paths == ["/raw"]


async def test_library_client_over_a_unix_stream_and_plain_http(
    nursery: trio.Nursery, socket_path: Path
) -> None:
    await nursery.start(
        partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=str(socket_path))
    )
    with trio.fail_after(10):
        stream = await trio.open_unix_socket(str(socket_path))
        ws = await wrap_client_stream(nursery, stream, "localhost", "/lib")
        await ws.send_message(b"bytes")
        assert await ws.get_message() == b"bytes"
        await ws.aclose()
        answer = await exchange(
            await trio.open_unix_socket(str(socket_path)), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert answer.status == 426


async def test_socket_file_is_removed_when_the_server_stops(socket_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=socket_path)
        )
        assert exists(socket_path)
        nursery.cancel_scope.cancel()
    assert not exists(socket_path)
    # And after a graceful shutdown too.
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=socket_path)
        )
        stream = await trio.open_unix_socket(str(socket_path))
        ws = await wrap_client_stream(nursery, stream, "localhost", "/")
        report = await server.aclose()
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert report == ShutdownReport(closed_cleanly=1)
    assert info.value.reason == CloseReason(1001, "server shutting down")
    assert not exists(socket_path)


async def test_a_stale_socket_file_is_replaced(nursery: trio.Nursery, socket_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays; nobody listens
    await nursery.start(
        partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=socket_path)
    )
    with trio.fail_after(10):
        assert await raw_wsproto_exchange(socket_path, "fresh") == "fresh"


async def test_a_live_socket_is_not_taken_over(nursery: trio.Nursery, socket_path: Path) -> None:
    await nursery.start(
        partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=socket_path)
    )
    with pytest.raises(OSError) as info:
        await serve_websocket(echo_handler, None, None, None, unix_socket_path=socket_path)
    assert info.value.errno == errno.EADDRINUSE
    # The first server still serves.
    with trio.fail_after(10):
        assert await raw_wsproto_exchange(socket_path, "mine") == "mine"


async def test_a_path_that_is_not_a_socket_is_never_touched(socket_path: Path) -> None:
    write_text(socket_path, "precious")
    with pytest.raises(FileExistsError):
        await serve_websocket(echo_handler, None, None, None, unix_socket_path=socket_path)
    assert read_text(socket_path) == "precious"


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", None), (None, 0), ("127.0.0.1", 8000)])
async def test_unix_socket_path_with_host_or_port_raises_value_error(
    host: str | None, port: int | None, socket_path: Path
) -> None:
    with pytest.raises(ValueError):
        await serve_websocket(echo_handler, host, port, None, unix_socket_path=socket_path)
    assert not exists(socket_path)


async def test_port_none_without_unix_socket_path_raises_value_error() -> None:
    with pytest.raises(ValueError):
        await serve_websocket(echo_handler, "127.0.0.1", None, None)


async def test_empty_socket_path_raises_value_error() -> None:
    with pytest.raises(ValueError):
        await serve_websocket(echo_handler, None, None, None, unix_socket_path="")


@pytest.mark.skipif(sys.platform != "linux", reason="abstract socket names are Linux-only")
async def test_abstract_socket_name(nursery: trio.Nursery) -> None:
    name = f"\0trio-websocket-test-{os.getpid()}"
    await nursery.start(
        partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=name)
    )
    with trio.fail_after(10):
        stream = await trio.open_unix_socket(name)
        ws = await wrap_client_stream(nursery, stream, "localhost", "/")
        await ws.send_message("abstract")
        assert await ws.get_message() == "abstract"
        await ws.aclose()


async def test_tls_over_a_unix_socket(nursery: trio.Nursery, socket_path: Path) -> None:
    import ssl

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    await nursery.start(
        partial(
            serve_websocket, echo_handler, None, None, server_context, unix_socket_path=socket_path
        )
    )
    with trio.fail_after(10):
        raw = await trio.open_unix_socket(str(socket_path))
        stream = trio.SSLStream(raw, client_context, server_hostname="localhost")
        ws = await wrap_client_stream(nursery, stream, "localhost", "/tls")
        await ws.send_message("secret")
        assert await ws.get_message() == "secret"
        await ws.aclose()


async def test_raw_upgrade_bytes_get_101_on_a_unix_socket(
    nursery: trio.Nursery, socket_path: Path
) -> None:
    await nursery.start(
        partial(serve_websocket, echo_handler, None, None, None, unix_socket_path=socket_path)
    )
    stream = await trio.open_unix_socket(str(socket_path))
    await stream.send_all(upgrade_request())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 101 ")
    await stream.aclose()
