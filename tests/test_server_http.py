"""Plain HTTP on the WebSocket port: the ``process_request`` hook, the 426
answer to requests that are not upgrades, and the HTTP value types."""

from __future__ import annotations

import random
import re
import urllib.error
import urllib.request
from functools import partial
from typing import Any

import pytest
import trio
from conftest import echo_handler
from server_fixtures import (
    MemoryListener,
    exchange,
    read_until_eof,
    start_memory_server,
    upgrade_request,
)

from trio_websocket import (
    Endpoint,
    HandshakeError,
    HTTPRequest,
    HTTPResponse,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._server.http import parse_request_head


async def never_called(request: WebSocketRequest) -> None:
    raise AssertionError("the handler must not run")


# ----------------------------------------------------------------------
# Without a hook


async def test_plain_get_gets_426_with_upgrade_header(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    answer = await exchange(await listener.connect(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 426
    assert answer.headers[b"upgrade"] == b"websocket"
    assert answer.headers[b"connection"] == b"close"
    assert answer.headers[b"content-type"].startswith(b"text/plain")
    assert int(answer.headers[b"content-length"]) == len(answer.body) > 0


async def test_head_request_gets_426_without_body(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    answer = await exchange(await listener.connect(), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 426
    assert answer.body == b""
    assert int(answer.headers[b"content-length"]) > 0


async def test_post_with_body_gets_426(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    request = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    answer = await exchange(await listener.connect(), request)
    assert answer.status == 426


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request(version=b"8"), 426),  # a version we do not speak
        (upgrade_request().replace(b"Sec-WebSocket-Key: ", b"X-Key: "), 400),
        (upgrade_request(method=b"POST"), 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (upgrade_request(extra=b"X-A: 1\r\n\tfolded\r\n"), 400),
    ],
    ids=["version-8", "no-key", "post-upgrade", "no-host", "folded", "folded-upgrade"],
)
async def test_broken_upgrades_and_bad_http_get_400_or_426(
    nursery: trio.Nursery, request_bytes: bytes, status: int
) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    answer = await exchange(await listener.connect(), request_bytes)
    assert answer.status == status
    if status == 426:
        assert answer.headers[b"sec-websocket-version"] == b"13"


@pytest.mark.parametrize("host", [b"ex\xd6mple.com", b"xn--a-ecp.example", b"xn--zz"])
async def test_upgrade_with_a_host_that_is_not_valid_idna_gets_400(
    nursery: trio.Nursery, host: bytes
) -> None:
    # wsproto decodes Host as IDNA; its UnicodeError once crashed the server.
    calls: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        calls.append(request.path)
        await echo_handler(request)

    _, listener = await start_memory_server(nursery, handler)
    request = upgrade_request().replace(b"Host: example.com", b"Host: " + host)
    answer = await exchange(await listener.connect(), request)
    assert answer.status == 400
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/after")
    await ws.aclose()
    assert calls == ["/after"]


async def test_wrap_server_stream_raises_handshake_error_for_a_bad_host() -> None:
    client, server = trio.testing.memory_stream_pair()
    request = upgrade_request().replace(b"Host: example.com", b"Host: ex\xd6mple.com")
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            with pytest.raises(HandshakeError):
                await wrap_server_stream(nursery, server)

        nursery.start_soon(serve)
        answer = await exchange(client, request)
    assert answer.status == 400


async def test_wrap_server_stream_answers_plain_http_with_426() -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            with pytest.raises(HandshakeError):
                await wrap_server_stream(nursery, server)

        nursery.start_soon(serve)
        answer = await exchange(client, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 426


# ----------------------------------------------------------------------
# The hook


async def test_hook_sees_every_header_of_an_upgrade_and_lets_it_go_on(
    nursery: trio.Nursery,
) -> None:
    seen: list[HTTPRequest] = []

    def hook(request: HTTPRequest) -> None:
        seen.append(request)

    _, listener = await start_memory_server(nursery, echo_handler, process_request=hook)
    ws = await wrap_client_stream(
        nursery,
        await listener.connect(),
        "example.com",
        "/chat?room=1",
        subprotocols=["chat"],
        extra_headers=[(b"X-Token", b"abc")],
    )
    await ws.send_message("hi")
    assert await ws.get_message() == "hi"
    await ws.aclose()
    [request] = seen
    assert request.method == "GET"
    assert request.path == "/chat?room=1"
    assert request.is_websocket
    # Even the headers wsproto keeps apart are there.
    assert request.header("Host") == "example.com"
    assert request.header("sec-websocket-protocol") == "chat"
    assert request.header("x-token") == "abc"
    assert request.header("missing") is None
    assert all(name == name.lower() for name, _ in request.headers)
    assert isinstance(request.remote, str)  # a memory stream has no address


async def test_async_hook_answers_health_check_and_server_keeps_serving(
    nursery: trio.Nursery,
) -> None:
    async def hook(request: HTTPRequest) -> HTTPResponse | None:
        await trio.lowlevel.checkpoint()
        if request.path == "/health":
            return HTTPResponse(200, [("Content-Type", "application/json")], b'{"ok": true}')
        return None

    _, listener = await start_memory_server(nursery, echo_handler, process_request=hook)
    answer = await exchange(await listener.connect(), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 200
    assert answer.body == b'{"ok": true}'
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.headers[b"content-length"] == b"12"
    assert answer.headers[b"connection"] == b"close"
    # A plain request the hook passes on still gets 426...
    answer = await exchange(await listener.connect(), b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 426
    # ...and WebSocket clients are served.
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await ws.send_message(b"x")
    assert await ws.get_message() == b"x"
    await ws.aclose()


async def test_hook_can_refuse_an_upgrade_with_any_status(nursery: trio.Nursery) -> None:
    def hook(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(302, [(b"location", b"https://example.com/moved")])

    _, listener = await start_memory_server(nursery, never_called, process_request=hook)
    answer = await exchange(await listener.connect(), upgrade_request("/old"))
    assert answer.status == 302
    assert answer.headers[b"location"] == b"https://example.com/moved"
    assert answer.body == b""


async def test_hook_sees_broken_upgrades_too(nursery: trio.Nursery) -> None:
    seen: list[HTTPRequest] = []

    def hook(request: HTTPRequest) -> None:
        seen.append(request)

    _, listener = await start_memory_server(nursery, never_called, process_request=hook)
    answer = await exchange(await listener.connect(), upgrade_request(version=b"8"))
    assert answer.status == 426
    assert seen[0].is_websocket
    assert seen[0].header("sec-websocket-version") == "8"


async def test_hook_answer_to_head_has_no_body(nursery: trio.Nursery) -> None:
    def hook(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, body="hello")

    _, listener = await start_memory_server(nursery, never_called, process_request=hook)
    answer = await exchange(await listener.connect(), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (answer.status, answer.body, answer.headers[b"content-length"]) == (200, b"", b"5")


class HookError(Exception):
    pass


@pytest.mark.parametrize("result", ["raise", "wrong-type"])
async def test_hook_failure_answers_500_and_propagates(result: str) -> None:
    def hook(request: HTTPRequest) -> Any:
        if result == "raise":
            raise HookError("boom")
        return 200

    expected = HookError if result == "raise" else TypeError
    with pytest.RaisesGroup(expected, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(nursery, never_called, process_request=hook)
            answer = await exchange(await listener.connect(), upgrade_request())
            assert answer.status == 500


def test_process_request_must_be_callable() -> None:
    with pytest.raises(TypeError):
        WebSocketServer(echo_handler, [MemoryListener()], process_request=42)  # type: ignore[arg-type]


async def test_hook_over_tcp_answers_a_real_http_client(nursery: trio.Nursery) -> None:
    remotes: list[object] = []

    def hook(request: HTTPRequest) -> HTTPResponse | None:
        remotes.append(request.remote)
        if request.path == "/health":
            return HTTPResponse(200, body="up\n")
        if request.path == "/secret":
            return HTTPResponse(404, body="nothing here\n")
        return None

    server = await nursery.start(
        partial(serve_websocket, echo_handler, "127.0.0.1", 0, None, process_request=hook)
    )
    base = f"http://127.0.0.1:{server.port}"

    def fetch(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    with trio.fail_after(10):
        assert await trio.to_thread.run_sync(fetch, "/health") == (200, b"up\n")
        assert (await trio.to_thread.run_sync(fetch, "/secret"))[0] == 404
        status, body = await trio.to_thread.run_sync(fetch, "/")
    assert status == 426
    assert b"WebSocket" in body
    assert len(remotes) == 3
    assert all(isinstance(r, Endpoint) and r.address == "127.0.0.1" for r in remotes)


# ----------------------------------------------------------------------
# The values


def test_response_serializes_status_line_headers_length_and_close() -> None:
    response = HTTPResponse(404, [("X-A", "1"), (b"x-b", b"2")], b"gone")
    assert response.serialize() == (
        b"HTTP/1.1 404 Not Found\r\nx-a: 1\r\nx-b: 2\r\n"
        b"content-length: 4\r\nconnection: close\r\n\r\ngone"
    )
    assert response.headers == ((b"x-a", b"1"), (b"x-b", b"2"))


def test_response_with_text_body_is_utf8_text_plain() -> None:
    response = HTTPResponse(200, body="héllo")
    assert response.body == "héllo".encode()
    assert (b"content-type", b"text/plain; charset=utf-8") in response.headers
    typed = HTTPResponse(200, [("content-type", "text/html")], "<p>")
    assert [v for n, v in typed.headers if n == b"content-type"] == [b"text/html"]


def test_response_with_unknown_status_has_no_reason_phrase() -> None:
    assert HTTPResponse(599).serialize().startswith(b"HTTP/1.1 599\r\n")


def test_response_204_has_no_length_and_refuses_a_body() -> None:
    assert b"content-length" not in HTTPResponse(204).serialize()
    with pytest.raises(ValueError):
        HTTPResponse(204, body=b"x")


@pytest.mark.parametrize("status", [101, 199, 1000, -1])
def test_response_status_out_of_range_raises_value_error(status: int) -> None:
    with pytest.raises(ValueError):
        HTTPResponse(status)


@pytest.mark.parametrize("status", [True, "200", 200.0])
def test_response_status_of_wrong_type_raises_type_error(status: Any) -> None:
    with pytest.raises(TypeError):
        HTTPResponse(status)


@pytest.mark.parametrize(
    "headers",
    [
        [("x-a", "1\r\nset-cookie: evil=1")],
        [("x-a\n", "1")],
        [("x a", "1")],
        [("", "1")],
        [("x:a", "1")],
        [("content-length", "5")],
        [("Transfer-Encoding", "chunked")],
        [("connection", "keep-alive")],
        [("x-a", "snowman \u2603")],
    ],
)
def test_response_refuses_bad_or_server_owned_headers(headers: Any) -> None:
    with pytest.raises(ValueError):
        HTTPResponse(200, headers)


@pytest.mark.parametrize("headers", [[("x", 1)], [("x",)], ["x: 1"]])
def test_response_refuses_headers_of_wrong_type(headers: Any) -> None:
    with pytest.raises(TypeError):
        HTTPResponse(200, headers)


def test_response_refuses_body_of_wrong_type() -> None:
    with pytest.raises(TypeError):
        HTTPResponse(200, body=42)  # type: ignore[arg-type]


def test_request_header_lookup_and_is_websocket() -> None:
    request = HTTPRequest("GET", "/", [(b"upgrade", b" WebSocket ")], "r", "l")
    assert request.is_websocket
    assert request.header("UPGRADE") == " WebSocket "
    assert not HTTPRequest("GET", "/", [], "r", "l").is_websocket


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-Y:  v w \t\r\nE:\r\n\r\n",
            ("GET", "/a?b", [(b"host", b"h"), (b"x-y", b"v w"), (b"e", b"")]),
        ),
        (b"GET / HTTP/1.0\r\n\r\n", ("GET", "/", [])),
        (b"GET / HTTP/1.1\r\n\r\n", None),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", None),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", None),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        (b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
    ],
)
def test_parse_request_head(head: bytes, expected: object) -> None:
    assert parse_request_head(head) == expected


#: The header-line grammar of RFC 9110 section 5 (field-name ":" OWS
#: field-value OWS), written as the plain regular expression the parser
#: is checked against.
_HEADER_LINE_GRAMMAR = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*"
)


def test_parse_request_head_reads_header_lines_as_the_grammar_says() -> None:
    """Random header lines built from the bytes that matter (token and
    separator bytes, space, tab, controls, DEL, obs-text): the parser takes
    exactly the lines the grammar takes, with the same name and value."""
    rnd = random.Random(6455)
    alphabet = b"aZ09-_!~:; \t\x00\x01\x0b\x7f\x80\xff,=\"()/\\@"
    for _ in range(20000):
        line = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))
        match = _HEADER_LINE_GRAMMAR.fullmatch(line)
        expected = None if match is None else ("GET", "/", [(match[1].lower(), match[2])])
        assert parse_request_head(b"GET / HTTP/1.0\r\n" + line + b"\r\n\r\n") == expected, line


async def test_random_and_mutated_requests_get_a_proper_answer_and_never_stop_the_server(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    import random

    rng = random.Random(6455)
    valid = upgrade_request()
    handled: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        handled.append(request.path)
        await request.accept()  # and return: closed with 1000

    _, listener = await start_memory_server(
        nursery, handler, connect_timeout=5, process_request=lambda request: None
    )
    statuses: dict[int | None, int] = {}
    for _ in range(300):
        kind = rng.randrange(3)
        if kind == 0:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        else:
            # A valid request with bytes changed or dropped: some still are
            # valid, most parse some way and then break.
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                index = rng.randrange(len(data))
                if kind == 1:
                    data[index] = rng.randrange(256)
                else:
                    del data[index]
            payload = bytes(data)
        stream = await listener.connect()
        await stream.send_all(payload)
        await stream.send_eof()
        answer = await read_until_eof(stream)
        await stream.aclose()
        status = int(answer.split(b" ", 2)[1]) if answer else None  # None: incomplete
        assert status in (101, 400, 414, 426, 431, None), answer
        statuses[status] = statuses.get(status, 0) + 1
    assert {101, 400, 426, None} <= set(statuses)
    assert len(handled) == statuses[101]
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await ws.aclose()


async def test_hook_answers_https_health_checks_on_a_tls_server(nursery: trio.Nursery) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def hook(request: HTTPRequest) -> HTTPResponse | None:
        return HTTPResponse(200, body="secure\n") if request.path == "/health" else None

    server = await nursery.start(
        partial(serve_websocket, echo_handler, "127.0.0.1", 0, server_context, process_request=hook)
    )

    def fetch() -> tuple[int, bytes]:
        url = f"https://127.0.0.1:{server.port}/health"
        with urllib.request.urlopen(url, timeout=5, context=client_context) as reply:
            return reply.status, reply.read()

    with trio.fail_after(10):
        assert await trio.to_thread.run_sync(fetch) == (200, b"secure\n")
