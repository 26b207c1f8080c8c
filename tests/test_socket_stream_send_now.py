"""``LeanSocketStream.send_now`` and ``receive_now``: what the socket
takes of a list of buffers, or has to read, at once, with ``send_all``'s
and ``receive_some``'s errors (what the HTTP/2 connection's reader,
write-through and writer rely on; see ``_h2.connection``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trio_websocket._wire import socket_stream
from trio_websocket._wire.socket_stream import LeanSocketStream


@pytest.fixture
def pair() -> Iterator[tuple[LeanSocketStream, socket.socket]]:
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
    yield LeanSocketStream(ours), theirs
    ours.close()
    theirs.close()


def read_all(sock: socket.socket) -> bytes:
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def test_buffers_go_out_as_one_stream_in_order(
    pair: tuple[LeanSocketStream, socket.socket],
) -> None:
    stream, peer = pair
    data = bytes(range(256)) * 4
    buffers: list[bytes | memoryview] = [b"head", memoryview(data)[10:20], b"", data[:3]]
    assert stream.send_now(buffers) == 4 + 10 + 3
    assert read_all(peer) == b"head" + data[10:20] + data[:3]


def test_a_full_socket_takes_part_then_nothing(
    pair: tuple[LeanSocketStream, socket.socket],
) -> None:
    stream, peer = pair
    big = b"y" * (1 << 20)
    taken = stream.send_now([b"x" * 100, big])
    assert 100 < taken < 100 + len(big)
    assert stream.send_now([big]) == 0
    assert read_all(peer) == (b"x" * 100 + big)[:taken]


def test_at_most_iov_max_buffers_at_once(
    pair: tuple[LeanSocketStream, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, peer = pair
    monkeypatch.setattr(socket_stream, "_IOV_MAX", 3)
    assert stream.send_now([b"a", b"b", b"c", b"d", b"e"]) == 3
    assert read_all(peer) == b"abc"


async def test_errors_are_send_alls(pair: tuple[LeanSocketStream, socket.socket]) -> None:
    stream, peer = pair
    # Busy while a task waits for room (the HTTP/2 writer does).
    stream.send_now([b"z" * (1 << 20)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.wait_send_all_might_not_block)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            stream.send_now([b"more"])
        nursery.cancel_scope.cancel()
    # Broken once the peer is gone, closed once we closed it.
    peer.close()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(3):  # (the first send may still be taken)
            stream.send_now([b"after"])
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        stream.send_now([b"after"])


async def test_nothing_after_send_eof(pair: tuple[LeanSocketStream, socket.socket]) -> None:
    stream, _ = pair
    await stream.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        stream.send_now([b"after"])


async def test_receive_now_reads_what_is_there_or_says_none(
    pair: tuple[LeanSocketStream, socket.socket],
) -> None:
    stream, peer = pair
    assert stream.receive_now(100) is None
    peer.send(b"hello")
    assert stream.receive_now(3) == b"hel"
    assert stream.receive_now(100) == b"lo"
    assert stream.receive_now(100) is None
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.wait_readable)
            await trio.testing.wait_all_tasks_blocked()
            peer.send(b"!")
        assert stream.receive_now(100) == b"!"
        peer.shutdown(socket.SHUT_WR)
        await stream.wait_readable()
    assert stream.receive_now(100) == b""


async def test_receive_now_errors_are_receive_somes(
    pair: tuple[LeanSocketStream, socket.socket],
) -> None:
    stream, peer = pair
    # A reset (the peer closed with unread data of ours: ECONNRESET) is
    # broken.
    stream.send_now([b"unread"])
    peer.close()
    with pytest.raises(trio.BrokenResourceError):
        stream.receive_now(100)


async def test_a_wait_for_reading_ends_when_the_stream_is_closed(
    pair: tuple[LeanSocketStream, socket.socket],
) -> None:
    stream, _ = pair
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.wait_readable()

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        stream.receive_now(100)
