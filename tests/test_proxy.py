"""Connecting through real proxies on loopback: tinyproxy (HTTP CONNECT,
with and without Basic credentials, and behind an in-process TLS front for
``https://`` proxies) and Dante (SOCKS5, with and without username and
password). The WebSocket servers are ours, on 127.0.0.1.

Every refusal the proxies can give is checked: 407, 403, 500 (server
unreachable), SOCKS5 authentication refused, ruleset refusal, connection
refused; so are an unreachable proxy and the ``proxy=True`` environment
lookup (see test_proxy_config for its rules and test_proxy_protocol for
proxies misbehaving on the wire).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from conftest import LoopbackResolver, echo_handler
from proxy_servers import (
    HTTP_PASSWORD,
    HTTP_USER,
    SOCKS_PASSWORD,
    SOCKS_USER,
    RunningProxy,
    closed_port,
    run_dante,
    run_tinyproxy,
)

from trio_websocket import (
    Endpoint,
    HandshakeError,
    Proxy,
    ProxyAuthenticationError,
    ProxyError,
    ProxyRejected,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)

pytestmark = pytest.mark.time_limit(30)


# ---------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_tinyproxy(tmp_path_factory.mktemp("tinyproxy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tinyproxy_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_tinyproxy(tmp_path_factory.mktemp("tinyproxy-auth"), basic_auth=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tinyproxy_443_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_tinyproxy(tmp_path_factory.mktemp("tinyproxy-443"), connect_ports=[443]) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def dante(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_dante(tmp_path_factory.mktemp("dante")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def dante_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with run_dante(tmp_path_factory.mktemp("dante-auth"), username_auth=True) as proxy:
        yield proxy


SOCKS_CREDENTIALS = f"{SOCKS_USER}:{SOCKS_PASSWORD}@"
HTTP_CREDENTIALS = f"{HTTP_USER}:{HTTP_PASSWORD}@"


class SniRecorder:
    """A server TLS context that records the names clients ask for."""

    def __init__(self, ca: trustme.CA) -> None:
        self.names: list[str | None] = []
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.context)
        self.context.sni_callback = self._record

    def _record(self, _socket: Any, name: str | None, _context: Any) -> None:
        self.names.append(name)


@pytest.fixture
async def ws_server(nursery: trio.Nursery) -> WebSocketServer:
    return await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)


async def echo_once(ws: Any, text: str = "through the proxy") -> None:
    await ws.send_message(text)
    assert await ws.get_message() == text


# ---------------------------------------------------------------------------
# HTTP CONNECT through tinyproxy


async def test_ws_through_http_proxy_url(
    tinyproxy: RunningProxy, ws_server: WebSocketServer
) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/chat?room=1", proxy=tinyproxy.url("http")
        ) as ws:
            await echo_once(ws)
            # The socket is connected to the proxy, not to the server.
            assert ws.remote == Endpoint("127.0.0.1", tinyproxy.port, False)
            assert ws.path == "/chat?room=1"
    assert "CONNECT 127.0.0.1:" in tinyproxy.log.read_text()


async def test_wss_through_http_proxy_checks_the_servers_name(
    tinyproxy: RunningProxy, ca: trustme.CA, client_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    recorder = SniRecorder(ca)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, recorder.context)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"wss://localhost:{server.port}/", client_context, proxy=tinyproxy.url("http")
        ) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", tinyproxy.port, True)
    # TLS ran end to end with the server, for the server's name.
    assert recorder.names == ["localhost"]
    assert f"CONNECT localhost:{server.port}" in tinyproxy.log.read_text()


async def test_open_websocket_and_connect_websocket_take_proxy(
    tinyproxy: RunningProxy, ws_server: WebSocketServer, nursery: trio.Nursery
) -> None:
    proxy = Proxy(tinyproxy.url("http"))
    with trio.fail_after(10):
        async with open_websocket(
            "127.0.0.1", ws_server.port, "/a", use_ssl=False, proxy=proxy
        ) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", tinyproxy.port, False)
        ws = await connect_websocket(
            nursery, "127.0.0.1", ws_server.port, "/b", use_ssl=False, proxy=proxy
        )
        await echo_once(ws)
        assert ws.remote == Endpoint("127.0.0.1", tinyproxy.port, False)
        await ws.aclose()
        ws = await connect_websocket_url(
            nursery, f"ws://127.0.0.1:{ws_server.port}/c", proxy=tinyproxy.url("http")
        )
        await echo_once(ws)
        await ws.aclose()


async def test_http_proxy_credentials_from_the_url(
    tinyproxy_auth: RunningProxy, ws_server: WebSocketServer
) -> None:
    # Percent-encoding in the URL is decoded ("%69" is "i").
    credentials = HTTP_CREDENTIALS.replace("i", "%69", 1)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/", proxy=tinyproxy_auth.url("http", credentials)
        ) as ws:
            await echo_once(ws)


@pytest.mark.parametrize(
    ("credentials", "status", "challenge"),
    [
        ("", 407, b"proxy-authenticate"),
        # tinyproxy answers wrong credentials with 401 and WWW-Authenticate.
        (f"{HTTP_USER}:wrong@", 401, b"www-authenticate"),
    ],
)
async def test_http_proxy_refusing_credentials_raises_authentication_error(
    tinyproxy_auth: RunningProxy,
    ws_server: WebSocketServer,
    credentials: str,
    status: int,
    challenge: bytes,
) -> None:
    with trio.fail_after(10), pytest.raises(ProxyAuthenticationError) as caught:
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/", proxy=tinyproxy_auth.url("http", credentials)
        ):
            pytest.fail("connected without valid credentials")
    error = caught.value
    assert isinstance(error, HandshakeError)
    assert error.status_code == status
    assert error.reply_code is None
    assert any(name.lower() == challenge for name, _ in error.headers)
    assert f"HTTP proxy 127.0.0.1:{tinyproxy_auth.port}" in str(error)
    assert "wrong" not in str(error) and "wrong" not in repr(error)


async def test_http_proxy_403_raises_proxy_rejected(
    tinyproxy_443_only: RunningProxy, ws_server: WebSocketServer
) -> None:
    with trio.fail_after(10), pytest.raises(ProxyRejected) as caught:
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/", proxy=tinyproxy_443_only.url("http")
        ):
            pytest.fail("connected to a forbidden port")
    assert not isinstance(caught.value, ProxyAuthenticationError)
    assert caught.value.status_code == 403
    assert "refused CONNECT" in str(caught.value)
    assert repr(caught.value) == "ProxyRejected<status_code=403>"


async def test_http_proxy_that_cannot_reach_the_server_raises_proxy_rejected(
    tinyproxy: RunningProxy,
) -> None:
    port = closed_port()
    with trio.fail_after(10), pytest.raises(ProxyRejected) as caught:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", proxy=tinyproxy.url("http")):
            pytest.fail("connected to a closed port")
    # tinyproxy answers "500 Unable to connect" (others say 502 or 504).
    assert caught.value.status_code == 500
    assert f"CONNECT 127.0.0.1:{port}" in str(caught.value)


# ---------------------------------------------------------------------------
# SOCKS5 through Dante


async def test_socks5_resolves_here_and_socks5h_at_the_proxy(
    dante: RunningProxy, ws_server: WebSocketServer
) -> None:
    # Only this process can resolve ws.proxy.test (to 127.0.0.1).
    url = f"ws://ws.proxy.test:{ws_server.port}/"
    resolver = LoopbackResolver(ws_server.port)
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(10):
            async with open_websocket_url(url, proxy=dante.url("socks5")) as ws:
                await echo_once(ws)
                assert ws.remote == Endpoint("127.0.0.1", dante.port, False)
            assert [host for host, _ in resolver.asked] == [b"ws.proxy.test"]
            # socks5h hands the name to Dante, which cannot resolve it.
            with pytest.raises(ProxyRejected) as caught:
                async with open_websocket_url(url, proxy=dante.url("socks5h")):
                    pytest.fail("Dante resolved a name only this process knows")
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert caught.value.reply_code == 4  # host unreachable
    assert len(resolver.asked) == 1


async def test_wss_through_socks5h_with_credentials_checks_the_servers_name(
    dante_auth: RunningProxy, ca: trustme.CA, client_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    recorder = SniRecorder(ca)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, recorder.context)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"wss://localhost:{server.port}/",
            client_context,
            proxy=dante_auth.url("socks5h", SOCKS_CREDENTIALS),
        ) as ws:
            await echo_once(ws)
            big = bytes(range(256)) * 2048
            await ws.send_message(big)
            assert await ws.get_message() == big
    assert recorder.names == ["localhost"]


async def test_socks5_proxy_needing_credentials_refuses_a_client_without(
    dante_auth: RunningProxy, ws_server: WebSocketServer
) -> None:
    with trio.fail_after(10), pytest.raises(ProxyAuthenticationError) as caught:
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/", proxy=dante_auth.url("socks5")
        ):
            pytest.fail("connected without credentials")
    assert caught.value.status_code is None
    assert caught.value.reply_code is None
    assert f"SOCKS5 proxy 127.0.0.1:{dante_auth.port}" in str(caught.value)


async def test_socks5_wrong_password_raises_authentication_error(
    dante_auth: RunningProxy, ws_server: WebSocketServer
) -> None:
    with trio.fail_after(10), pytest.raises(ProxyAuthenticationError) as caught:
        async with open_websocket_url(
            f"ws://127.0.0.1:{ws_server.port}/",
            proxy=dante_auth.url("socks5", f"{SOCKS_USER}:not-{SOCKS_PASSWORD}@"),
        ):
            pytest.fail("connected with a wrong password")
    assert "rejected the user name and password" in str(caught.value)
    assert SOCKS_PASSWORD not in str(caught.value)


async def test_socks5_connection_refused_by_the_server_raises_reply_5(
    dante: RunningProxy,
) -> None:
    port = closed_port()
    with trio.fail_after(10), pytest.raises(ProxyRejected) as caught:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", proxy=dante.url("socks5h")):
            pytest.fail("connected to a closed port")
    assert caught.value.reply_code == 5
    assert "connection refused" in str(caught.value)
    assert repr(caught.value) == "ProxyRejected<reply_code=5>"


async def test_socks5_ruleset_refusal_raises_reply_2(dante: RunningProxy) -> None:
    with trio.fail_after(10), pytest.raises(ProxyRejected) as caught:
        async with open_websocket_url("ws://127.0.0.2:80/", proxy=dante.url("socks5")):
            pytest.fail("connected to a forbidden address")
    assert caught.value.reply_code == 2
    assert "not allowed by ruleset" in str(caught.value)


# ---------------------------------------------------------------------------
# Unreachable proxies, bad URLs


@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "socks5h"])
async def test_unreachable_proxy_raises_proxy_error_with_cause(scheme: str) -> None:
    port = closed_port()
    with trio.fail_after(10), pytest.raises(ProxyError) as caught:
        async with open_websocket_url("ws://127.0.0.1:9/", proxy=f"{scheme}://127.0.0.1:{port}"):
            pytest.fail("connected through nothing")
    assert not isinstance(caught.value, ProxyRejected)
    kind = "SOCKS5" if scheme.startswith("socks") else scheme.upper()
    assert f"could not connect to the {kind} proxy 127.0.0.1:{port}" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


async def test_bad_proxy_url_raises_proxy_error_at_connect(nursery: trio.Nursery) -> None:
    with pytest.raises(ProxyError) as caught:
        await connect_websocket_url(
            nursery, "ws://127.0.0.1:9/", proxy="socks4://user:hunter2@127.0.0.1:1080"
        )
    assert isinstance(caught.value.__cause__, ValueError)
    assert "invalid proxy URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ProxyError):
        async with open_websocket_url("ws://127.0.0.1:9/", proxy="http://"):
            pytest.fail("connected through nothing")


async def test_proxy_of_the_wrong_type_raises_type_error(nursery: trio.Nursery) -> None:
    with pytest.raises(TypeError, match="proxy must be"):
        await connect_websocket_url(nursery, "ws://127.0.0.1:9/", proxy=8080)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# proxy=True: the environment


async def test_proxy_true_reads_http_proxy_for_ws(
    tinyproxy: RunningProxy, ws_server: WebSocketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ws_proxy", "WS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"127.0.0.1:{tinyproxy.port}")  # no scheme: HTTP
    url = f"ws://127.0.0.1:{ws_server.port}/"
    with trio.fail_after(10):
        async with open_websocket_url(url, proxy=True) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", tinyproxy.port, False)
        # The default ignores the environment: 0.12.2 connected directly.
        async with open_websocket_url(url) as ws:
            assert ws.remote == Endpoint("127.0.0.1", ws_server.port, False)
        monkeypatch.setenv("no_proxy", "example.com, 127.0.0.0/8")
        async with open_websocket_url(url, proxy=True) as ws:
            assert ws.remote == Endpoint("127.0.0.1", ws_server.port, False)


async def test_proxy_true_reads_all_proxy_for_socks(
    dante: RunningProxy, ws_server: WebSocketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ws_proxy", "http_proxy", "no_proxy", "WS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", dante.url("socks5h"))
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{ws_server.port}/", proxy=True) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", dante.port, False)


async def test_unusable_proxy_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("wss_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("https_proxy", "ftp://proxy.example:21")
    with pytest.raises(ProxyError, match="https_proxy environment variable") as caught:
        async with open_websocket_url("wss://127.0.0.1:9/", proxy=True):
            pytest.fail("connected through an ftp proxy")
    assert isinstance(caught.value.__cause__, ValueError)


# ---------------------------------------------------------------------------
# An HTTPS proxy: an in-process TLS front for tinyproxy


async def _tls_front(
    nursery: trio.Nursery, context: ssl.SSLContext, backend_port: int
) -> tuple[int, list[str]]:
    """A TLS terminator on 127.0.0.1 forwarding to ``backend_port``; returns
    its port and a list that records each handshake's outcome."""
    outcomes: list[str] = []

    async def pump(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            for _ in range(100_000):
                data = await source.receive_some(65536)
                if not data:
                    break
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            outcomes.append("tls failed")
            await trio.aclose_forcefully(tls)
            return
        outcomes.append("tls ok")
        backend = await trio.open_tcp_stream("127.0.0.1", backend_port)
        async with trio.open_nursery() as pumps:
            pumps.start_soon(pump, tls, backend)
            pumps.start_soon(pump, backend, tls)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], outcomes


async def test_https_proxy_with_its_own_context_carries_ws_and_wss(
    tinyproxy: RunningProxy,
    ca: trustme.CA,
    client_context: ssl.SSLContext,
    nursery: trio.Nursery,
) -> None:
    proxy_ca = trustme.CA()
    front_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    proxy_ca.issue_cert("proxy.localhost", "127.0.0.1").configure_cert(front_context)
    front_port, outcomes = await _tls_front(nursery, front_context, tinyproxy.port)
    proxy_trust = ssl.create_default_context()
    proxy_ca.configure_trust(proxy_trust)
    proxy = Proxy(f"https://127.0.0.1:{front_port}", ssl_context=proxy_trust)

    plain = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    recorder = SniRecorder(ca)
    secure = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, recorder.context)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{plain.port}/", proxy=proxy) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", front_port, True)
        # TLS to the server inside TLS to the proxy, each with its own trust.
        async with open_websocket_url(
            f"wss://localhost:{secure.port}/", client_context, proxy=proxy
        ) as ws:
            await echo_once(ws)
            assert ws.remote == Endpoint("127.0.0.1", front_port, True)
    assert outcomes == ["tls ok", "tls ok"]
    assert recorder.names == ["localhost"]


async def test_https_proxy_with_an_untrusted_certificate_raises_proxy_error(
    tinyproxy: RunningProxy, nursery: trio.Nursery
) -> None:
    front_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(front_context)
    front_port, _ = await _tls_front(nursery, front_context, tinyproxy.port)
    with trio.fail_after(10), pytest.raises(ProxyError) as caught:
        # The default context does not trust the test authority.
        async with open_websocket_url("ws://127.0.0.1:9/", proxy=f"https://127.0.0.1:{front_port}"):
            pytest.fail("trusted an unknown authority")
    assert f"TLS with the HTTPS proxy 127.0.0.1:{front_port} failed" in str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_wss_server_with_untrusted_certificate_behind_a_proxy_is_a_handshake_error(
    tinyproxy: RunningProxy, ca: trustme.CA, nursery: trio.Nursery
) -> None:
    recorder = SniRecorder(ca)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, recorder.context)
    with trio.fail_after(10), pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(
            f"wss://localhost:{server.port}/", proxy=tinyproxy.url("http")
        ):
            pytest.fail("trusted an unknown authority")
    # The proxy did its part; the server's certificate failed.
    assert not isinstance(caught.value, ProxyError)
    assert f"TLS with localhost:{server.port} (through the HTTP proxy" in str(caught.value)
