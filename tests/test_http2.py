"""WebSockets over HTTP/2 (RFC 8441), our server with our client: what a
user of ``serve_websocket(..., http2=True)``, ``open_websocket_url(...,
http2=...)`` and ``open_websocket_session`` relies on.

Real peers (Chromium, Node's http2, nghttpx, hypercorn) are in
tests/test_interop_h2.py; hostile HTTP/2 peers in
tests/test_hostile_http2.py.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trustme

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    Endpoint,
    HandshakeError,
    HTTP2Limits,
    HTTPRequest,
    HTTPResponse,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_session,
    open_websocket_url,
    serve_websocket,
)

pytest.importorskip("h2", reason="the http2 extra is in requirements-dev.txt")

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

CA = trustme.CA()
CERT = CA.issue_cert("127.0.0.1", "localhost")


def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(context)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


Handler = Callable[[WebSocketRequest], Awaitable[object]]


async def echo(request: WebSocketRequest) -> None:
    offered = request.proposed_subprotocols
    ws = await request.accept(subprotocol=offered[0] if offered else None)
    try:
        async for message in ws:
            await ws.send_message(message)
    except ConnectionClosed:
        pass


@asynccontextmanager
async def running(
    handler: Handler, *, tls: bool = False, **options: Any
) -> AsyncIterator[tuple[WebSocketServer, str]]:
    """A server on 127.0.0.1 and the base URL a client reaches it by."""
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(
                serve_websocket,
                handler,
                "127.0.0.1",
                0,
                server_context() if tls else None,
                **options,
            )
        )
        scheme = "wss" if tls else "ws"
        yield server, f"{scheme}://localhost:{server.port}"
        nursery.cancel_scope.cancel()


class Recorder:
    """A handler that records what each request looked like, then echoes."""

    def __init__(self) -> None:
        self.requests: list[WebSocketRequest] = []
        self.closes: list[CloseReason] = []

    async def __call__(self, request: WebSocketRequest) -> None:
        self.requests.append(request)
        ws = await request.accept(
            subprotocol=request.proposed_subprotocols[0] if request.proposed_subprotocols else None
        )
        try:
            async for message in ws:
                if message == "close-from-server":
                    await ws.aclose(4001, "server says bye")
                    break
                await ws.send_message(message)
        except ConnectionClosed:
            pass
        assert ws.closed is not None
        self.closes.append(ws.closed)


# ----------------------------------------------------------------------
# Opening, messages and closing


@pytest.mark.parametrize("tls", [True, False], ids=["tls-alpn", "h2c"])
async def test_messages_and_close_codes_both_ways(tls: bool) -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with running(recorder, tls=tls, http2=True) as (_, base):
            context = client_context() if tls else None
            async with open_websocket_url(
                f"{base}/chat?room=1", context, http2="require", subprotocols=["v1"]
            ) as ws:
                assert ws.http_version == "2"
                assert ws.subprotocol == "v1"
                for message in ["héllo", b"", b"\x00" * 1_048_576, "x" * 70_000]:
                    await ws.send_message(message)
                    assert await ws.get_message() == message
                await ws.aclose(4000, "client says bye")
            async with open_websocket_url(f"{base}/other", context, http2="require") as ws:
                await ws.send_message("close-from-server")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert (closed.value.reason.code, closed.value.reason.reason) == (
                    4001,
                    "server says bye",
                )
    first, second = recorder.requests
    assert (first.http_version, first.path) == ("2", "/chat?room=1")
    assert first.proposed_subprotocols == ("v1",)
    assert second.path == "/other"
    assert (recorder.closes[0].code, recorder.closes[0].reason) == (4000, "client says bye")
    assert recorder.closes[1].code == 4001
    assert first.remote.is_ssl is tls  # type: ignore[union-attr]


async def test_one_port_serves_http2_and_http11_clients() -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with (
            running(recorder, http2=True) as (_, base),
            open_websocket_url(f"{base}/two", http2="require") as ws2,
            open_websocket_url(f"{base}/one") as ws1,
        ):
            for ws in (ws1, ws2):
                await ws.send_message("ping?")
                assert await ws.get_message() == "ping?"
            assert (ws1.http_version, ws2.http_version) == ("1.1", "2")
    assert sorted(r.http_version for r in recorder.requests) == ["1.1", "2"]


@pytest.mark.parametrize("tls", [True, False], ids=["tls-alpn", "h2c"])
async def test_client_falls_back_to_http11_or_fails_when_asked(tls: bool) -> None:
    context = client_context() if tls else None
    with trio.fail_after(10):
        async with running(echo, tls=tls) as (_, base):  # no http2 on this server
            async with open_websocket_url(f"{base}/", context, http2=True) as ws:
                assert ws.http_version == "1.1"
                await ws.send_message("still works")
                assert await ws.get_message() == "still works"
            with pytest.raises(HandshakeError) as failure:
                async with open_websocket_url(f"{base}/", context, http2="require"):
                    pass  # pragma: no cover
            assert failure.value.phase == "http"
            assert "http2" in str(failure.value)


async def test_a_context_used_for_http2_serves_http11_again() -> None:
    # ALPN lives on the SSL context: the package made these offer h2, and
    # must make them stop when they are used without HTTP/2 again.
    context = client_context()
    shared_server_context = server_context()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h2_server = await nursery.start(
                partial(serve_websocket, echo, "127.0.0.1", 0, shared_server_context, http2=True)
            )
            url = f"wss://localhost:{h2_server.port}/"
            async with open_websocket_url(url, context, http2=True) as ws:
                assert ws.http_version == "2"
            async with open_websocket_url(url, context) as ws:
                assert ws.http_version == "1.1"
                await ws.send_message("still HTTP/1.1")
                assert await ws.get_message() == "still HTTP/1.1"
            # The same server context, now for a server without HTTP/2.
            h1_server = await nursery.start(
                partial(serve_websocket, echo, "127.0.0.1", 0, shared_server_context)
            )
            async with open_websocket_url(
                f"wss://localhost:{h1_server.port}/", context, http2=True
            ) as ws:
                assert ws.http_version == "1.1"
                await ws.send_message("fell back")
                assert await ws.get_message() == "fell back"
            nursery.cancel_scope.cancel()


async def test_rejection_and_hook_answers_over_http2() -> None:
    seen: list[HTTPRequest] = []

    def hook(request: HTTPRequest) -> HTTPResponse | None:
        seen.append(request)
        if request.path == "/health":
            return HTTPResponse(401, [("www-authenticate", "Basic")], "log in\n")
        return None

    async def handler(request: WebSocketRequest) -> None:
        await request.reject(409, extra_headers=[(b"x-why", b"busy")], body=b"try later")

    with trio.fail_after(10):
        async with running(handler, http2=True, process_request=hook) as (_, base):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"{base}/health", http2="require"):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 401
            assert rejected.value.body == b"log in\n"
            assert (b"www-authenticate", b"Basic") in rejected.value.headers
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"{base}/room", http2="require"):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 409
            assert rejected.value.body == b"try later"
            assert (b"x-why", b"busy") in rejected.value.headers
    view = seen[0]
    assert (view.method, view.http_version, view.protocol) == ("CONNECT", "2", "websocket")
    assert view.is_websocket
    assert view.authority is not None and view.authority.startswith("localhost:")


async def test_origin_check_and_connection_limit_apply_to_each_stream() -> None:
    release = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await release.wait()
        await ws.aclose()

    with trio.fail_after(10):
        async with running(
            handler, http2=True, origins=["https://good.example"], max_connections=1
        ) as (server, base):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    f"{base}/", http2="require", extra_headers=[(b"origin", b"https://evil")]
                ):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 403
            async with open_websocket_session(f"{base}/", http2="require") as session:
                good = [(b"origin", b"https://good.example")]
                async with session.open_websocket(extra_headers=good):
                    with pytest.raises(ConnectionRejected) as rejected:
                        await session.connect_websocket(extra_headers=good)
                    assert rejected.value.status_code == 503
                    assert server.connection_count == 1
                    release.set()


async def test_subprotocol_and_permessage_deflate_over_http2() -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with (
            running(recorder, http2=True, compression="deflate") as (_, base),
            open_websocket_url(
                f"{base}/", http2="require", compression="deflate", subprotocols=["a", "b"]
            ) as ws,
        ):
            assert ws.compression is not None
            assert ws.subprotocol == "a"
            text = "compressible " * 10_000
            await ws.send_message(text)
            assert await ws.get_message() == text
            assert ws.statistics().bytes_sent < len(text) // 10


async def test_ping_statistics_and_keepalive_work_over_http2() -> None:
    with trio.fail_after(10):
        async with (
            running(echo, http2=True, ping_interval=0.05) as (_, base),
            open_websocket_url(f"{base}/", http2="require", ping_interval=0.05) as ws,
        ):
            await ws.ping(b"abc")
            await trio.sleep(0.2)
            assert ws.latency is not None
            await ws.send_message("counted")
            await ws.get_message()
            stats = ws.statistics()
            assert stats.messages_sent == 1 and stats.messages_received == 1


# ----------------------------------------------------------------------
# Sessions: many WebSockets on one connection


async def test_session_carries_many_websockets_on_one_connection() -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with (
            running(recorder, tls=True, http2=True) as (_, base),
            open_websocket_session(f"{base}/", client_context()) as session,
        ):

            async def talk(index: int) -> None:
                async with session.open_websocket(f"/ws/{index}") as ws:
                    for round_ in range(10):
                        await ws.send_message(f"{index}:{round_}")
                        assert await ws.get_message() == f"{index}:{round_}"

            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(talk, index)
            assert session.connection_count == 1
            assert session.http_version == "2"
    remotes = {request.remote for request in recorder.requests}
    assert len(recorder.requests) == 8 and len(remotes) == 1
    # The connection's endpoints, made once and shared by its WebSockets.
    (remote,) = remotes
    assert isinstance(remote, Endpoint) and remote.is_ssl and remote.address == "127.0.0.1"
    assert all(request.remote is recorder.requests[0].remote for request in recorder.requests)
    assert all(request.local is recorder.requests[0].local for request in recorder.requests)
    assert sorted(r.path for r in recorder.requests) == [f"/ws/{i}" for i in range(8)]


async def test_session_opens_another_connection_when_the_server_is_full() -> None:
    recorder = Recorder()
    limits = HTTP2Limits(max_concurrent_streams=2)
    with trio.fail_after(10):
        async with running(recorder, http2=True, http2_limits=limits) as (_, base):
            async with open_websocket_session(f"{base}/") as session:
                sockets = [await session.connect_websocket(f"/{i}") for i in range(5)]
                assert session.connection_count == 3
                for ws in sockets:
                    await ws.send_message("hi")
                    assert await ws.get_message() == "hi"
                assert session.websocket_count == 5
            # The session's end closed each one it still had.
            assert all(ws.closed is not None and ws.closed.code == 1000 for ws in sockets)
    assert len({request.remote for request in recorder.requests}) == 3


async def test_session_falls_back_to_http11_connections() -> None:
    with trio.fail_after(10):
        async with running(echo) as (_, base):
            async with (
                open_websocket_session(f"{base}/") as session,
                session.open_websocket("/a") as a,
                session.open_websocket("/b") as b,
            ):
                assert (a.http_version, b.http_version, session.http_version) == (
                    "1.1",
                    "1.1",
                    "1.1",
                )
                await a.send_message("x")
                assert await a.get_message() == "x"
            async with open_websocket_session(f"{base}/", http2="require") as session:
                with pytest.raises(HandshakeError):
                    await session.connect_websocket()


async def test_session_block_error_is_raised_as_itself() -> None:
    with trio.fail_after(10):
        async with running(echo, http2=True) as (_, base):
            with pytest.raises(KeyError):
                async with open_websocket_session(f"{base}/") as session:
                    ws = await session.connect_websocket()
                    raise KeyError("mine")
            # An error in the block closes the session's WebSockets: 1001.
            assert ws.closed is not None and ws.closed.code == 1001


# ----------------------------------------------------------------------
# Flow control is the backpressure


async def test_a_websocket_that_is_not_read_stalls_no_other() -> None:
    big = b"\xab" * (1024 * 1024)
    sends_done = 0
    stalled = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        nonlocal sends_done
        ws = await request.accept()
        if request.path == "/flood":
            try:
                for _ in range(64):
                    await ws.send_message(big)
                    sends_done += 1
            except ConnectionClosed:
                pass
            return
        async for message in ws:
            await ws.send_message(message)

    limits = HTTP2Limits(stream_window=65_536)
    with trio.fail_after(15):
        async with (
            running(handler, http2=True) as (_, base),
            open_websocket_session(f"{base}/", http2_limits=limits) as session,
        ):
            flood = await session.connect_websocket("/flood", message_queue_size=1)
            async with session.open_websocket("/echo") as echo_ws:
                await trio.sleep(0.3)  # the flood fills what it may
                for index in range(50):
                    await echo_ws.send_message(f"m{index}")
                    assert await echo_ws.get_message() == f"m{index}"
                stalled.set()
            # The flood is held back by its window and inbox, not buffered.
            assert sends_done < 8
            assert (await flood.get_message()) == big
            await flood.aclose()
    assert stalled.is_set()


def _depth_of(error: BaseException, kind: type[BaseException], depth: int = 0) -> int | None:
    """How many groups deep the first ``kind`` sits in ``error``."""
    if isinstance(error, kind):
        return depth
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _depth_of(inner, kind, depth + 1)
            if found is not None:
                return found
    return None


async def test_a_handler_error_leaves_as_it_does_over_http11() -> None:
    # An HTTP/2 connection's WebSockets run in a nursery of that
    # connection's: a handler's error must not come out wrapped once more
    # than the same error from an HTTP/1.1 connection's handler.
    async def failing(request: WebSocketRequest) -> None:
        await request.accept()
        raise KeyError("handler bug")

    depths = {}
    for http2 in (False, True):
        with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    partial(serve_websocket, failing, "127.0.0.1", 0, None, http2=True)
                )
                url = f"ws://127.0.0.1:{server.port}/"
                async with open_websocket_url(url, http2="require" if http2 else False) as ws:
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 1011
                await trio.sleep_forever()  # until the handler's error arrives
        depths[http2] = _depth_of(info.value, KeyError)
    assert depths[False] is not None
    assert depths[True] == depths[False]


# ----------------------------------------------------------------------
# Graceful shutdown


async def test_shutdown_closes_each_websocket_with_1001_and_refuses_new_ones() -> None:
    recorder = Recorder()
    with trio.fail_after(10):
        async with (
            running(recorder, http2=True) as (server, base),
            open_websocket_session(f"{base}/") as session,
        ):
            sockets = [await session.connect_websocket(f"/{i}") for i in range(3)]
            report = await server.aclose(timeout=5)
            for ws in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001
            assert report.closed_cleanly == 3 and report.forced == 0
            with pytest.raises(HandshakeError):
                await session.connect_websocket("/late")


# ----------------------------------------------------------------------
# Options


def test_http2_limits_are_checked() -> None:
    assert HTTP2Limits().connection_window == 100 * 512 * 1024
    with pytest.raises(ValueError):
        HTTP2Limits(max_concurrent_streams=0)
    with pytest.raises(ValueError):
        HTTP2Limits(max_frame_size=1000)
    with pytest.raises(TypeError):
        HTTP2Limits(stream_window=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HTTP2Limits(stream_window=2**31)


async def test_bad_http2_options_fail_before_anything_opens() -> None:
    with pytest.raises(ValueError):
        async with open_websocket_url("ws://127.0.0.1:1/", http2="sometimes"):
            pass  # pragma: no cover
    with pytest.raises(TypeError):
        await serve_websocket(echo, "127.0.0.1", 0, None, http2="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        async with open_websocket_session("ws://127.0.0.1:1/", http2=False):
            pass  # pragma: no cover


async def test_asking_for_http2_without_h2_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "h2", None)
    with pytest.raises(RuntimeError, match=r'pip install "h2>=4.1"'):
        await serve_websocket(echo, "127.0.0.1", 0, None, http2=True)
    with pytest.raises(RuntimeError, match="h2"):
        async with open_websocket_url("ws://127.0.0.1:1/", http2=True):
            pass  # pragma: no cover


async def test_connection_reports_its_http_version() -> None:
    async with (
        running(echo, http2=True) as (_, base),
        open_websocket_url(f"{base}/", http2=True) as ws,
    ):
        assert isinstance(ws, WebSocketConnection)
        assert ws.http_version == "2"
        assert ws.local.is_ssl is False  # type: ignore[union-attr]
        assert ws.remote.port == int(base.rsplit(":", 1)[1])  # type: ignore[union-attr]
