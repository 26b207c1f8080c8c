"""A failed open says which phase failed, with the low-level cause chained.

Phases: ``"dns"`` (name lookup), ``"connect"`` (TCP or Unix socket),
``"tls"`` (TLS handshake and certificate check) and ``"http"`` (the upgrade
request and its answer). Failures are provoked over loopback TCP; DNS
failures come from a custom trio hostname resolver, so no network is
needed. Timeout tests stop the mock clock until the client is known to be
in the phase under test, then let it jump.
"""

from __future__ import annotations

import copy
import pickle
import socket
import ssl
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import echo_handler

from trio_websocket import (
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)


class FailingResolver(trio.abc.HostnameResolver):
    """Fails every lookup as an unknown name would."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    async def getaddrinfo(  # type: ignore[override]
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        self.asked.append(host)
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


class HangingResolver(FailingResolver):
    """Never answers."""

    async def getaddrinfo(  # type: ignore[override]
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        self.asked.append(host)
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover


async def closed_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


class QuietServer:
    """A TCP server that reads whatever comes and never answers; records
    that bytes arrived and when the client closed."""

    def __init__(self) -> None:
        self.first_bytes = trio.Event()
        self.client_gone = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            for _ in range(10_000):
                if not await stream.receive_some():
                    break
                self.first_bytes.set()
        except trio.BrokenResourceError:
            pass
        finally:
            self.client_gone.set()

    async def start(self, nursery: trio.Nursery) -> int:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        return int(listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------------
# DNS


async def test_unknown_host_is_a_dns_failure_with_gaierror_cause() -> None:
    resolver = FailingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(10), pytest.raises(HandshakeError) as info:
            async with open_websocket_url("ws://no-such-host.test:8000/"):
                pytest.fail("connected to a name that does not resolve")
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert type(info.value) is HandshakeError
    assert info.value.phase == "dns"
    assert isinstance(info.value.__cause__, socket.gaierror)
    assert "no-such-host.test" in str(info.value)
    assert "DNS" in str(info.value)
    assert resolver.asked == [b"no-such-host.test"]


async def test_connect_websocket_reports_dns_failure_too(nursery: trio.Nursery) -> None:
    trio.socket.set_custom_hostname_resolver(FailingResolver())
    try:
        with trio.fail_after(10), pytest.raises(HandshakeError) as info:
            await connect_websocket(nursery, "no-such-host.test", 80, "/", use_ssl=False)
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert info.value.phase == "dns"
    assert not nursery.child_tasks


async def test_lookup_that_never_ends_times_out_naming_lookup_and_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trio.socket.set_custom_hostname_resolver(HangingResolver())
    try:
        with pytest.raises(ConnectionTimeout) as info:
            async with open_websocket_url("ws://slow-dns.test/", connect_timeout=4):
                pytest.fail("connected without a lookup")
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    # trio resolves and connects in one call: the timeout cannot tell which
    # of the two hung, and its message says so.
    assert info.value.phase == "connect"
    assert "the DNS lookup or the TCP connection" in str(info.value)
    assert "slow-dns.test:80" in str(info.value)


# ---------------------------------------------------------------------------
# TCP


async def test_refused_tcp_connection_is_a_connect_failure() -> None:
    port = await closed_port()
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            pytest.fail("connected to a closed port")
    assert type(info.value) is HandshakeError
    assert info.value.phase == "connect"
    # trio's summary of every address tried is unwrapped when there was one.
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "TCP" in str(info.value)
    assert "refused" in str(info.value)


# ---------------------------------------------------------------------------
# TLS


async def test_untrusted_certificate_is_a_tls_failure_raised_at_once(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, server_context)
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)
    # Far below connect_timeout: a verification failure must not wait for it.
    with trio.fail_after(5), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(
            f"wss://127.0.0.1:{server.port}/", untrusting, connect_timeout=60
        ):
            pytest.fail("trusted a certificate from an unknown CA")
    assert type(info.value) is HandshakeError
    assert info.value.phase == "tls"
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert "certificate verification failed" in str(info.value)
    assert f"127.0.0.1:{server.port}" in str(info.value)


async def test_tls_to_a_plain_server_is_a_tls_failure_and_closes_the_socket(
    nursery: trio.Nursery,
) -> None:
    async def answer_plain_http(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
        gone.set()

    gone = trio.Event()
    listeners = await nursery.start(partial(trio.serve_tcp, answer_plain_http, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket("127.0.0.1", port, "/", use_ssl=True):
            pytest.fail("TLS over a plain HTTP server")
    assert info.value.phase == "tls"
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with trio.fail_after(10):
        await gone.wait()  # the client closed its socket


async def test_silent_tls_server_times_out_in_the_tls_phase(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    quiet = QuietServer()
    port = await quiet.start(nursery)
    result: dict[str, BaseException] = {}

    async def attempt() -> None:
        try:
            async with open_websocket_url(f"wss://127.0.0.1:{port}/", connect_timeout=9):
                pytest.fail("no TLS server, no connection")
        except ConnectionTimeout as exc:
            result["error"] = exc

    async with trio.open_nursery() as inner:
        inner.start_soon(attempt)
        with trio.fail_after(10):
            await quiet.first_bytes.wait()  # the ClientHello: TLS has begun
        mock_clock.autojump_threshold = 0
    error = result["error"]
    assert isinstance(error, ConnectionTimeout)
    assert error.phase == "tls"
    assert "TLS handshake" in str(error)
    mock_clock.autojump_threshold = 0.5
    with trio.fail_after(60):
        await quiet.client_gone.wait()


# ---------------------------------------------------------------------------
# HTTP


async def test_rejection_is_an_http_failure(nursery: trio.Nursery) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(404)

    server = await nursery.start(serve_websocket, reject, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        await connect_websocket_url(nursery, f"ws://127.0.0.1:{server.port}/")
    assert info.value.phase == "http"
    assert info.value.status_code == 404


async def test_server_that_never_answers_the_upgrade_times_out_in_the_http_phase(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    quiet = QuietServer()
    port = await quiet.start(nursery)
    result: dict[str, BaseException] = {}

    async def attempt() -> None:
        try:
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False, connect_timeout=3):
                pytest.fail("no answer, no connection")
        except ConnectionTimeout as exc:
            result["error"] = exc

    async with trio.open_nursery() as inner:
        inner.start_soon(attempt)
        with trio.fail_after(10):
            await quiet.first_bytes.wait()
        mock_clock.autojump_threshold = 0
    error = result["error"]
    assert isinstance(error, ConnectionTimeout)
    assert error.phase == "http"
    assert f"127.0.0.1:{port} within 3.0 s" in str(error)
    assert "HTTP upgrade" in str(error)


async def test_answer_that_is_not_http_is_an_http_failure(nursery: trio.Nursery) -> None:
    async def garbage(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, garbage, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
            pytest.fail("connected to something that is not HTTP")
    assert info.value.phase == "http"
    assert info.value.__cause__ is not None


# ---------------------------------------------------------------------------
# The attribute itself


def test_phase_defaults_to_none_and_old_constructors_still_work() -> None:
    assert HandshakeError("x").phase is None
    assert HandshakeError().phase is None
    assert ConnectionTimeout("slow").phase is None
    assert ConnectionRejected(500, [], None).phase == "http"


@pytest.mark.parametrize("clone", [copy.copy, lambda exc: pickle.loads(pickle.dumps(exc))])
def test_phase_survives_copy_and_pickle(clone: Any) -> None:
    error = HandshakeError("could not resolve", phase="dns")
    copied = clone(error)
    assert type(copied) is HandshakeError
    assert copied.phase == "dns"
    assert copied.args == ("could not resolve",)
    timeout = clone(ConnectionTimeout("too slow", phase="tls"))
    assert isinstance(timeout, ConnectionTimeout)
    assert timeout.phase == "tls"
