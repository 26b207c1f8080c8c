"""The proxy protocols on the wire, against proxies scripted in the test
(over loopback TCP, or memory streams for what a real socket cannot time):
the exact bytes of ``CONNECT`` and of the SOCKS5 exchange, and every way a
proxy can misbehave: closing before or during its answer, answering in
another protocol, an endless answer head, odd but valid replies, and a
proxy that never answers (the connect timeout still holds and the socket is
closed).
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing
from conftest import accept_by_hand, answer_close_by_hand, read_request_head

from trio_websocket import (
    ConnectionTimeout,
    Endpoint,
    Proxy,
    ProxyAuthenticationError,
    ProxyError,
    ProxyRejected,
    open_websocket,
    open_websocket_url,
)
from trio_websocket._client.proxy import MAX_ANSWER_HEAD, _http_connect, _PrefixedStream
from trio_websocket._core.endpoint import stream_endpoint

Script = Callable[[trio.SocketStream], Awaitable[None]]


async def scripted_proxy(nursery: trio.Nursery, script: Script) -> int:
    """A loopback TCP server that runs ``script`` for each connection (then
    closes it); returns its port."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await script(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"client hung up after {data!r}"
        data += chunk
    return data


async def serve_websocket_by_hand(stream: trio.abc.Stream) -> None:
    """Be the WebSocket server at the far end of the tunnel: accept the
    handshake, then answer the client's close."""
    head = await read_request_head(stream)
    connection = await accept_by_hand(stream, head)
    await answer_close_by_hand(stream, connection)


# ---------------------------------------------------------------------------
# HTTP CONNECT


async def test_connect_request_bytes(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def script(stream: trio.SocketStream) -> None:
        seen.append(await read_request_head(stream))
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await serve_websocket_by_hand(stream)

    port = await scripted_proxy(nursery, script)
    proxy = Proxy(
        f"http://u%3Dser:p%40ss@127.0.0.1:{port}",
        headers=[(b"User-Agent", b"tests/1"), (b"X-Trace", b"abc")],
    )
    with trio.fail_after(10):
        async with open_websocket("::1", 8080, "/", use_ssl=False, proxy=proxy):
            pass
    credentials = base64.b64encode(b"u=ser:p@ss")
    assert seen == [
        b"CONNECT [::1]:8080 HTTP/1.1\r\n"
        b"Host: [::1]:8080\r\n"
        b"Proxy-Authorization: Basic " + credentials + b"\r\n"
        b"User-Agent: tests/1\r\n"
        b"X-Trace: abc\r\n\r\n"
    ]


async def test_own_proxy_authorization_header_replaces_the_urls(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def script(stream: trio.SocketStream) -> None:
        seen.append(await read_request_head(stream))
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    port = await scripted_proxy(nursery, script)
    proxy = Proxy(
        f"http://user:pw@127.0.0.1:{port}",
        headers=[(b"proxy-authorization", b"Bearer token")],
    )
    with trio.fail_after(10), pytest.raises(ProxyRejected):
        async with open_websocket_url("ws://server.example/", proxy=proxy):
            pass
    assert seen[0].count(b"uthorization") == 1
    assert b"proxy-authorization: Bearer token\r\n" in seen[0]


async def test_interim_answers_and_bare_lf_lines_are_accepted(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        await stream.send_all(b"HTTP/1.0 200 OK\nProxy-Agent: old\n\n")
        await serve_websocket_by_hand(stream)

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10):
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pass


async def test_bytes_after_the_answer_are_the_servers() -> None:
    client, proxy_side = trio.testing.memory_stream_pair()
    proxy = Proxy("http://p:3128")
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            await read_request_head(proxy_side)
            # The answer and the server's first bytes in one piece.
            await proxy_side.send_all(b"HTTP/1.1 200 OK\r\n\r\nfirst bytes")

        nursery.start_soon(answer)
        tunnel = await _http_connect(client, proxy, "server.example", 443)
    assert await tunnel.receive_some(5) == b"first"
    assert await tunnel.receive_some() == b" bytes"
    await proxy_side.send_all(b"more")
    assert await tunnel.receive_some() == b"more"
    await tunnel.send_all(b"to the server")
    assert await proxy_side.receive_some() == b"to the server"
    await tunnel.aclose()


async def test_endpoints_see_through_the_stream_holding_early_bytes(
    nursery: trio.Nursery,
) -> None:
    listeners = await nursery.start(
        partial(trio.serve_tcp, read_request_head, 0, host="127.0.0.1")  # type: ignore[arg-type]
    )
    port = listeners[0].socket.getsockname()[1]
    socket_stream = await trio.open_tcp_stream("127.0.0.1", port)
    prefixed = _PrefixedStream(b"early", socket_stream)
    assert stream_endpoint(prefixed, local=False) == Endpoint("127.0.0.1", port, False)
    local = stream_endpoint(prefixed, local=True)
    assert isinstance(local, Endpoint) and local.address == "127.0.0.1"
    await prefixed.aclose()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "closed the connection before answering"),
        (b"HTTP/1.1 200 Connection est", "closed the connection in the middle of its answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "did not answer in HTTP/1.x"),
        (b"HTTP/2 200\r\n\r\n", "did not answer in HTTP/1.x"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "did not answer in HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n", "malformed header line"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n",
            "more than 100 headers",
        ),
    ],
)
async def test_http_proxy_misbehaving_raises_proxy_error(
    nursery: trio.Nursery, answer: bytes, message: str
) -> None:
    async def script(stream: trio.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send_all(answer)

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10), pytest.raises(ProxyError, match=re.escape(message)) as caught:
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pytest.fail("connected through a broken proxy")
    assert not isinstance(caught.value, ProxyRejected)
    assert f"HTTP proxy 127.0.0.1:{port}" in str(caught.value)


async def test_endless_answer_head_is_cut_off(nursery: trio.Nursery) -> None:
    sent = 0

    async def script(stream: trio.SocketStream) -> None:
        nonlocal sent
        await read_request_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\n")
        for _ in range(1000):  # 8 MiB at most; the client stops long before
            await stream.send_all(b"X-Filler: " + b"x" * 8180 + b"\r\n")
            sent += 8192

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10), pytest.raises(ProxyError, match="answer head over 16384 bytes"):
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pytest.fail("accepted an endless head")
    assert MAX_ANSWER_HEAD == 16384


@pytest.mark.parametrize(
    "answer",
    [
        # One complete head, just over the limit, sent in one piece.
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * MAX_ANSWER_HEAD + b"\r\n\r\n",
        # Interim answers count too: an endless stream of them is cut off.
        b"HTTP/1.1 100 Continue\r\n\r\n" * 1000 + b"HTTP/1.1 200 OK\r\n\r\n",
    ],
)
async def test_answer_heads_over_the_limit_are_refused(
    nursery: trio.Nursery, answer: bytes
) -> None:
    async def script(stream: trio.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send_all(answer)

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10), pytest.raises(ProxyError, match="answer head over 16384 bytes"):
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pytest.fail("accepted an oversized head")


async def test_connect_refusal_keeps_status_reason_and_headers(nursery: trio.Nursery) -> None:
    async def script(stream: trio.SocketStream) -> None:
        await read_request_head(stream)
        await stream.send_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: Basic realm="corp"\r\n'
            b"Content-Length: 5\r\n\r\nnope!"
        )

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10), pytest.raises(ProxyAuthenticationError) as caught:
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pass
    error = caught.value
    assert error.status_code == 407
    assert error.headers[:2] == [
        (b"Proxy-Authenticate", b"Negotiate"),
        (b"Proxy-Authenticate", b'Basic realm="corp"'),
    ]
    assert str(error) == (
        f"the HTTP proxy 127.0.0.1:{port} refused CONNECT server.example:80: "
        "407 Proxy Authentication Required"
    )


async def test_non_ascii_names_go_to_the_proxy_in_idna(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def http_script(stream: trio.SocketStream) -> None:
        seen.append(await read_request_head(stream))
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")

    async def socks_script(stream: trio.SocketStream) -> None:
        await receive_exactly(stream, 3)
        await stream.send_all(b"\x05\x00")
        seen.append(await receive_exactly(stream, 4 + 1 + 21 + 2))
        await stream.send_all(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")

    http_port = await scripted_proxy(nursery, http_script)
    socks_port = await scripted_proxy(nursery, socks_script)
    with trio.fail_after(10):
        for proxy in (f"http://127.0.0.1:{http_port}", f"socks5h://127.0.0.1:{socks_port}"):
            with pytest.raises(ProxyRejected):
                async with open_websocket("bücher.example", 80, "/", use_ssl=False, proxy=proxy):
                    pass
    assert seen[0].startswith(b"CONNECT xn--bcher-kva.example:80 HTTP/1.1\r\n")
    assert seen[1] == b"\x05\x01\x00\x03\x15xn--bcher-kva.example\x00\x50"


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
@pytest.mark.parametrize(
    "host",
    [
        "evil.example HTTP/1.1\r\nX: y",  # would split the request line
        "user@evil.example",
        "ü" * 70 + ".example",  # an IDNA label over 63 bytes
    ],
)
async def test_target_host_that_cannot_be_sent_to_the_proxy(
    nursery: trio.Nursery, scheme: str, host: str
) -> None:
    port = await scripted_proxy(nursery, partial(_socks_script_replying, b"\x05\x00"))
    kind = "SOCKS5" if scheme == "socks5h" else "HTTP"
    with trio.fail_after(10), pytest.raises(ProxyError, match=f"cannot ask the {kind} proxy"):
        async with open_websocket(
            host, 80, "/", use_ssl=False, proxy=f"{scheme}://127.0.0.1:{port}"
        ):
            pass


# ---------------------------------------------------------------------------
# SOCKS5


async def test_socks5h_exchange_bytes_with_credentials(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []

    async def script(stream: trio.SocketStream) -> None:
        seen.append(await receive_exactly(stream, 4))  # greeting: two methods
        await stream.send_all(b"\x05\x02")
        seen.append(await receive_exactly(stream, 2 + 5 + 1 + 7))
        await stream.send_all(b"\x01\x00")
        seen.append(await receive_exactly(stream, 4 + 1 + 14 + 2))
        # Bound to a name, and in two pieces: the client reads it all.
        await stream.send_all(b"\x05\x00\x00\x03\x05bound")
        await stream.send_all(b"\x04\x38")
        await serve_websocket_by_hand(stream)

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10):
        async with open_websocket_url(
            "ws://server.example:8765/", proxy=f"socks5h://alice:s%C3%A9cret@127.0.0.1:{port}"
        ):
            pass
    assert seen == [
        b"\x05\x02\x00\x02",
        b"\x01\x05alice\x07s\xc3\xa9cret",
        b"\x05\x01\x00\x03\x0eserver.example" + struct.pack("!H", 8765),
    ]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", b"\x01\x7f\x00\x00\x01"),
        ("::1", b"\x04" + b"\x00" * 15 + b"\x01"),
        ("localhost", b"\x01\x7f\x00\x00\x01"),  # socks5: resolved here
    ],
)
async def test_socks5_sends_addresses(nursery: trio.Nursery, host: str, address: bytes) -> None:
    seen: list[bytes] = []

    async def script(stream: trio.SocketStream) -> None:
        assert await receive_exactly(stream, 3) == b"\x05\x01\x00"  # no credentials
        await stream.send_all(b"\x05\x00")
        seen.append(await receive_exactly(stream, 3 + len(address) + 2))
        # Bound to an IPv6 address.
        await stream.send_all(b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x50")
        await serve_websocket_by_hand(stream)

    port = await scripted_proxy(nursery, script)
    with trio.fail_after(10):
        async with open_websocket(
            host, 443, "/", use_ssl=False, proxy=f"socks5://127.0.0.1:{port}"
        ):
            pass
    assert seen == [b"\x05\x01\x00" + address + b"\x01\xbb"]


async def _socks_script_replying(reply: bytes, stream: trio.SocketStream) -> None:
    """Answer the greeting with ``reply[:2]``, and the request (read first,
    so that closing sends a clean end of stream, not a reset) with the
    rest."""
    await receive_exactly(stream, 3)
    await stream.send_all(reply[:2])
    if reply[:2] == b"\x05\x00":
        await stream.receive_some()
        await stream.send_all(reply[2:])


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection during method selection"),
        (b"\x05", "closed the connection during method selection"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "did not answer in SOCKS5"),
        (b"\x05\x02", "chose method 2, which was not offered"),
        (b"\x05\x00", "closed the connection during the reply"),
        (b"\x05\x00\x05\x00\x00", "closed the connection during the reply"),
        (b"\x05\x00\x05\x00\x00\x01\x7f\x00", "closed the connection during the reply"),
        (b"\x05\x00\x04\x00\x00\x01\x7f\x00\x00\x01\x00\x50", "did not answer in SOCKS5"),
        (b"\x05\x00\x05\x00\x00\x09\x7f\x00\x00\x01\x00\x50", "replied with address type 9"),
    ],
)
async def test_socks5_proxy_misbehaving_raises_proxy_error(
    nursery: trio.Nursery, reply: bytes, message: str
) -> None:
    port = await scripted_proxy(nursery, partial(_socks_script_replying, reply))
    with trio.fail_after(10), pytest.raises(ProxyError, match=re.escape(message)) as caught:
        async with open_websocket_url("ws://127.0.0.1:80/", proxy=f"socks5://127.0.0.1:{port}"):
            pytest.fail("connected through a broken proxy")
    assert not isinstance(caught.value, ProxyRejected)
    assert f"SOCKS5 proxy 127.0.0.1:{port}" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "meaning"),
    [(1, "general SOCKS server failure"), (4, "host unreachable"), (0x42, "unknown reply code")],
)
async def test_socks5_reply_codes(nursery: trio.Nursery, code: int, meaning: str) -> None:
    reply = b"\x05\x00\x05" + bytes([code]) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    port = await scripted_proxy(nursery, partial(_socks_script_replying, reply))
    with trio.fail_after(10), pytest.raises(ProxyRejected) as caught:
        async with open_websocket_url("ws://127.0.0.1:80/", proxy=f"socks5://127.0.0.1:{port}"):
            pass
    assert caught.value.reply_code == code
    assert caught.value.status_code is None
    assert f"refused to connect to 127.0.0.1:80: {meaning} ({code})" in str(caught.value)


async def test_socks5_no_acceptable_method_is_an_authentication_error(
    nursery: trio.Nursery,
) -> None:
    port = await scripted_proxy(nursery, partial(_socks_script_replying, b"\x05\xff"))
    with trio.fail_after(10), pytest.raises(ProxyAuthenticationError, match="accepts none"):
        async with open_websocket_url(
            "ws://127.0.0.1:80/", proxy=f"socks5://user:pw@127.0.0.1:{port}"
        ):
            pass


async def test_socks5_name_too_long_for_the_protocol(nursery: trio.Nursery) -> None:
    port = await scripted_proxy(nursery, partial(_socks_script_replying, b"\x05\x00"))
    name = ".".join(["a" * 60] * 5)  # 304 bytes: over SOCKS5's 255
    with pytest.raises(ProxyError, match="too long"):
        async with open_websocket(
            name, 80, "/", use_ssl=False, proxy=f"socks5h://127.0.0.1:{port}"
        ):
            pass


async def test_socks5_local_resolution_failure_says_so(nursery: trio.Nursery) -> None:
    port = await scripted_proxy(nursery, partial(_socks_script_replying, b"\x05\x00"))
    with pytest.raises(ProxyError, match=r"could not resolve nowhere\.invalid") as caught:
        async with open_websocket_url("ws://nowhere.invalid/", proxy=f"socks5://127.0.0.1:{port}"):
            pass
    assert isinstance(caught.value.__cause__, OSError)


# ---------------------------------------------------------------------------
# A proxy that never answers


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
async def test_silent_proxy_hits_the_connect_timeout_and_the_socket_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, scheme: str
) -> None:
    hung_up = trio.Event()

    async def script(stream: trio.SocketStream) -> None:
        for _ in range(1000):
            if not await stream.receive_some():
                break
        hung_up.set()

    port = await scripted_proxy(nursery, script)
    with pytest.raises(ConnectionTimeout):
        async with open_websocket_url(
            "ws://server.example/", proxy=f"{scheme}://127.0.0.1:{port}", connect_timeout=5
        ):
            pass
    # The client closed its socket: the proxy sees the end of the stream.
    with trio.fail_after(60):
        await hung_up.wait()


async def test_cancelled_while_waiting_for_the_proxy_closes_the_socket(
    nursery: trio.Nursery,
) -> None:
    hung_up = trio.Event()
    asked = trio.Event()

    async def script(stream: trio.SocketStream) -> None:
        await read_request_head(stream)
        asked.set()
        for _ in range(1000):
            if not await stream.receive_some():
                break
        hung_up.set()

    port = await scripted_proxy(nursery, script)
    with trio.CancelScope() as scope:

        async def cancel_once_asked() -> None:
            await asked.wait()
            scope.cancel()

        nursery.start_soon(cancel_once_asked)
        async with open_websocket_url("ws://server.example/", proxy=f"http://127.0.0.1:{port}"):
            pytest.fail("connected through a silent proxy")
    assert scope.cancelled_caught
    with trio.fail_after(10):
        await hung_up.wait()
