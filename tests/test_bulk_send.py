"""A big write lets the kernel hold all of it unsent.

A lean socket's ``send_all`` of more than ``BULK_WRITE`` bytes that the
socket does not take at once, and ``_wire.tls_stream``'s direct
``send_all`` of more than one slice, raise the socket's
``TCP_NOTSENT_LOWAT`` (``LeanSocketStream.allow_unsent``) for the time of
the call and put the socket's own value back before it returns, whatever
happens: the write's bytes are the stream's next bytes either way, and
what is written after it waits for them either way. Real TCP connections
on 127.0.0.1; the TLS peer is a plain ``trio.SSLStream``, the plain peer a
``trio.SocketStream``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from test_tls_send import MAKERS, connected, read_exactly, schedule_points

from trio_websocket._wire.socket_stream import BULK_WRITE, NOTSENT_LOWAT, LeanSocketStream
from trio_websocket._wire.tls_stream import tls_stream

LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)

pytestmark = pytest.mark.skipif(LOWAT is None, reason="no TCP_NOTSENT_LOWAT here")


def lowat_of(sock: socket.socket) -> int:
    assert LOWAT is not None
    return sock.getsockopt(socket.IPPROTO_TCP, LOWAT)


def set_lowat(sock: socket.socket, value: int) -> None:
    assert LOWAT is not None
    sock.setsockopt(socket.IPPROTO_TCP, LOWAT, value)


def watch_sends(monkeypatch: pytest.MonkeyPatch, sock: socket.socket) -> list[int]:
    """The socket's TCP_NOTSENT_LOWAT at every ``send_now`` of a lean
    socket (the direct write's sends)."""
    seen: list[int] = []
    real = LeanSocketStream.send_now

    def send_now(self: LeanSocketStream, buffers: Any) -> int:
        seen.append(lowat_of(sock))
        return real(self, buffers)

    monkeypatch.setattr(LeanSocketStream, "send_now", send_now)
    return seen


def tcp_sockets(small_buffers: bool = False) -> tuple[socket.socket, socket.socket]:
    """(ours, peer's): a connected TCP pair on 127.0.0.1, ours
    non-blocking with trio's 16 KiB mark, as the library's sockets."""
    with socket.socket() as listener:
        peer = socket.socket()
        if small_buffers:
            for each in (listener, peer):
                each.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
                each.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        peer.connect(listener.getsockname())
        ours, _ = listener.accept()
    ours.setblocking(False)
    peer.setblocking(False)
    set_lowat(ours, NOTSENT_LOWAT)
    return ours, peer


def lean_stream_and_peer() -> tuple[socket.socket, LeanSocketStream, trio.SocketStream]:
    """Our socket of a small-buffered pair, the library's stream over it,
    and the peer's end as a trio stream."""
    ours, peer_sock = tcp_sockets(small_buffers=True)
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(peer_sock))
    return ours, LeanSocketStream(ours), peer


async def wait_until_stuck(sock: socket.socket) -> None:
    """Let a send_all on ``sock`` run until it waits for room."""
    await trio.testing.wait_all_tasks_blocked()


# ---------------------------------------------------------------------------
# The mechanism (forced on: tests/conftest.py, fast_paths_on)


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_big_plain_write_that_waits_raises_the_mark_for_its_time_only() -> None:
    message = bytes(index % 251 for index in range(4 << 20))
    ours, stream, peer = lean_stream_and_peer()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, message)
            await wait_until_stuck(ours)
            # Waiting for room, with room for all of its rest in the kernel
            # (the old code: 16 KiB, a wait and a pass per few KiB).
            assert lowat_of(ours) > len(message) // 2
            assert await read_exactly(peer, len(message)) == message
        assert lowat_of(ours) == NOTSENT_LOWAT
        await stream.send_all(b"after")
        assert await read_exactly(peer, 5) == b"after"
        await stream.aclose()
        await peer.aclose()


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_plain_write_up_to_the_bound_leaves_the_mark_alone() -> None:
    message = b"s" * BULK_WRITE
    ours, stream, peer = lean_stream_and_peer()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, message)
            await wait_until_stuck(ours)
            assert lowat_of(ours) == NOTSENT_LOWAT
            assert await read_exactly(peer, len(message)) == message
        await stream.aclose()
        await peer.aclose()


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_cancelled_big_plain_write_puts_the_mark_back() -> None:
    ours, peer_sock = tcp_sockets(small_buffers=True)
    stream = LeanSocketStream(ours)
    with trio.fail_after(30):
        with trio.move_on_after(0.2) as scope:
            await stream.send_all(b"c" * (4 << 20))  # the peer reads nothing
        assert scope.cancelled_caught
        assert lowat_of(ours) == NOTSENT_LOWAT
        await stream.aclose()
        peer_sock.close()


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_big_write_raises_the_low_water_mark_for_its_time_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = bytes(index % 251 for index in range(1 << 20)) + b"tail"
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        set_lowat(connection.sock, NOTSENT_LOWAT)  # (as the library's sockets get it)
        seen = watch_sends(monkeypatch, connection.sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.ours.send_all, message)
            assert await read_exactly(connection.peer, len(message)) == message
        # Every slice went out with room for the whole write (the old code:
        # 16 KiB each time, so most sends were partial and waited).
        assert len(seen) >= 5
        assert min(seen) >= len(message)
        assert lowat_of(connection.sock) == NOTSENT_LOWAT
        # A small write leaves it alone, and stays one schedule point.
        seen.clear()
        assert await schedule_points(lambda: connection.ours.send_all(b"small")) == 1
        assert seen == [NOTSENT_LOWAT]
        assert await read_exactly(connection.peer, 5) == b"small"


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_big_write_is_still_one_schedule_point_when_the_socket_takes_it() -> None:
    message = b"m" * (300 * 1024)
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        set_lowat(connection.sock, NOTSENT_LOWAT)
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                received.append(await read_exactly(connection.peer, len(message)))

            nursery.start_soon(read)
            points = await schedule_points(lambda: connection.ours.send_all(message))
        assert points >= 1
        assert received == [message]


@pytest.mark.usefixtures("fast_paths_on")
@pytest.mark.parametrize("own", [100_000, 8 << 20, 0])
async def test_the_sockets_own_value_is_put_back(
    monkeypatch: pytest.MonkeyPatch, own: int
) -> None:
    # A user's value (or trio's, or none: 0, the system's default) is read
    # first and put back; one already as high, or none, is not touched.
    message = b"u" * (1 << 20)
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        set_lowat(connection.sock, own)
        seen = watch_sends(monkeypatch, connection.sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.ours.send_all, message)
            assert await read_exactly(connection.peer, len(message)) == message
        assert lowat_of(connection.sock) == own
        if own == 100_000:
            assert min(seen) >= len(message)
        else:
            assert set(seen) == {own}


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_cancelled_big_write_puts_the_value_back_and_breaks_the_stream() -> None:
    with trio.fail_after(30):
        connection = await connected(tls_stream, small_buffers=True)
        set_lowat(connection.sock, NOTSENT_LOWAT)
        ours = connection.ours
        with trio.move_on_after(0.2) as scope:
            await ours.send_all(b"c" * (4 << 20))  # the peer reads nothing
        assert scope.cancelled_caught
        assert lowat_of(connection.sock) == NOTSENT_LOWAT
        with pytest.raises(trio.BrokenResourceError):
            await ours.send_all(b"more")
        await ours.aclose()


async def test_allow_unsent_leaves_a_unix_socket_and_a_closed_one_alone() -> None:
    left, right = socket.socketpair()
    with right:
        left.setblocking(False)
        stream = LeanSocketStream(left)
        assert stream.allow_unsent(1 << 20) is None
        stream.restore_unsent(None)
        await stream.aclose()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        with client:
            accepted, _ = listener.accept()
            accepted.setblocking(False)
            set_lowat(accepted, NOTSENT_LOWAT)
            stream = LeanSocketStream(accepted)
            old = stream.allow_unsent(1 << 20)
            assert old == NOTSENT_LOWAT
            assert lowat_of(accepted) == 1 << 20
            stream.restore_unsent(old)
            assert lowat_of(accepted) == NOTSENT_LOWAT
            # A write bigger than a C int: the most the option takes.
            old = stream.allow_unsent(1 << 40)
            assert lowat_of(accepted) == 2**31 - 1
            stream.restore_unsent(old)
            assert lowat_of(accepted) == NOTSENT_LOWAT
            await stream.aclose()
            stream.restore_unsent(old)  # closed meanwhile: nothing, no error
            assert stream.allow_unsent(1 << 20) is None


# ---------------------------------------------------------------------------
# The same as trio.SocketStream and trio.SSLStream (either mode of the fast
# paths)


async def test_big_plain_writes_arrive_as_with_socketstream() -> None:
    first = bytes(index % 239 for index in range(3 << 19)) + b"end"
    second = bytes(index % 233 for index in range(BULK_WRITE + 1))
    for name in ("lean", "trio"):
        ours, peer_sock = tcp_sockets(small_buffers=True)
        stream: trio.abc.Stream
        if name == "lean":
            stream = LeanSocketStream(ours)
        else:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(peer_sock))
        got: list[bytes] = []

        async def receive(peer: trio.SocketStream, got: list[bytes]) -> None:
            got.append(await read_exactly(peer, len(first) + len(second) + 5, 5_000))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, peer, got)
                await stream.send_all(first)
                assert lowat_of(ours) == NOTSENT_LOWAT, name
                await stream.send_all(memoryview(second))
                await stream.send_all(b"after")
            assert got == [first + second + b"after"], name
            assert lowat_of(ours) == NOTSENT_LOWAT, name
            await stream.aclose()
            await peer.aclose()


async def test_big_writes_with_the_low_water_mark_arrive_as_with_sslstream() -> None:
    # The library's sockets carry trio's 16 KiB mark: big writes through a
    # peer that reads slowly, then a small one behind them, arrive whole
    # and in order, and the mark is the socket's again after each.
    first = bytes(index % 239 for index in range(3 << 19)) + b"end"
    second = bytes(index % 233 for index in range(300_001))
    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            set_lowat(connection.sock, NOTSENT_LOWAT)
            got: list[bytes] = []

            async def receive(peer: trio.SSLStream[Any], got: list[bytes]) -> None:
                got.append(await read_exactly(peer, len(first) + len(second) + 5, 5_000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, connection.peer, got)
                await connection.ours.send_all(first)
                assert lowat_of(connection.sock) == NOTSENT_LOWAT, name
                await connection.ours.send_all(memoryview(second))
                await connection.ours.send_all(b"after")
            assert got == [first + second + b"after"], name
            assert lowat_of(connection.sock) == NOTSENT_LOWAT, name
