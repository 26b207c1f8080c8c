"""Following HTTP redirects in the opening handshake (``max_redirects``).

The servers are real loopback ``serve_websocket`` servers whose handlers
answer with a redirect or accept and echo; each records the requests it
saw. The pure rules (where a ``Location`` leads, which headers travel) are
tested directly on ``_client.redirects`` at the end.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trustme

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketRequest,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._client.redirects import headers_for_redirect, redirect_target
from trio_websocket._core.url import parse_ws_url


class Recorder:
    """A server that records each request (path, headers), then either
    redirects with ``status``/``location`` or accepts and echoes."""

    def __init__(self, status: int | None = None, location: bytes | None = None) -> None:
        self.status = status
        self.location = location
        self.requests: list[tuple[str, dict[bytes, bytes]]] = []
        self.port = 0

    async def handle(self, request: WebSocketRequest) -> None:
        headers = {name.lower(): value for name, value in request.headers}
        # wsproto parses Host out of the header list.
        headers[b"host"] = request._event.host.encode()
        self.requests.append((request.path, headers))
        if self.status is not None:
            extra = [] if self.location is None else [(b"Location", self.location)]
            body = None if self.status == 304 else b"moved"  # 304 has no body
            await request.reject(self.status, extra_headers=extra, body=body)
            return
        ws = await request.accept()
        try:
            for _ in range(100):
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async def start(self, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None) -> int:
        server = await nursery.start(serve_websocket, self.handle, "127.0.0.1", 0, ssl_context)
        self.port = server.port
        return self.port


async def echo_once(ws: Any) -> None:
    await ws.send_message("ping")
    assert await ws.get_message() == "ping"


def basic(credentials: str) -> bytes:
    return b"Basic " + base64.b64encode(credentials.encode())


# ---------------------------------------------------------------------------
# Following


async def test_redirect_is_not_followed_by_default(nursery: trio.Nursery) -> None:
    target = Recorder()
    await target.start(nursery)
    mover = Recorder(302, f"ws://127.0.0.1:{target.port}/".encode())
    await mover.start(nursery)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/"):
            pytest.fail("followed a redirect without max_redirects")
    assert info.value.status_code == 302
    assert (b"location", f"ws://127.0.0.1:{target.port}/".encode()) in [
        (name.lower(), value) for name, value in info.value.headers
    ]
    assert target.requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_each_redirect_status_is_followed_to_a_relative_location(
    nursery: trio.Nursery, status: int
) -> None:
    server = Recorder()
    port = await server.start(nursery)

    async def handler(request: WebSocketRequest) -> None:
        if request.path == "/old":
            await request.reject(status, extra_headers=[(b"Location", b"new?x=1")])
        else:
            await server.handle(request)

    redirecting = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    del port
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{redirecting.port}/old", max_redirects=1
        ) as ws:
            assert ws.path == "/new?x=1"
            await echo_once(ws)
    ((path, headers),) = server.requests
    assert path == "/new?x=1"
    assert headers[b"host"] == f"127.0.0.1:{redirecting.port}".encode()


async def test_redirect_to_another_server_sends_its_host_header(nursery: trio.Nursery) -> None:
    target = Recorder()
    await target.start(nursery)
    mover = Recorder(307, f"ws://localhost:{target.port}/there".encode())
    await mover.start(nursery)
    with trio.fail_after(10):
        async with open_websocket(
            "127.0.0.1", mover.port, "/here", use_ssl=False, max_redirects=2
        ) as ws:
            await echo_once(ws)
            assert ws.remote.port == target.port  # type: ignore[union-attr]
    assert [path for path, _ in mover.requests] == ["/here"]
    ((path, headers),) = target.requests
    assert path == "/there"
    assert headers[b"host"] == f"localhost:{target.port}".encode()


async def test_chain_of_redirects_within_the_limit_is_followed(nursery: trio.Nursery) -> None:
    final = Recorder()
    await final.start(nursery)
    second = Recorder(301, f"ws://127.0.0.1:{final.port}/final".encode())
    await second.start(nursery)
    first = Recorder(302, f"ws://127.0.0.1:{second.port}/second".encode())
    await first.start(nursery)
    with trio.fail_after(10):
        ws = await connect_websocket_url(nursery, f"ws://127.0.0.1:{first.port}/", max_redirects=2)
        try:
            await echo_once(ws)
            assert ws.path == "/final"
        finally:
            await ws.aclose()
    assert len(first.requests) == len(second.requests) == len(final.requests) == 1


async def test_more_redirects_than_allowed_raise_handshake_error(nursery: trio.Nursery) -> None:
    final = Recorder()
    await final.start(nursery)
    second = Recorder(302, f"ws://127.0.0.1:{final.port}/".encode())
    await second.start(nursery)
    first = Recorder(302, f"ws://127.0.0.1:{second.port}/".encode())
    await first.start(nursery)
    tasks_before = set(nursery.child_tasks)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        await connect_websocket(
            nursery, "127.0.0.1", first.port, "/", use_ssl=False, max_redirects=1
        )
    error = info.value
    assert type(error) is HandshakeError
    assert error.phase == "http"
    assert "too many redirects" in str(error)
    assert isinstance(error.__cause__, ConnectionRejected)
    assert error.__cause__.status_code == 302
    assert final.requests == []
    assert set(nursery.child_tasks) == tasks_before  # no reader task left behind


async def test_redirect_loop_stops_at_the_limit(nursery: trio.Nursery) -> None:
    loop = Recorder(302, b"/again")
    await loop.start(nursery)
    with trio.fail_after(10), pytest.raises(HandshakeError, match="too many redirects"):
        async with open_websocket_url(f"ws://127.0.0.1:{loop.port}/", max_redirects=5):
            pytest.fail("a redirect loop connected")
    assert len(loop.requests) == 6  # the first request and five redirects


@pytest.mark.parametrize("status", [300, 304, 404])
async def test_other_statuses_are_not_followed(nursery: trio.Nursery, status: int) -> None:
    target = Recorder()
    await target.start(nursery)
    mover = Recorder(status, f"ws://127.0.0.1:{target.port}/".encode())
    await mover.start(nursery)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/", max_redirects=3):
            pytest.fail("connected through a non-redirect status")
    assert info.value.status_code == status
    assert target.requests == []


async def test_http_location_is_read_as_ws(nursery: trio.Nursery) -> None:
    target = Recorder()
    await target.start(nursery)
    mover = Recorder(301, f"http://127.0.0.1:{target.port}/plain".encode())
    await mover.start(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/", max_redirects=1) as ws:
            await echo_once(ws)
    assert [path for path, _ in target.requests] == ["/plain"]


# ---------------------------------------------------------------------------
# TLS


async def test_wss_to_wss_redirect_keeps_the_given_ssl_context(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    target = Recorder()
    await target.start(nursery, server_context)
    mover = Recorder(308, f"https://localhost:{target.port}/secure".encode())
    await mover.start(nursery, server_context)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"wss://127.0.0.1:{mover.port}/", client_context, max_redirects=1
        ) as ws:
            await echo_once(ws)
            assert ws.remote.is_ssl  # type: ignore[union-attr]
    assert [path for path, _ in target.requests] == ["/secure"]


async def test_wss_to_ws_downgrade_is_refused(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    plain = Recorder()
    await plain.start(nursery)
    mover = Recorder(302, f"ws://127.0.0.1:{plain.port}/".encode())
    await mover.start(nursery, server_context)
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(
            f"wss://127.0.0.1:{mover.port}/", client_context, max_redirects=3
        ):
            pytest.fail("followed a redirect that drops TLS")
    assert info.value.phase == "http"
    assert "drop TLS" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionRejected)
    assert plain.requests == []


async def test_ws_to_wss_upgrade_verifies_with_a_default_context(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = Recorder()
    await target.start(nursery, server_context)
    mover = Recorder(301, f"wss://127.0.0.1:{target.port}/tls".encode())
    await mover.start(nursery)
    made: list[ssl.SSLContext] = []
    original: Callable[..., ssl.SSLContext] = ssl.create_default_context

    def trusting_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        # Stands in for the system trust store, which cannot trust our CA.
        context = original(*args, **kwargs)
        ca.configure_trust(context)
        made.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", trusting_default_context)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/", max_redirects=1) as ws:
            await echo_once(ws)
            assert ws.remote.is_ssl  # type: ignore[union-attr]
    assert len(made) == 1
    assert made[0].verify_mode == ssl.CERT_REQUIRED
    assert made[0].check_hostname


# ---------------------------------------------------------------------------
# Credentials and bad locations


async def test_url_credentials_do_not_follow_a_redirect_to_another_host(
    nursery: trio.Nursery,
) -> None:
    elsewhere = Recorder()
    await elsewhere.start(nursery)
    location = f"ws://localhost:{elsewhere.port}/c".encode()
    mover = Recorder(302, location)
    await mover.start(nursery)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://user:secret@127.0.0.1:{mover.port}/a",
            extra_headers=[(b"X-Trace", b"42"), (b"Authorization", b"Bearer token")],
            max_redirects=2,
        ) as ws:
            await echo_once(ws)
    ((_, first),) = mover.requests
    assert first[b"authorization"] == basic("user:secret")
    ((_, headers),) = elsewhere.requests
    assert b"authorization" not in headers  # another host: credentials stay home
    assert b"x-trace" not in headers  # and so does every other extra header


async def test_same_origin_redirect_keeps_credentials(nursery: trio.Nursery) -> None:
    server = Recorder()
    await server.start(nursery)

    async def handler(request: WebSocketRequest) -> None:
        if request.path == "/a":
            await request.reject(307, extra_headers=[(b"Location", b"/b")])
        else:
            await server.handle(request)

    redirecting = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://user:secret@127.0.0.1:{redirecting.port}/a", max_redirects=1
        ) as ws:
            await echo_once(ws)
    ((path, headers),) = server.requests
    assert path == "/b"
    assert headers[b"authorization"] == basic("user:secret")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (None, "without a Location"),
        (b"ftp://127.0.0.1/file", "unusable URL"),
        (b"mailto:ops@example.com", "unusable URL"),
    ],
)
async def test_unusable_location_raises_handshake_error(
    nursery: trio.Nursery, location: bytes | None, message: str
) -> None:
    mover = Recorder(302, location)
    await mover.start(nursery)
    with trio.fail_after(10), pytest.raises(HandshakeError, match=message) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{mover.port}/", max_redirects=1):
            pytest.fail("followed an unusable Location")
    assert info.value.phase == "http"
    assert isinstance(info.value.__cause__, ConnectionRejected)


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (True, TypeError), ("2", TypeError)]
)
async def test_bad_max_redirects_is_refused(
    nursery: trio.Nursery, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await connect_websocket(nursery, "127.0.0.1", 1, "/", use_ssl=False, max_redirects=value)


# ---------------------------------------------------------------------------
# The pure rules


def test_relative_location_resolves_against_the_requested_url() -> None:
    current = parse_ws_url("wss://example.com:8443/a/b?q=1")
    target = redirect_target(current, [(b"Location", b"../c?r=2")])
    assert (target.host, target.port, target.resource, target.secure) == (
        "example.com",
        8443,
        "/c?r=2",
        True,
    )
    assert target.host_header == "example.com:8443"


def test_location_header_name_is_case_insensitive_and_https_means_wss() -> None:
    current = parse_ws_url("ws://example.com/")
    target = redirect_target(current, [(b"LOCATION", b"https://other.test/x")])
    assert (target.host, target.port, target.secure) == ("other.test", 443, True)


def test_two_location_headers_are_refused() -> None:
    current = parse_ws_url("ws://example.com/")
    with pytest.raises(ValueError, match="more than one"):
        redirect_target(current, [(b"Location", b"/a"), (b"Location", b"/b")])


def test_credentials_in_location_replace_the_old_ones() -> None:
    current = parse_ws_url("ws://old:pw@example.com/")
    target = redirect_target(current, [(b"Location", b"ws://new:pw2@example.com/next")])
    headers = headers_for_redirect(
        [(b"Authorization", basic("old:pw")), (b"X-A", b"1")], current, target
    )
    assert headers == [(b"X-A", b"1"), (b"Authorization", basic("new:pw2"))]


def test_port_or_scheme_change_counts_as_another_origin() -> None:
    current = parse_ws_url("ws://example.com/")
    auth = [(b"authorization", b"Bearer t")]
    for location in (b"ws://example.com:81/", b"wss://example.com/", b"ws://EXAMPLE.com/x"):
        target = redirect_target(current, [(b"Location", location)])
        kept = headers_for_redirect(auth, current, target)
        assert kept == (auth if location == b"ws://EXAMPLE.com/x" else []), location
