"""The client against hostile or mistaken servers.

- Every broken answer to the opening handshake (bytes that are not ASCII
  where wsproto decodes, bad HTTP, a wrong ``Sec-WebSocket-Accept``, an
  extension or subprotocol that was not offered, a huge head...) raises
  :exc:`HandshakeError` with phase ``"http"`` and the cause chained, never
  a raw ``UnicodeDecodeError`` or protocol error; and
  :class:`ReconnectingWebSocket` retries it instead of dying.
- Arguments a request cannot carry raise ``ValueError`` before anything is
  sent.
- Speaking the wrong protocol is named: ``wss://`` to a plain server fails
  at once saying the server does not seem to speak TLS; ``ws://`` to a TLS
  server says to use ``wss://``.
- Redirects: no extra header the user passed reaches another origin, and
  credentials in a ``Location`` never appear in a message.

The servers are written by hand on loopback TCP (127.0.0.1, port 0), so
they can send exactly the bytes under test; every test has a time bound.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from trio_websocket import (
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    ReconnectingWebSocket,
    WebSocketConnection,
    WebSocketRequest,
    default_retry_policy,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)
from trio_websocket._client.redirects import headers_for_redirect, redirect_target
from trio_websocket._core.url import parse_ws_url

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_token(request_head: bytes) -> bytes:
    """The right ``Sec-WebSocket-Accept`` for a request head."""
    for line in request_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + _GUID).digest())
    raise AssertionError(f"no Sec-WebSocket-Key in {request_head!r}")


def switching(token: bytes, *extra: bytes, connection: bytes = b"Upgrade") -> bytes:
    """A 101 answer with ``token`` as its accept value and ``extra`` lines."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: " + connection,
        b"Sec-WebSocket-Accept: " + token,
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


Answer = Callable[[bytes], bytes]


class ScriptedServer:
    """A loopback TCP server that reads each request head and answers it
    with ``answer(accept_token)``, then closes once the client sends
    anything more (its close frame) or closes. Counts connections, and
    the bytes of those closed before a whole request head arrived."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.unfinished: list[bytes] = []
        self.unfinished_seen = trio.Event()
        self.port = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await stream.receive_some()
                if not chunk:
                    self.unfinished.append(head)
                    self.unfinished_seen.set()
                    return
                head += chunk
            await stream.send_all(self.answer(accept_token(head)))
            with trio.move_on_after(5):
                await stream.receive_some()
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def start(self, nursery: trio.Nursery) -> int:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.port = int(listeners[0].socket.getsockname()[1])
        return self.port


async def start_tcp(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------------
# Broken answers to the opening handshake

BROKEN_ANSWERS: list[tuple[str, Answer, dict[str, object], str]] = [
    (
        "non-ASCII subprotocol",
        lambda token: switching(token, b"Sec-WebSocket-Protocol: ch\xe9"),
        {"subprotocols": ["chat"]},
        r"must be ASCII.*b'ch\\xe9'",
    ),
    (
        "non-ASCII extension",
        lambda token: switching(token, b"Sec-WebSocket-Extensions: d\xe9flate"),
        {"compression": "deflate"},
        "must be ASCII",
    ),
    (
        "non-ASCII permessage-deflate parameter",
        lambda token: switching(token, b"Sec-WebSocket-Extensions: permessage-deflate; x=\xff"),
        {"compression": "deflate"},
        "must be ASCII",
    ),
    (
        "non-ASCII Connection",
        lambda token: switching(token, connection=b"Upgr\xe4de"),
        {},
        "must be ASCII",
    ),
    ("wrong accept token", lambda token: switching(b"dGhlIHNhbXBsZSBub25jZQ=="), {}, "accept"),
    (
        "extension not offered",
        lambda token: switching(token, b"Sec-WebSocket-Extensions: permessage-deflate"),
        {},
        "unrecognized extension",
    ),
    (
        "bad permessage-deflate parameters",
        lambda token: switching(
            token, b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99"
        ),
        {"compression": "deflate"},
        "permessage-deflate",
    ),
    (
        "subprotocol not offered",
        lambda token: switching(token, b"Sec-WebSocket-Protocol: superchat"),
        {"subprotocols": ["chat"]},
        "unrecognized subprotocol superchat",
    ),
    (
        "subprotocol offered none",
        lambda token: switching(token, b"Sec-WebSocket-Protocol: chat"),
        {},
        "unrecognized subprotocol",
    ),
    (
        "no Upgrade header",
        lambda token: switching(token).replace(b"Upgrade: websocket\r\n", b""),
        {},
        "Upgrade",
    ),
    (
        "invalid status line",
        lambda token: b"HTTP/1.1 ABC Nope\r\n\r\n",
        {},
        "not valid HTTP: illegal status",
    ),
    ("not HTTP at all", lambda token: b"\x00\xff\xfe garbage\r\n\r\n", {}, "not valid HTTP"),
    (
        "huge header",
        lambda token: b"HTTP/1.1 101 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
        {},
        "response head is too long",
    ),
    (
        "rejection with a bad Content-Length",
        lambda token: b"HTTP/1.1 403 No\r\nContent-Length: twelve\r\n\r\n",
        {},
        "not valid HTTP: bad Content-Length",
    ),
    (
        "rejection with a bad chunk",
        lambda token: b"HTTP/1.1 403 No\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        {},
        "not valid HTTP: illegal chunk header",
    ),
]


@pytest.mark.parametrize(
    ("answer", "options", "message"),
    [case[1:] for case in BROKEN_ANSWERS],
    ids=[case[0] for case in BROKEN_ANSWERS],
)
async def test_broken_answer_is_a_handshake_error(
    nursery: trio.Nursery, answer: Answer, options: dict[str, object], message: str
) -> None:
    server = ScriptedServer(answer)
    await server.start(nursery)
    with trio.fail_after(5), pytest.raises(HandshakeError, match=message) as info:
        async with open_websocket(
            "127.0.0.1",
            server.port,
            "/",
            use_ssl=False,
            **options,  # type: ignore[arg-type]
        ):
            pytest.fail("opened a connection on a broken answer")
    assert type(info.value) is HandshakeError  # not a rejection, not a timeout
    assert info.value.phase == "http"
    assert info.value.__cause__ is not None
    assert "invalid handshake response" in str(info.value)
    assert len(str(info.value)) < 400  # a huge header is not quoted whole
    assert default_retry_policy(info.value)  # ReconnectingWebSocket tries again


async def test_broken_answer_over_a_stream_you_own_closes_it(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def answer() -> None:
        head = await server_stream.receive_some()
        await server_stream.send_all(
            switching(accept_token(head), b"Sec-WebSocket-Protocol: \xff\xfe")
        )

    nursery.start_soon(answer)
    with trio.fail_after(5), pytest.raises(HandshakeError, match="must be ASCII") as info:
        await wrap_client_stream(nursery, client_stream, "example.com", "/", subprotocols=["a"])
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    with trio.fail_after(5):
        assert await server_stream.receive_some() == b""  # the client closed its end


async def test_non_ascii_in_an_ordinary_header_is_kept_as_bytes(nursery: trio.Nursery) -> None:
    server = ScriptedServer(lambda token: switching(token, b"X-Name: caf\xe9"))
    await server.start(nursery)
    with trio.fail_after(5):
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
            assert (b"x-name", b"caf\xe9") in ws.handshake_headers


async def test_reconnecting_client_retries_a_broken_answer_instead_of_dying(
    nursery: trio.Nursery,
) -> None:
    server = ScriptedServer(lambda token: switching(token, b"Sec-WebSocket-Protocol: ch\xe9"))
    await server.start(nursery)

    async def handler(ws: WebSocketConnection) -> None:
        pytest.fail("no connection can open")

    client = ReconnectingWebSocket(
        f"ws://127.0.0.1:{server.port}/",
        handler,
        subprotocols=["chat"],
        initial_delay=0,
        max_attempts=3,
        connect_timeout=5,
    )
    with trio.fail_after(10), pytest.raises(HandshakeError, match="must be ASCII"):
        await client.run()
    assert client.attempts == 3  # retried, as an answer that is not a handshake
    assert server.connections == 3


# ---------------------------------------------------------------------------
# Arguments a request cannot carry


@pytest.mark.parametrize(
    "options",
    [
        {"extra_headers": [(b"X-Injected", b"a\r\nEvil: 1")]},
        {"extra_headers": [(b"Bad Name", b"1")]},
        {"extra_headers": [(b"X-Padded", b" value")]},
        {"resource": "/a path with spaces"},
        {"resource": "/caf\u00e9"},
        {"subprotocols": ["caf\u00e9"]},
    ],
    ids=[
        "CRLF in a value",
        "space in a name",
        "leading space",
        "space in the resource",
        "non-ASCII resource",
        "non-ASCII subprotocol",
    ],
)
async def test_request_that_cannot_be_sent_is_a_value_error_before_sending(
    nursery: trio.Nursery, options: dict[str, object]
) -> None:
    server = ScriptedServer(switching)
    await server.start(nursery)
    arguments: dict[str, object] = {"resource": "/", **options}
    resource = arguments.pop("resource")
    with trio.fail_after(5), pytest.raises(ValueError, match="cannot build the opening"):
        async with open_websocket(
            "127.0.0.1",
            server.port,
            resource,
            use_ssl=False,
            **arguments,  # type: ignore[arg-type]
        ):
            pytest.fail("sent an invalid request")
    with trio.fail_after(5):
        await server.unfinished_seen.wait()
    assert server.unfinished == [b""]  # connected, sent nothing, closed


# ---------------------------------------------------------------------------
# TLS on one side only


async def answer_400_at_once(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.aclose()


async def close_after_reading(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await stream.aclose()


async def close_without_reading(stream: trio.SocketStream) -> None:
    await stream.aclose()


@pytest.mark.parametrize(
    "plain_server",
    [answer_400_at_once, close_after_reading, close_without_reading],
    ids=["answers 400", "closes after reading", "closes at once"],
)
async def test_wss_to_a_plain_server_says_it_does_not_speak_tls(
    nursery: trio.Nursery,
    client_context: ssl.SSLContext,
    plain_server: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    port = await start_tcp(nursery, plain_server)
    with trio.fail_after(5), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"wss://127.0.0.1:{port}/", client_context):
            pytest.fail("TLS with a plain server")
    assert info.value.phase == "tls"
    assert "does not seem to speak TLS" in str(info.value)
    assert "ws://" in str(info.value)


async def test_wss_to_a_server_that_resets_may_not_speak_tls(
    nursery: trio.Nursery, client_context: ssl.SSLContext
) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    port = await start_tcp(nursery, reset)
    with trio.fail_after(5), pytest.raises(HandshakeError, match="may not speak TLS") as info:
        async with open_websocket_url(f"wss://127.0.0.1:{port}/", client_context):
            pytest.fail("TLS with a server that reset")
    assert info.value.phase == "tls"


async def test_wss_to_our_own_plain_server_fails_quickly(
    nursery: trio.Nursery, client_context: ssl.SSLContext
) -> None:
    async def accept(request: WebSocketRequest) -> None:
        await request.accept()

    server = await nursery.start(serve_websocket, accept, "127.0.0.1", 0, None)
    with trio.fail_after(3), pytest.raises(HandshakeError, match="speak TLS"):
        async with open_websocket_url(f"wss://127.0.0.1:{server.port}/", client_context):
            pytest.fail("TLS with a plain server")


async def test_tls_timeout_names_a_server_that_does_not_speak_tls(
    nursery: trio.Nursery, client_context: ssl.SSLContext
) -> None:
    async def wait_for_a_blank_line(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            while await stream.receive_some():
                pass

    port = await start_tcp(nursery, wait_for_a_blank_line)
    with trio.fail_after(5), pytest.raises(ConnectionTimeout) as info:
        async with open_websocket_url(
            f"wss://127.0.0.1:{port}/", client_context, connect_timeout=0.3
        ):
            pytest.fail("no TLS answer, no connection")
    assert info.value.phase == "tls"
    assert "does not speak TLS" in str(info.value)


async def test_ws_to_our_tls_server_says_use_wss(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    async def accept(request: WebSocketRequest) -> None:
        await request.accept()

    server = await nursery.start(serve_websocket, accept, "127.0.0.1", 0, server_context)
    with trio.fail_after(5), pytest.raises(HandshakeError, match="wss://") as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            pytest.fail("plain HTTP with a TLS server")
    assert info.value.phase == "http"
    assert "before any answer" in str(info.value)


async def test_ws_answered_with_a_tls_record_says_use_wss(nursery: trio.Nursery) -> None:
    # What a TLS server that answers bad input with an alert sends:
    # alert record, TLS 1.2, fatal "unexpected message".
    server = ScriptedServer(lambda token: b"\x15\x03\x03\x00\x02\x02\x0a")
    await server.start(nursery)
    with trio.fail_after(5), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            pytest.fail("plain HTTP with a TLS server")
    assert info.value.phase == "http"
    assert "TLS record" in str(info.value)
    assert "use a wss:// URL" in str(info.value)


# ---------------------------------------------------------------------------
# Redirects: what reaches another origin


class RecordingServer:
    """A ``serve_websocket`` server that records each request's headers,
    then redirects to ``location`` (when given) or accepts."""

    def __init__(self, location: bytes | None = None) -> None:
        self.location = location
        self.headers: list[dict[bytes, bytes]] = []
        self.port = 0

    async def handle(self, request: WebSocketRequest) -> None:
        self.headers.append({name.lower(): value for name, value in request.headers})
        if self.location is not None:
            await request.reject(302, extra_headers=[(b"Location", self.location)])
            return
        ws = await request.accept()
        await ws.aclose()

    async def start(self, nursery: trio.Nursery) -> None:
        server = await nursery.start(serve_websocket, self.handle, "127.0.0.1", 0, None)
        self.port = server.port


SECRETS = [
    (b"Authorization", b"Bearer token"),
    (b"Cookie", b"session=s3cr3t"),
    (b"Proxy-Authorization", b"Basic cHJveHk6cHc="),
    (b"X-Api-Key", b"k3y"),
]


async def test_no_extra_header_reaches_another_origin(nursery: trio.Nursery) -> None:
    elsewhere = RecordingServer()
    await elsewhere.start(nursery)
    # Same host, another port: another origin.
    mover = RecordingServer(f"ws://127.0.0.1:{elsewhere.port}/next".encode())
    await mover.start(nursery)
    with trio.fail_after(5):
        async with open_websocket(
            "127.0.0.1", mover.port, "/", use_ssl=False, extra_headers=SECRETS, max_redirects=1
        ):
            pass
    (first,) = mover.headers
    assert all(first[name.lower()] == value for name, value in SECRETS)
    (second,) = elsewhere.headers
    leaked = [name for name, _ in SECRETS if name.lower() in second]
    assert leaked == []


async def test_every_extra_header_stays_on_a_same_origin_redirect(nursery: trio.Nursery) -> None:
    seen: list[tuple[str, dict[bytes, bytes]]] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.append((request.path, {name.lower(): value for name, value in request.headers}))
        if request.path == "/old":
            await request.reject(301, extra_headers=[(b"Location", b"/new")])
        else:
            await (await request.accept()).aclose()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(5):
        async with open_websocket(
            "127.0.0.1", server.port, "/old", use_ssl=False, extra_headers=SECRETS, max_redirects=1
        ):
            pass
    assert [path for path, _ in seen] == ["/old", "/new"]
    assert all(seen[1][1][name.lower()] == value for name, value in SECRETS)


async def test_headers_dropped_once_are_not_restored_by_a_hop_back(nursery: trio.Nursery) -> None:
    home = RecordingServer()
    await home.start(nursery)
    bounce = RecordingServer()
    await bounce.start(nursery)
    home.location = f"ws://127.0.0.1:{bounce.port}/b".encode()
    bounce.location = f"ws://127.0.0.1:{home.port}/back".encode()
    with trio.fail_after(5), pytest.raises(HandshakeError, match="too many redirects"):
        async with open_websocket(
            "127.0.0.1", home.port, "/", use_ssl=False, extra_headers=SECRETS, max_redirects=2
        ):
            pass
    assert b"cookie" in home.headers[0]
    assert [b"cookie" in headers for headers in bounce.headers + home.headers[1:]] == [False, False]


async def test_location_credentials_reach_only_their_own_origin(nursery: trio.Nursery) -> None:
    final = RecordingServer()
    await final.start(nursery)
    middle = RecordingServer(f"ws://127.0.0.1:{final.port}/end".encode())
    await middle.start(nursery)
    first = RecordingServer(f"ws://bob:pw@127.0.0.1:{middle.port}/mid".encode())
    await first.start(nursery)
    with trio.fail_after(5):
        async with open_websocket_url(f"ws://127.0.0.1:{first.port}/", max_redirects=2):
            pass
    assert middle.headers[0][b"authorization"] == b"Basic " + base64.b64encode(b"bob:pw")
    assert b"authorization" not in final.headers[0]


@pytest.mark.parametrize(
    "location",
    [
        b"wss://example.com/",
        b"https://example.com/",
        b"//other.example/x",
        b"ws://example.com:8080/",
    ],
    ids=["ws to wss", "http(s) to https", "scheme-relative", "another port"],
)
def test_another_origin_gets_no_extra_header(location: bytes) -> None:
    current = parse_ws_url("ws://example.com/")
    target = redirect_target(current, [(b"Location", location)])
    assert headers_for_redirect(SECRETS, current, target) == []


def test_same_origin_keeps_every_extra_header_in_order() -> None:
    current = parse_ws_url("ws://Example.com:80/a")
    target = redirect_target(current, [(b"Location", b"http://example.COM/b?c=d")])
    assert headers_for_redirect(SECRETS, current, target) == SECRETS


def test_wss_to_ws_is_refused_naming_both_urls() -> None:
    current = parse_ws_url("wss://example.com/a")
    with pytest.raises(ValueError, match=r"wss://example\.com/a to ws://example\.com/b.*drop TLS"):
        redirect_target(current, [(b"Location", b"ws://example.com/b")])


@pytest.mark.parametrize(
    "location",
    [
        b"ftp://bob:hunter2@127.0.0.1/file",
        b"ws://bob:hunter2@127.0.0.1:99999/",
        b"ws://bob:hunter2@\xff/",
    ],
    ids=["another scheme", "bad port", "not ASCII"],
)
async def test_location_credentials_never_appear_in_the_error(
    nursery: trio.Nursery, location: bytes
) -> None:
    mover = RecordingServer(location)
    await mover.start(nursery)
    with trio.fail_after(5), pytest.raises(HandshakeError, match="redirect") as info:
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/", max_redirects=1):
            pytest.fail("followed an unusable Location")
    assert "hunter2" not in str(info.value)
    assert "bob" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["ws://bob:hunter2@example.com:port/", "ftp://bob:hunter2@example.com/", "ws://bob:hunter2@/x"],
)
def test_url_credentials_never_appear_in_a_url_error(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ws_url(url)
    assert "hunter2" not in str(info.value)
    assert "***@" in str(info.value)


async def test_rejection_still_carries_the_location_for_the_caller(nursery: trio.Nursery) -> None:
    mover = RecordingServer(b"/elsewhere")
    await mover.start(nursery)
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/"):
            pytest.fail("followed a redirect with max_redirects=0")
    assert (b"location", b"/elsewhere") in [(n.lower(), v) for n, v in info.value.headers]
