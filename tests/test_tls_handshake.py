"""``_wire.tls_stream``: the TLS handshake over a lean socket, driven
directly (the TLS object, the socket's non-blocking calls, a wait only when
there is nothing to read or no room) rather than through trio's locks and
retries, behaves as ``trio.SSLStream``'s does.

Every scenario runs over real TCP connections on 127.0.0.1, once with the
stream under test and once with a plain ``trio.SSLStream`` over the same
kind of socket, and compares what a user sees: the negotiated version,
ALPN protocol, server name and certificates, the data both ways, the
session tickets, and how a handshake fails (garbage, a peer that leaves
or stalls, a cancellation, a certificate refused). The TLS peer is a
plain ``trio.SSLStream``, or raw bytes where it misbehaves.
"""

from __future__ import annotations

import gc
import socket
import ssl
import struct
import tracemalloc
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from test_tls_send import schedule_points
from test_tls_stream import Tap

from trio_websocket import open_websocket_url, serve_websocket
from trio_websocket._wire import fast_paths
from trio_websocket._wire.socket_stream import LeanSocketStream
from trio_websocket._wire.tls_stream import tls_stream

CA = trustme.CA()
SERVER_CERT = CA.issue_cert("example.org", "127.0.0.1")
CLIENT_CERT = CA.issue_cert("client.example.org")

Maker = Callable[..., trio.SSLStream[Any]]
MAKERS: dict[str, Maker] = {"direct": tls_stream, "trio": trio.SSLStream}
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(
    *,
    version: str | None = None,
    alpn: list[str] | None = None,
    client_certificates: bool = False,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    SERVER_CERT.configure_cert(context)
    if version is not None:
        context.minimum_version = context.maximum_version = VERSIONS[version]
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        CA.configure_trust(context)
    return context


def client_context(
    *, version: str | None = None, alpn: list[str] | None = None, certificate: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    if version is not None:
        context.minimum_version = context.maximum_version = VERSIONS[version]
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if certificate:
        CLIENT_CERT.configure_cert(context)
    return context


class Sockets:
    """Both ends of a TCP connection on 127.0.0.1: ours (a stdlib socket,
    for a lean stream) and the peer's (a stdlib socket and a trio stream
    over it, through a tap that can hold back what the peer sends)."""

    def __init__(self, ours: socket.socket, peer: socket.socket) -> None:
        self.ours = ours
        self.peer = peer
        self.peer_stream = trio.SocketStream(trio.socket.from_stdlib_socket(peer))
        self.tap = Tap(self.peer_stream)

    def lean(self) -> LeanSocketStream:
        return LeanSocketStream(self.ours)

    def waiting_for_peer(self) -> int:
        """How many bytes wait unread in the peer's socket."""
        try:
            return len(self.peer.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return 0

    async def arrived(self, size: int) -> None:
        """Wait until ``size`` bytes wait unread in our socket."""
        for _ in range(5_000):
            try:
                if len(self.ours.recv(size, socket.MSG_PEEK)) >= size:
                    return
            except BlockingIOError:
                pass
            await trio.sleep(0.001)
        raise AssertionError(f"{size} bytes never arrived")


def tcp() -> Sockets:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    for each in (ours, peer):
        each.setblocking(False)
    return Sockets(ours, peer)


def ours_and_peer(
    make: Maker,
    sockets: Sockets,
    *,
    server: bool,
    ours_context: ssl.SSLContext,
    peer_context: ssl.SSLContext,
    **kwargs: Any,
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    """The stream under test (server or client) and the peer's."""
    if server:
        ours = make(sockets.lean(), ours_context, server_side=True, **kwargs)
        peer = trio.SSLStream(sockets.tap, peer_context, server_hostname="example.org")
    else:
        ours = make(sockets.lean(), ours_context, server_hostname="example.org", **kwargs)
        peer = trio.SSLStream(sockets.tap, peer_context, server_side=True)
    return ours, peer


def default_pair(
    make: Maker, sockets: Sockets, *, server: bool = True, version: str | None = None
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    """``ours_and_peer`` with the usual contexts for each role: the server
    side's certificate (and, with ``version``, only that TLS version), the
    client side trusting it."""
    server_side, client_side = server_context(version=version), client_context()
    return ours_and_peer(
        make,
        sockets,
        server=server,
        ours_context=server_side if server else client_side,
        peer_context=client_side if server else server_side,
    )


async def serve_on_loopback(
    nursery: trio.Nursery,
    handler: Callable[[Any], Awaitable[None]],
    *,
    tls: bool = True,
    **kwargs: Any,
) -> Any:
    """``serve_websocket(handler, "127.0.0.1", 0, ...)`` started in
    ``nursery``; with ``tls``, over the usual server context (ALPN
    http/1.1, so HTTP/1.1 whatever the client offers)."""
    context = server_context(alpn=["http/1.1"]) if tls else None
    return await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, context, **kwargs))


def client_hello() -> bytes:
    """A TLS client's first flight, from a TLS object of the stdlib."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context().wrap_bio(incoming, outgoing, server_hostname="example.org")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


Outcome = tuple[str, ...]


async def outcome_of(operation: Callable[[], Awaitable[object]]) -> Outcome:
    """What ``operation`` returned, or what it raised and from what."""
    try:
        result = await operation()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.Cancelled) as exc:
        return ("raised", type(exc).__name__, type(exc.__cause__).__name__)
    return ("returned", repr(result))


async def after_failure(stream: trio.SSLStream[Any]) -> list[Outcome]:
    """How a stream whose handshake failed answers every later call."""
    outcomes = [
        await outcome_of(stream.do_handshake),
        await outcome_of(lambda: stream.send_all(b"late")),
        await outcome_of(lambda: stream.receive_some(10)),
    ]
    await stream.aclose()
    return outcomes


BROKEN: Outcome = ("raised", "BrokenResourceError", "NoneType")


# ---------------------------------------------------------------------------
# The mechanism (forced on: tests/conftest.py, fast_paths_on)


async def start_finished_with_data(
    nursery: trio.Nursery, sockets: Sockets, peer: trio.SSLStream[Any]
) -> None:
    """Starts the client ``peer``'s handshake, as a wss:// client makes it:
    once its hello has reached us, its last flight (Finished) is held back
    until its first data (a request line) is written, so that both arrive
    together."""

    async def peer_speaks() -> None:
        await peer.do_handshake()
        await peer.send_all(b"GET / HTTP/1.1")
        await sockets.tap.release()

    nursery.start_soon(peer.do_handshake)
    await sockets.arrived(1)  # (the hello)
    await trio.testing.wait_all_tasks_blocked()
    sockets.tap.holding = True  # (its Finished waits for the data)
    nursery.start_soon(peer_speaks)


async def first_read_points(make: Maker) -> int:
    """Schedule points of a server's first ``receive_some`` (which runs
    the handshake) when the client's hello is there and its last flight
    comes with its first data."""
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets, version="1.3")
        received: list[bytes | bytearray] = []

        async def receive() -> None:
            received.append(await ours.receive_some(100))

        async with trio.open_nursery() as nursery:
            await start_finished_with_data(nursery, sockets, peer)
            points = await schedule_points(receive)
        assert received == [b"GET / HTTP/1.1"]
        return points


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_server_handshake_and_its_first_read_make_one_schedule_point() -> None:
    # The server sends its flight without waiting and waits once
    # (SSLStream: two passes of the scheduler per read and per write, its
    # lock's and the socket's, and more).
    assert await first_read_points(tls_stream) == 1
    assert await first_read_points(trio.SSLStream) >= 4


async def handshake_points(make: Maker) -> int:
    """Schedule points of a server's ``do_handshake`` when the client's
    hello is there."""
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets, version="1.3")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await sockets.arrived(1)
            points = await schedule_points(ours.do_handshake)
        assert ours.version() == "TLSv1.3"
        return points


@pytest.mark.usefixtures("fast_paths_on")
async def test_do_handshake_waits_once_for_each_flight_of_the_peer() -> None:
    assert await handshake_points(tls_stream) == 1  # (the client's Finished)
    assert await handshake_points(trio.SSLStream) >= 4


async def test_with_the_fast_paths_off_the_handshake_is_trios(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fast_paths, "ENABLED", False)
    assert await handshake_points(tls_stream) >= 4


# ---------------------------------------------------------------------------
# Handshakes that succeed: the same as trio.SSLStream's


async def handshake_then_data(make: Maker, server: bool, version: str) -> tuple[object, ...]:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets, server=server, version=version)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await ours.do_handshake()
        await ours.send_all(b"ours " * 1000)
        assert await peer.receive_some(1 << 16) == b"ours " * 1000
        await peer.send_all(b"peer " * 1000)
        assert await ours.receive_some(1 << 16) == b"peer " * 1000
        await ours.do_handshake()  # (done: a checkpoint, nothing more)
        seen = (ours.version(), peer.version(), ours.cipher() == peer.cipher())
        await ours.aclose()
        assert await peer.receive_some(10) == b""  # (our close_notify)
        return seen


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_a_handshake_then_data_both_ways(server: bool, version: str) -> None:
    expected = (f"TLSv{version}", f"TLSv{version}", True)
    assert await handshake_then_data(tls_stream, server, version) == expected
    assert await handshake_then_data(trio.SSLStream, server, version) == expected


async def first_read_or_write(make: Maker, server: bool) -> None:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets, server=server)
        received: list[bytes | bytearray] = []

        async def peer_talks() -> None:
            await peer.send_all(b"hello")
            received.append(await peer.receive_some(10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_talks)
            if server:
                assert await ours.receive_some(10) == b"hello"
                await ours.send_all(b"back")
            else:
                await ours.send_all(b"back")
                assert await ours.receive_some(10) == b"hello"
        assert received == [b"back"]


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
async def test_a_handshake_started_by_the_first_read_or_write(server: bool) -> None:
    for make in MAKERS.values():
        await first_read_or_write(make, server)


async def tickets_after_the_first_write(make: Maker) -> None:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets, version="1.3")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await ours.do_handshake()
        await peer.send_all(b"request")
        assert await ours.receive_some(100) == b"request"
        await trio.sleep(0.05)
        assert sockets.waiting_for_peer() == 0
        assert not peer.session.has_ticket
        await ours.send_all(b"answer")
        assert await peer.receive_some(100) == b"answer"
        assert peer.session.has_ticket


async def test_the_session_tickets_wait_for_the_servers_first_write() -> None:
    # TLS 1.3: a server holds its session tickets back until it writes (a
    # client that does not read yet must not get them), then they come
    # first.
    for make in MAKERS.values():
        await tickets_after_the_first_write(make)


async def several_tasks_wait(make: Maker) -> None:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(make, sockets)
        received: list[bytes | bytearray] = []

        async def receive() -> None:
            received.append(await ours.receive_some(100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(receive)
            nursery.start_soon(ours.send_all, b"first")
            nursery.start_soon(ours.do_handshake)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            await peer.do_handshake()
            assert await peer.receive_some(100) == b"first"
            await peer.send_all(b"second")
        assert received == [b"second"]


async def test_several_tasks_wait_for_one_handshake() -> None:
    for make in MAKERS.values():
        await several_tasks_wait(make)


# ---------------------------------------------------------------------------
# What is negotiated: ALPN, SNI, client certificates


async def negotiated(
    make: Maker,
    server: bool,
    server_side: ssl.SSLContext,
    client_side: ssl.SSLContext,
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    """Ours and the peer, past a handshake that succeeded."""
    with trio.fail_after(10):
        ours, peer = ours_and_peer(
            make,
            tcp(),
            server=server,
            ours_context=server_side if server else client_side,
            peer_context=client_side if server else server_side,
        )
        with pytest.raises(trio.NeedHandshakeError):
            ours.selected_alpn_protocol()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await ours.do_handshake()
        return ours, peer


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (None, None)],
    ids=["h2", "http1", "none"],
)
async def test_alpn_chooses_the_same_protocol(
    server: bool, offered: list[str] | None, chosen: str | None
) -> None:
    # (The HTTP/2 server tells HTTP/2 from HTTP/1.1 by it.)
    for make in MAKERS.values():
        ours, peer = await negotiated(
            make, server, server_context(alpn=["h2", "http/1.1"]), client_context(alpn=offered)
        )
        assert ours.selected_alpn_protocol() == chosen
        assert peer.selected_alpn_protocol() == chosen


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
async def test_the_server_name_reaches_the_servers_callback(server: bool) -> None:
    for make in MAKERS.values():
        names: list[str | None] = []
        server_side = server_context()
        server_side.sni_callback = partial(record_server_name, names)
        await negotiated(make, server, server_side, client_context())
        assert names == ["example.org"]


def record_server_name(
    names: list[str | None], _: ssl.SSLObject, server_name: str | None, __: ssl.SSLContext
) -> None:
    names.append(server_name)


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
async def test_a_client_certificate_the_server_requires(server: bool) -> None:
    for make in MAKERS.values():
        ours, peer = await negotiated(
            make,
            server,
            server_context(client_certificates=True),
            client_context(certificate=True),
        )
        certificate = (ours if server else peer).getpeercert()
        assert dict(certificate["subjectAltName"]) == {"DNS": "client.example.org"}


async def refused_for_no_certificate(make: Maker, version: str) -> tuple[object, ...]:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = ours_and_peer(
            make,
            sockets,
            server=True,
            ours_context=server_context(version=version, client_certificates=True),
            peer_context=client_context(),
        )
        peer_outcome: list[Outcome] = []

        async def peer_handshake() -> None:
            peer_outcome.append(await outcome_of(peer.do_handshake))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer_handshake)
            handshake = await outcome_of(ours.do_handshake)
            later = await after_failure(ours)
        return handshake, later, peer_outcome


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_a_client_without_the_certificate_the_server_requires(version: str) -> None:
    # The server's handshake fails (and in TLS 1.2 the client's with it).
    direct = await refused_for_no_certificate(tls_stream, version)
    assert direct[:2] == (("raised", "BrokenResourceError", "SSLError"), [BROKEN] * 3)
    assert direct == await refused_for_no_certificate(trio.SSLStream, version)


# ---------------------------------------------------------------------------
# Handshakes that fail: the same as trio.SSLStream's


async def garbage_from_the_peer(make: Maker, server: bool) -> tuple[object, ...]:
    with trio.fail_after(10):
        sockets = tcp()
        context = server_context() if server else client_context()
        if server:
            ours = make(sockets.lean(), context, server_side=True)
        else:
            ours = make(sockets.lean(), context, server_hostname="example.org")
        await sockets.peer_stream.send_all(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
        handshake = await outcome_of(ours.do_handshake)
        later = await after_failure(ours)
        # What reached the peer: our hello as a client, then our end (the
        # TLS object's alert is never sent, as with trio's).
        received = b""
        while chunk := await sockets.peer_stream.receive_some(1 << 16):
            received += chunk
        return handshake, later, received[:1]


@pytest.mark.parametrize("server", [True, False], ids=["ours-server", "ours-client"])
async def test_a_peer_that_sends_garbage(server: bool) -> None:
    direct = await garbage_from_the_peer(tls_stream, server)
    assert direct == (
        ("raised", "BrokenResourceError", "SSLError"),
        [BROKEN] * 3,
        b"" if server else b"\x16",
    )
    assert direct == await garbage_from_the_peer(trio.SSLStream, server)


async def peer_leaves(
    make: Maker, https_compatible: bool, when: str, call: str
) -> tuple[Outcome, list[Outcome]]:
    with trio.fail_after(10):
        sockets = tcp()
        ours = make(
            sockets.lean(), server_context(), server_side=True, https_compatible=https_compatible
        )
        if when != "before-hello":
            await sockets.peer_stream.send_all(client_hello())
        if when.startswith("reset"):
            # (Lingering 0 s: the close resets the connection.)
            linger = struct.pack("ii", 1, 0)
            sockets.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sockets.peer.close()
        operation = ours.do_handshake if call == "do_handshake" else ours.receive_some
        return await outcome_of(operation), await after_failure(ours)


@pytest.mark.parametrize("https_compatible", [False, True])
@pytest.mark.parametrize("when", ["before-hello", "after-hello", "reset-after-hello"])
@pytest.mark.parametrize("call", ["do_handshake", "receive_some"])
async def test_a_peer_that_leaves_mid_handshake(
    https_compatible: bool, when: str, call: str
) -> None:
    # An https_compatible stream's receive_some reads the peer's leaving
    # (not a reset) as the end of the data; everything else breaks.
    first, later = direct = await peer_leaves(tls_stream, https_compatible, when, call)
    if call == "receive_some" and https_compatible and not when.startswith("reset"):
        assert first == ("returned", "b''")
    else:
        assert first[:2] == ("raised", "BrokenResourceError")
    assert later[1:] == [BROKEN] * 2
    assert direct == await peer_leaves(trio.SSLStream, https_compatible, when, call)


async def stalled(make: Maker, stall: str, call: str) -> tuple[object, ...]:
    with trio.fail_after(10):
        sockets = tcp()
        ours = make(sockets.lean(), server_context(), server_side=True)
        if stall == "after-hello":
            await sockets.peer_stream.send_all(client_hello())
        with trio.move_on_after(0.1) as scope:
            if call == "do_handshake":
                await ours.do_handshake()
            else:
                await ours.receive_some(10)
        # (After its hello, a client got our flight: nothing more.)
        sent = sockets.waiting_for_peer() > 0
        return scope.cancelled_caught, sent, await after_failure(ours)


@pytest.mark.parametrize("stall", ["before-hello", "after-hello"])
@pytest.mark.parametrize("call", ["do_handshake", "receive_some"])
async def test_a_stalled_handshake_cancelled_by_a_timeout_breaks_the_stream(
    stall: str, call: str
) -> None:
    direct = await stalled(tls_stream, stall, call)
    assert direct == (True, stall == "after-hello", [BROKEN] * 3)
    assert direct == await stalled(trio.SSLStream, stall, call)


async def cancelled_before(make: Maker) -> tuple[object, ...]:
    with trio.fail_after(10):
        sockets = tcp()
        await sockets.peer_stream.send_all(client_hello())
        await sockets.arrived(1)
        ours = make(sockets.lean(), server_context(), server_side=True)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ours.do_handshake()
        return sockets.waiting_for_peer(), await after_failure(ours)


async def test_a_handshake_cancelled_before_it_starts_breaks_the_stream() -> None:
    direct = await cancelled_before(tls_stream)
    assert direct == (0, [BROKEN] * 3)
    assert direct == await cancelled_before(trio.SSLStream)


async def test_a_failed_handshake_leaves_other_streams_alone() -> None:
    # (Streams past their handshake share its finished state.)
    ours, peer = await negotiated(tls_stream, True, server_context(), client_context())
    with trio.fail_after(10):
        bad = tcp()
        failing = tls_stream(bad.lean(), server_context(), server_side=True)
        await bad.peer_stream.send_all(b"garbage" * 10)
        with pytest.raises(trio.BrokenResourceError):
            await failing.do_handshake()
        await peer.send_all(b"still")
        assert await ours.receive_some(10) == b"still"
        await ours.send_all(b"fine")
        assert await peer.receive_some(10) == b"fine"


# ---------------------------------------------------------------------------
# What an idle connection keeps


@pytest.mark.usefixtures("fast_paths_on")
async def test_an_idle_stream_waiting_to_read_keeps_less_than_trios() -> None:
    # Past its handshake and waiting in receive_some: no handshake state
    # of its own, no coroutine of ours between the read and trio's wait,
    # no frame object from the TLS object's "want read".
    count = 40

    async def held_by(make: Maker, nursery: trio.Nursery) -> float:
        streams = []
        for _ in range(count):
            sockets = tcp()
            ours, peer = default_pair(make, sockets)
            async with trio.open_nursery() as handshakes:
                handshakes.start_soon(peer.do_handshake)
                await ours.do_handshake()
            await ours.send_all(b"x")  # (the tickets go)
            assert await peer.receive_some(10) == b"x"
            streams.append((sockets, ours, peer))
        gc.collect()
        before = tracemalloc.take_snapshot()
        for _, ours, _ in streams:
            nursery.start_soon(ours.receive_some, 10)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.take_snapshot()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        nursery.cancel_scope.cancel()
        return held / count

    held = {}
    tracemalloc.start()
    try:
        for name, make in MAKERS.items():
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    held[name] = await held_by(make, nursery)
    finally:
        tracemalloc.stop()
    # (About 870 B less; 400 B before the shared handshake state and the
    # flatter wait.)
    assert held["direct"] < held["trio"] - 650, held


# ---------------------------------------------------------------------------
# Through the server


async def test_the_server_drops_bad_tls_clients_and_serves_the_rest() -> None:
    async def echo(request: Any) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())

    client_side = client_context()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await serve_on_loopback(nursery, echo, connect_timeout=0.5)
            address = ("127.0.0.1", server.port)
            stalled = await trio.open_tcp_stream(*address)
            await stalled.send_all(client_hello())
            garbage = await trio.open_tcp_stream(*address)
            await garbage.send_all(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
            leaving = await trio.open_tcp_stream(*address)
            await leaving.send_all(client_hello())
            await leaving.aclose()
            for _ in range(2):
                async with open_websocket_url(
                    f"wss://127.0.0.1:{server.port}/", ssl_context=client_side
                ) as ws:
                    await ws.send_message("hello")
                    assert await ws.get_message() == "hello"
            # The garbage got no answer but its end; the stalled client is
            # dropped after connect_timeout.
            assert await garbage.receive_some(100) == b""
            with trio.fail_after(5):
                while await stalled.receive_some(1 << 16):
                    pass
            nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("fast_paths_on")
async def test_the_first_read_after_the_handshake_reads_the_socket_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client's last flight comes with its first data (a wss:// request):
    # the handshake's own read took both, and a read of the socket to top
    # the data up would find nothing (a system call and an exception per
    # wss:// handshake).
    found_nothing = 0
    receive_now = LeanSocketStream.receive_now

    def counting(stream: LeanSocketStream, max_bytes: int) -> bytes | None:
        nonlocal found_nothing
        data = receive_now(stream, max_bytes)
        found_nothing += data is None
        return data

    monkeypatch.setattr(LeanSocketStream, "receive_now", counting)
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(tls_stream, sockets, version="1.3")
        async with trio.open_nursery() as nursery:
            await start_finished_with_data(nursery, sockets, peer)
            await sockets.arrived(1)
            await trio.testing.wait_all_tasks_blocked()
            found_nothing = 0
            assert await ours.receive_some(100) == b"GET / HTTP/1.1"
    assert found_nothing == 0
