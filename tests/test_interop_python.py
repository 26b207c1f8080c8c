"""Interop with independent Python WebSocket implementations (GitHub issue 7).

Our client talks to each peer's server and each peer's client talks to our
server: websockets (asyncio and Trio APIs), aiohttp, and websocket-client
(a client only). The peers are installed from requirements-dev.txt; without
one this module is skipped, or fails under ``CI=true`` (tests/peers.py);
websockets' Trio API is skipped on Python 3.10 (see ``NO_TRIO_API``).

Every connection runs the same conversation, with our side leading:

1. the opening handshake: the client offers subprotocols ``chat.v2`` and
   ``chat.v1``, the server supports only ``chat.v1``; the client sends a
   custom request header and the server a custom response header, and each
   side checks what it got;
2. every message of ``MESSAGES`` (non-ASCII text, empty text and binary,
   1 MiB of binary) goes to the peer, which echoes it; both sides check;
3. we ping the peer and wait for its pong;
4. ``cmd:ping`` asks the peer to ping us and report whether our pong came;
5. the close: either we close with 4001 and a non-ASCII reason, which the
   peer reports, or ``cmd:close`` asks the peer to close with 4002, which we
   must see, while the peer reports that our answer completed its close.

The peer's half is ``peer_script``, written once against ``PeerConnection``
with one small adapter per library. Peers built on asyncio (and the blocking
websocket-client) run in a worker thread with their own event loop, bounded
by ``PEER_TIMEOUT``, and are cancelled and joined if the test fails first;
websockets' Trio API runs in the test's own Trio loop. Everything listens on
and connects to 127.0.0.1; wss:// uses a trustme CA that the peer trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import pytest
import trio
import trustme
from peers import PIP_PEERS, peer_unavailable

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

# websockets' Trio API is in websockets 17, which needs Python 3.11: on 3.10
# (websockets 16) its cases are skipped, with this reason; from 3.11 on it is
# a peer like the others.
NO_TRIO_API = "websockets' Trio API needs websockets 17, hence Python 3.11"
try:
    import aiohttp
    import aiohttp.web
    import websocket  # websocket-client
    import websockets
    import websockets.asyncio.client
    import websockets.asyncio.server

    if sys.version_info >= (3, 11):
        import websockets.trio.client
        import websockets.trio.server
except ImportError as exc:
    peer_unavailable(
        "the Python peers (websockets, aiohttp, websocket-client)",
        f"importing one failed ({exc})",
        PIP_PEERS,
    )

T = TypeVar("T")

#: Seconds for one step that can hang (a pong, a close, a peer to stop).
STEP_TIMEOUT = 5.0
#: Seconds a peer may run in all (its own timeout, inside its thread).
PEER_TIMEOUT = 10.0
#: Seconds for a whole test. Plus STEP_TIMEOUT for a cancelled peer thread
#: to stop, this stays below the suite's per-test limit of 20 s.
TEST_TIMEOUT = 12.0

OFFERED_SUBPROTOCOLS = ["chat.v2", "chat.v1"]
SERVER_SUBPROTOCOL = "chat.v1"
REQUEST_HEADER = "X-Interop-Request"
RESPONSE_HEADER = "X-Interop-Response"
OUR_VALUE = "from-trio-websocket"
PEER_VALUE = "from-the-peer"

MESSAGES: list[str | bytes] = [
    "héllo wörld ✓ 𝄞 日本語",
    "",
    b"",
    random.Random(7).randbytes(2**20),  # exactly 1 MiB: the default size limit
    b"\x00\xff\x80 binary",
]
OUR_PING = b"ours"
PEER_PING = b"theirs"
OUR_CLOSE = CloseReason(4001, "bye from us ✓")
PEER_CLOSE = CloseReason(4002, "bye from the peer ✓")


def describe(message: str | bytes) -> tuple[str, int, str]:
    """A message's type, length and digest: comparable, and short to print."""
    data = message.encode() if isinstance(message, str) else message
    kind = "text" if isinstance(message, str) else "binary"
    return kind, len(data), hashlib.sha256(data).hexdigest()[:16]


# ----------------------------------------------------------------------
# The peer's half of the conversation


class Closed(NamedTuple):
    """A close frame the peer received: its code and reason."""

    code: int | None
    reason: str | None


class PeerConnection(Protocol):
    """One peer library's connection, as ``peer_script`` uses it."""

    subprotocol: str | None
    #: The value of the custom header the peer saw from our side.
    header: str | None
    #: The request target a peer server saw (None on a client).
    path: str | None

    async def receive(self) -> str | bytes | Closed: ...

    async def send(self, message: str | bytes) -> None: ...

    async def ping(self, payload: bytes) -> bool:
        """Ping and wait (at most STEP_TIMEOUT) for the matching pong."""
        ...

    async def close(self, code: int, reason: str) -> int | None:
        """Close, and return the close code our side answered with."""
        ...


@dataclass
class Report:
    """What the peer saw, for the test to check."""

    subprotocol: str | None
    header: str | None
    path: str | None
    received: list[tuple[str, int, str]] = field(default_factory=list)
    ping_answered: bool | None = None
    close_received: Closed | None = None
    close_answer: int | None = None


async def peer_script(conn: PeerConnection) -> Report:
    """Echo messages and obey ``cmd:`` commands until the connection closes."""
    report = Report(conn.subprotocol, conn.header, conn.path)
    while True:
        message = await conn.receive()
        if isinstance(message, Closed):
            report.close_received = message
            return report
        if message == "cmd:ping":
            report.ping_answered = await conn.ping(PEER_PING)
            await conn.send("ping answered" if report.ping_answered else "no pong")
        elif message == "cmd:close":
            assert PEER_CLOSE.reason is not None
            report.close_answer = await conn.close(PEER_CLOSE.code, PEER_CLOSE.reason)
            return report
        else:
            report.received.append(describe(message))
            await conn.send(message)


# ----------------------------------------------------------------------
# Adapters, one per peer library


class WebsocketsAsyncio:
    """websockets' asyncio API (the trio API differs only in ping and close)."""

    def __init__(self, ws: Any, header: str | None, path: str | None = None) -> None:
        self.ws = ws
        self.subprotocol = ws.subprotocol
        self.header = header
        self.path = path

    async def receive(self) -> str | bytes | Closed:
        try:
            message: str | bytes = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is None:
                return Closed(None, None)
            return Closed(exc.rcvd.code, exc.rcvd.reason)
        return message

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def ping(self, payload: bytes) -> bool:
        pong = await self.ws.ping(payload)
        try:
            await asyncio.wait_for(pong, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.close(code, reason)
        code_back: int | None = self.ws.close_code
        return code_back


class WebsocketsTrio(WebsocketsAsyncio):
    async def ping(self, payload: bytes) -> bool:
        pong = await self.ws.ping(payload)
        with trio.move_on_after(STEP_TIMEOUT):
            await pong.wait()
        answered: bool = pong.is_set()
        return answered

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.aclose(code, reason)
        code_back: int | None = self.ws.close_code
        return code_back


class Aiohttp:
    """aiohttp's client or server WebSocket, with ``autoping=False``: aiohttp
    swallows pongs otherwise, so the adapter answers pings itself (as
    aiohttp's autoping does: ``pong(ping's data)``) and sees the pongs."""

    def __init__(
        self, ws: Any, subprotocol: str | None, header: str | None, path: str | None = None
    ) -> None:
        self.ws = ws
        self.subprotocol = subprotocol
        self.header = header
        self.path = path

    async def _next(self) -> Any:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                await self.ws.pong(msg.data)
            else:
                return msg

    async def receive(self) -> str | bytes | Closed:
        msg = await self._next()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            data: str | bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return Closed(msg.data, msg.extra)
        return Closed(None, f"aiohttp: {msg.type.name} {msg.data!r}")

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def ping(self, payload: bytes) -> bool:
        await self.ws.ping(payload)
        try:
            msg = await asyncio.wait_for(self._next(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            return False
        return bool(msg.type is aiohttp.WSMsgType.PONG and msg.data == payload)

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.close(code=code, message=reason.encode())
        code_back: int | None = self.ws.close_code
        return code_back


class WebsocketClient:
    """websocket-client's blocking WebSocket (with a socket timeout of
    STEP_TIMEOUT). It blocks the private event loop of its thread, which
    runs nothing else; each receive yields once so a cancellation gets in."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.subprotocol = ws.getsubprotocol()
        self.header = (ws.getheaders() or {}).get(RESPONSE_HEADER.lower())
        self.path: str | None = None

    async def receive(self) -> str | bytes | Closed:
        await asyncio.sleep(0)
        while True:
            # Pings are answered inside recv_data_frame.
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text: str = frame.data.decode("utf-8")
                return text
            if opcode == websocket.ABNF.OPCODE_BINARY:
                return bytes(frame.data)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return parse_close_payload(frame.data)

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.ws.send_text(message)
        else:
            self.ws.send_bytes(message)

    async def ping(self, payload: bytes) -> bool:
        self.ws.ping(payload)
        try:
            while True:
                opcode, frame = self.ws.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_PONG:
                    return bool(frame.data == payload)
                if opcode != websocket.ABNF.OPCODE_PING:
                    return False
        except websocket.WebSocketTimeoutException:
            return False

    async def close(self, code: int, reason: str) -> int | None:
        self.ws.close(status=code, reason=reason.encode(), timeout=STEP_TIMEOUT)
        if self.ws.close_frame is None:
            return None
        data = self.ws.close_frame.data
        assert isinstance(data, bytes)
        return parse_close_payload(data).code


def parse_close_payload(data: bytes) -> Closed:
    if len(data) < 2:
        return Closed(None, None)
    return Closed(struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8"))


# ----------------------------------------------------------------------
# Peer servers (serving one connection on a listening socket we made) and
# peer clients (connecting to a URL)


@dataclass
class Tls:
    """A trustme CA and the TLS settings made from it."""

    ca: trustme.CA
    ca_path: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def server_context(tls: Tls | None) -> ssl.SSLContext | None:
    return None if tls is None else tls.server_context()


async def websockets_asyncio_server(sock: socket.socket, tls: Tls | None) -> Report:
    done: asyncio.Future[Report] = asyncio.get_running_loop().create_future()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        header = ws.request.headers.get(REQUEST_HEADER) if ws.request else None
        path = ws.request.path if ws.request else None
        try:
            done.set_result(await peer_script(WebsocketsAsyncio(ws, header, path)))
        except Exception as exc:
            done.set_exception(exc)

    def add_header(ws: Any, request: Any, response: Any) -> None:
        response.headers[RESPONSE_HEADER] = PEER_VALUE

    async with websockets.asyncio.server.serve(
        handler,
        sock=sock,
        ssl=server_context(tls),
        subprotocols=[websockets.Subprotocol(SERVER_SUBPROTOCOL)],
        process_response=add_header,
    ):
        return await done


async def websockets_trio_server(sock: socket.socket, tls: Tls | None) -> Report:
    result: list[Report | Exception] = []
    done = trio.Event()

    async def handler(ws: websockets.trio.server.ServerConnection) -> None:
        header = ws.request.headers.get(REQUEST_HEADER) if ws.request else None
        path = ws.request.path if ws.request else None
        try:
            result.append(await peer_script(WebsocketsTrio(ws, header, path)))
        except Exception as exc:
            result.append(exc)
        done.set()

    def add_header(ws: Any, request: Any, response: Any) -> None:
        response.headers[RESPONSE_HEADER] = PEER_VALUE

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                websockets.trio.server.serve,
                handler,
                listeners=[listener],
                ssl=server_context(tls),
                subprotocols=[websockets.Subprotocol(SERVER_SUBPROTOCOL)],
                process_response=add_header,
            )
        )
        await done.wait()
        await server.aclose()
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]


async def aiohttp_closed(sockets: list[Any]) -> None:
    """Wait (at most a second) until aiohttp has closed its end of the
    connections: it does not wait for a TLS transport to finish closing
    (aio-libs/aiohttp issue 1925), and a transport still open when the
    event loop ends is leaked (a ResourceWarning)."""
    interval = 0.005
    for _ in range(int(1.0 / interval)):
        if all(sock is None or sock.fileno() == -1 for sock in sockets):
            return
        await asyncio.sleep(interval)


async def aiohttp_server(sock: socket.socket, tls: Tls | None) -> Report:
    done: asyncio.Future[Report] = asyncio.get_running_loop().create_future()

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.WebSocketResponse:
        ws = aiohttp.web.WebSocketResponse(protocols=[SERVER_SUBPROTOCOL], autoping=False)
        ws.headers[RESPONSE_HEADER] = PEER_VALUE
        await ws.prepare(request)
        header = request.headers.get(REQUEST_HEADER)
        sockets.append(request.transport.get_extra_info("socket") if request.transport else None)
        try:
            done.set_result(await peer_script(Aiohttp(ws, ws.ws_protocol, header, request.path_qs)))
        except Exception as exc:
            done.set_exception(exc)
        return ws

    sockets: list[Any] = []
    app = aiohttp.web.Application()
    app.router.add_get("/interop", handler)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await aiohttp.web.SockSite(runner, sock, ssl_context=server_context(tls)).start()
        return await done
    finally:
        await runner.cleanup()
        await aiohttp_closed(sockets)


async def websockets_asyncio_client(url: str, tls: Tls | None) -> Report:
    async with websockets.asyncio.client.connect(
        url,
        ssl=None if tls is None else tls.client_context(),
        subprotocols=[websockets.Subprotocol(name) for name in OFFERED_SUBPROTOCOLS],
        additional_headers={REQUEST_HEADER: PEER_VALUE},
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as ws:
        assert ws.response is not None
        header = ws.response.headers.get(RESPONSE_HEADER)
        return await peer_script(WebsocketsAsyncio(ws, header))


async def websockets_trio_client(url: str, tls: Tls | None) -> Report:
    async with websockets.trio.client.connect(
        url,
        ssl=None if tls is None else tls.client_context(),
        subprotocols=[websockets.Subprotocol(name) for name in OFFERED_SUBPROTOCOLS],
        additional_headers={REQUEST_HEADER: PEER_VALUE},
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as ws:
        assert ws.response is not None
        header = ws.response.headers.get(RESPONSE_HEADER)
        return await peer_script(WebsocketsTrio(ws, header))


async def aiohttp_client(url: str, tls: Tls | None) -> Report:
    # The response headers of a WebSocket handshake are public only through
    # a trace hook.
    response_headers: list[Any] = []

    async def on_request_end(session: Any, context: Any, params: Any) -> None:
        response_headers.append(params.response.headers)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    sockets: list[Any] = []
    try:
        async with (
            aiohttp.ClientSession(trace_configs=[trace]) as session,
            session.ws_connect(
                url,
                protocols=OFFERED_SUBPROTOCOLS,
                headers={REQUEST_HEADER: PEER_VALUE},
                autoping=False,
                ssl=True if tls is None else tls.client_context(),
                timeout=aiohttp.ClientWSTimeout(ws_close=STEP_TIMEOUT),
            ) as ws,
        ):
            sockets.append(ws.get_extra_info("socket"))
            header = response_headers[-1].get(RESPONSE_HEADER) if response_headers else None
            return await peer_script(Aiohttp(ws, ws.protocol, header))
    finally:
        await aiohttp_closed(sockets)


async def websocket_client_client(url: str, tls: Tls | None) -> Report:
    ws = websocket.create_connection(
        url,
        timeout=STEP_TIMEOUT,
        subprotocols=OFFERED_SUBPROTOCOLS,
        header=[f"{REQUEST_HEADER}: {PEER_VALUE}"],
        sslopt=None if tls is None else {"ca_certs": tls.ca_path},
    )
    try:
        return await peer_script(WebsocketClient(ws))
    finally:
        ws.shutdown()  # type: ignore[no-untyped-call]


async def run_in_asyncio_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` in a worker thread, in a new asyncio event loop, for at
    most PEER_TIMEOUT. If this is cancelled, the coroutine is cancelled too
    and the thread joined before returning (within STEP_TIMEOUT)."""
    lock = threading.Lock()
    state: dict[str, Any] = {}
    finished = threading.Event()

    async def main() -> T:
        with lock:
            if state.get("cancelled"):
                raise asyncio.CancelledError
            state["loop"] = asyncio.get_running_loop()
            state["task"] = asyncio.current_task()
        return await asyncio.wait_for(make(), PEER_TIMEOUT)

    def thread() -> T:
        try:
            return asyncio.run(main())
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(thread, abandon_on_cancel=True)
    finally:
        with lock:
            state["cancelled"] = True
        if not finished.is_set():
            if "loop" in state:
                with contextlib.suppress(RuntimeError):  # the loop just closed
                    state["loop"].call_soon_threadsafe(state["task"].cancel)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(finished.wait, STEP_TIMEOUT)


def in_asyncio_thread(
    peer: Callable[[T, Tls | None], Awaitable[Report]],
) -> Callable[[T, Tls | None], Awaitable[Report]]:
    async def run(where: T, tls: Tls | None) -> Report:
        return await run_in_asyncio_thread(lambda: peer(where, tls))

    return run


PeerServer = Callable[[socket.socket, "Tls | None"], Awaitable[Report]]
PeerClient = Callable[[str, "Tls | None"], Awaitable[Report]]

PEER_SERVERS: dict[str, PeerServer] = {
    "websockets-asyncio": in_asyncio_thread(websockets_asyncio_server),
    "websockets-trio": websockets_trio_server,
    "aiohttp": in_asyncio_thread(aiohttp_server),
}
PEER_CLIENTS: dict[str, PeerClient] = {
    "websockets-asyncio": in_asyncio_thread(websockets_asyncio_client),
    "websockets-trio": websockets_trio_client,
    "aiohttp": in_asyncio_thread(aiohttp_client),
    "websocket-client": in_asyncio_thread(websocket_client_client),
}


def peer_names(peers: dict[str, Any]) -> list[Any]:
    """The peers as test parameters (websockets-trio skipped on 3.10)."""
    needs_trio_api = pytest.mark.skipif(sys.version_info < (3, 11), reason=NO_TRIO_API)
    return [
        pytest.param(name, marks=[needs_trio_api] if name == "websockets-trio" else [])
        for name in peers
    ]


#: (scheme, who closes): both closes in the clear, one full run over TLS.
CASES = [
    pytest.param("ws", "us", id="ws-we-close"),
    pytest.param("ws", "peer", id="ws-peer-closes"),
    pytest.param("wss", "us", id="wss-we-close"),
]


# ----------------------------------------------------------------------
# Our half of the conversation, and the checks of the peer's report


def header_value(headers: list[tuple[bytes, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key.lower() == name.lower().encode():
            return value
    return None


async def converse(ws: WebSocketConnection, closer: str) -> None:
    for message in MESSAGES:
        await ws.send_message(message)
        assert describe(await ws.get_message()) == describe(message)
    await ws.ping(OUR_PING)  # returns once the matching pong is in
    await ws.send_message("cmd:ping")
    assert await ws.get_message() == "ping answered"
    if closer == "us":
        await ws.aclose(OUR_CLOSE.code, OUR_CLOSE.reason)
        assert ws.closed == OUR_CLOSE
    else:
        await ws.send_message("cmd:close")
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason == PEER_CLOSE
        assert ws.closed == PEER_CLOSE


def check_report(report: Report, closer: str) -> None:
    assert report.subprotocol == SERVER_SUBPROTOCOL
    assert report.header == OUR_VALUE
    assert report.received == [describe(message) for message in MESSAGES]
    assert report.ping_answered is True
    if closer == "us":
        assert report.close_received == (OUR_CLOSE.code, OUR_CLOSE.reason)
    else:
        # Our close frame came back: the peer's closing handshake completed.
        assert report.close_answer not in (None, 1005, 1006)


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    ca_path = Path(tmp_path_factory.mktemp("interop")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return Tls(ca, str(ca_path))


# ----------------------------------------------------------------------
# The tests


@pytest.mark.parametrize(("scheme", "closer"), CASES)
@pytest.mark.parametrize("peer", peer_names(PEER_SERVERS))
async def test_our_client_with_peer_server(
    peer: str, scheme: str, closer: str, tls_material: Tls
) -> None:
    tls = tls_material if scheme == "wss" else None
    reports: list[Report] = []

    async def serve(sock: socket.socket) -> None:
        reports.append(await PEER_SERVERS[peer](sock, tls))

    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, sock)
                async with open_websocket_url(
                    f"{scheme}://127.0.0.1:{port}/interop?peer={peer}",
                    ssl_context=None if tls is None else tls.client_context(),
                    subprotocols=OFFERED_SUBPROTOCOLS,
                    extra_headers=[(REQUEST_HEADER.encode(), OUR_VALUE.encode())],
                    connect_timeout=STEP_TIMEOUT,
                    disconnect_timeout=STEP_TIMEOUT,
                ) as ws:
                    assert ws.subprotocol == SERVER_SUBPROTOCOL
                    response_header = header_value(ws.handshake_headers, RESPONSE_HEADER)
                    assert response_header == PEER_VALUE.encode()
                    await converse(ws, closer)
    finally:
        sock.close()
    check_report(reports[0], closer)
    assert reports[0].path == f"/interop?peer={peer}"


@pytest.mark.parametrize(("scheme", "closer"), CASES)
@pytest.mark.parametrize("peer", peer_names(PEER_CLIENTS))
async def test_peer_client_with_our_server(
    peer: str, scheme: str, closer: str, tls_material: Tls
) -> None:
    tls = tls_material if scheme == "wss" else None
    handled = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        assert request.path == f"/interop?peer={peer}"
        assert request.proposed_subprotocols == tuple(OFFERED_SUBPROTOCOLS)
        assert header_value(request.headers, REQUEST_HEADER) == PEER_VALUE.encode()
        ws = await request.accept(
            subprotocol=SERVER_SUBPROTOCOL,
            extra_headers=[(RESPONSE_HEADER.encode(), OUR_VALUE.encode())],
        )
        await converse(ws, closer)
        handled.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, disconnect_timeout=STEP_TIMEOUT),
                handler,
                "127.0.0.1",
                0,
                None if tls is None else tls.server_context(),
            )
            url = f"{scheme}://127.0.0.1:{server.port}/interop?peer={peer}"
            report = await PEER_CLIENTS[peer](url, tls)
            await handled.wait()
            nursery.cancel_scope.cancel()
    check_report(report, closer)


# ----------------------------------------------------------------------
# permessage-deflate (issue 6): the peer and we agree on compression, and
# messages really travel compressed both ways (our counters say so).

#: Compressible messages, above our default threshold.
DEFLATE_MESSAGES: list[str | bytes] = ["compress me, " * 200, b"\x00\x01\x02\x03" * 2000]


def deflate_report(extensions: list[Any]) -> str | None:
    """The name of the compression extension a websockets peer agreed on."""
    return ", ".join(extension.name for extension in extensions) or None


async def websockets_asyncio_deflate_server(sock: socket.socket) -> str | None:
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: websockets.asyncio.server.ServerConnection) -> None:
        for _ in DEFLATE_MESSAGES:
            await ws.send(await ws.recv())
        done.set_result(deflate_report(ws.protocol.extensions))
        await ws.wait_closed()

    async with websockets.asyncio.server.serve(handler, sock=sock, compression="deflate"):
        return await done


async def websockets_trio_deflate_server(sock: socket.socket) -> str | None:
    result: list[str | None] = []
    done = trio.Event()

    async def handler(ws: websockets.trio.server.ServerConnection) -> None:
        for _ in DEFLATE_MESSAGES:
            await ws.send(await ws.recv())
        result.append(deflate_report(ws.protocol.extensions))
        done.set()

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                websockets.trio.server.serve, handler, listeners=[listener], compression="deflate"
            )
        )
        await done.wait()
        await server.aclose()
    return result[0]


async def aiohttp_deflate_server(sock: socket.socket) -> str | None:
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.WebSocketResponse:
        ws = aiohttp.web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        for _ in DEFLATE_MESSAGES:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            else:
                await ws.send_bytes(message.data)
        agreed = "permessage-deflate" if ws.compress else None
        await ws.receive()  # our close
        done.set_result(agreed)
        return ws

    app = aiohttp.web.Application()
    app.router.add_get("/", handler)
    runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = aiohttp.web.SockSite(runner, sock)
    await site.start()
    try:
        return await done
    finally:
        await runner.cleanup()


async def websockets_asyncio_deflate_client(url: str) -> str | None:
    async with websockets.asyncio.client.connect(url, compression="deflate") as ws:
        for message in DEFLATE_MESSAGES:
            await ws.send(message)
            assert await ws.recv() == message
        return deflate_report(ws.protocol.extensions)


async def websockets_trio_deflate_client(url: str) -> str | None:
    async with websockets.trio.client.connect(url, compression="deflate") as ws:
        for message in DEFLATE_MESSAGES:
            await ws.send(message)
            assert await ws.recv() == message
        return deflate_report(ws.protocol.extensions)


async def aiohttp_deflate_client(url: str) -> str | None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=15) as ws:
        for message in DEFLATE_MESSAGES:
            if isinstance(message, str):
                await ws.send_str(message)
                assert (await ws.receive()).data == message
            else:
                await ws.send_bytes(message)
                assert (await ws.receive()).data == message
        return "permessage-deflate" if ws.compress else None


async def _in_thread(peer: Callable[[T], Awaitable[str | None]], where: T) -> str | None:
    return await run_in_asyncio_thread(lambda: peer(where))


DEFLATE_SERVERS: dict[str, Callable[[socket.socket], Awaitable[str | None]]] = {
    "websockets-asyncio": partial(_in_thread, websockets_asyncio_deflate_server),
    "websockets-trio": websockets_trio_deflate_server,
    "aiohttp": partial(_in_thread, aiohttp_deflate_server),
}
DEFLATE_CLIENTS: dict[str, Callable[[str], Awaitable[str | None]]] = {
    "websockets-asyncio": partial(_in_thread, websockets_asyncio_deflate_client),
    "websockets-trio": websockets_trio_deflate_client,
    "aiohttp": partial(_in_thread, aiohttp_deflate_client),
}


def check_compressed_both_ways(ws: WebSocketConnection) -> None:
    assert ws.compression is not None
    deflate = ws._deflate
    assert deflate is not None
    # Every message's payload went through the compressor, both ways.
    total = sum(len(m.encode() if isinstance(m, str) else m) for m in DEFLATE_MESSAGES)
    assert deflate.bytes_sent_uncompressed == total
    assert deflate.bytes_received_uncompressed == total
    assert deflate.bytes_received_compressed < deflate.bytes_received_uncompressed // 10


@pytest.mark.parametrize("peer", peer_names(DEFLATE_SERVERS))
async def test_our_client_negotiates_deflate_with_peer_server(peer: str) -> None:
    reports: list[str | None] = []

    async def serve(sock: socket.socket) -> None:
        reports.append(await DEFLATE_SERVERS[peer](sock))

    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve, sock)
                async with open_websocket_url(
                    f"ws://127.0.0.1:{port}/", compression="deflate"
                ) as ws:
                    for message in DEFLATE_MESSAGES:
                        await ws.send_message(message)
                        assert await ws.get_message() == message
                    check_compressed_both_ways(ws)
    finally:
        sock.close()
    assert reports == ["permessage-deflate"]


@pytest.mark.parametrize("peer", peer_names(DEFLATE_CLIENTS))
async def test_peer_client_negotiates_deflate_with_our_server(peer: str) -> None:
    connections: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        connections.append(ws)
        for _ in DEFLATE_MESSAGES:
            await ws.send_message(await ws.get_message())
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, handler, "127.0.0.1", 0, None, compression="deflate")
            )
            report = await DEFLATE_CLIENTS[peer](f"ws://127.0.0.1:{server.port}/")
            nursery.cancel_scope.cancel()
    assert report == "permessage-deflate"
    check_compressed_both_ways(connections[0])
