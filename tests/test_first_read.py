"""A server reader's first read on a lean socket or a TLS stream over one
(``_core.receiving``, "The first read"): what the stream already has is
taken at once, without the
quiet deadline's scope and without a schedule point of its own (the
task's step has only just begun); only when nothing is there does the
read wait, with the deadline, as before. A client that closes right
after the 101 is answered within the reader's first step."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from conftest import ReaderSteps
from server_fixtures import upgrade_request
from test_tls_send import connected
from test_tls_stream import client_context, server_context

from trio_websocket import ConnectionClosed, wrap_server_stream
from trio_websocket._wire.socket_stream import LeanSocketStream
from trio_websocket._wire.tls_stream import receive_at_once, tls_stream

# A client's close frame (code 1000, zero mask key) and the server's echo.
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
ECHO_1000 = b"\x88\x02\x03\xe8"


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_close_already_there_is_answered_in_the_readers_first_step(
    nursery: trio.Nursery,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with theirs, trio.fail_after(10):
        theirs.sendall(upgrade_request())
        request = await wrap_server_stream(nursery, LeanSocketStream(ours))
        # The client's close is on the socket before the reader starts.
        theirs.sendall(CLOSE_1000)
        steps = ReaderSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            ws = await request.accept()
            await steps.ended.wait()
        finally:
            trio.lowlevel.remove_instrument(steps)
        # Its first step read, echoed and closed (the one schedule point,
        # aclose's); the second ended it. (With a read that made one of
        # its own: three.)
        assert steps.steps == 2
        assert ws.closed is not None and ws.closed.code == 1000
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        theirs.settimeout(5)
        answer = read_until(theirs, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101 ")
        rest = answer.partition(b"\r\n\r\n")[2]
        while len(rest) < len(ECHO_1000):
            rest += theirs.recv(100)
        assert rest == ECHO_1000
        assert theirs.recv(100) == b""


async def test_a_first_read_with_nothing_there_waits_for_the_data(
    nursery: trio.Nursery,
) -> None:
    # (In either mode of the fast paths.) Nothing on the socket when the
    # reader starts: it waits, and a message that comes later is read.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with theirs, trio.fail_after(10):
        theirs.sendall(upgrade_request())
        request = await wrap_server_stream(nursery, LeanSocketStream(ours))
        ws = await request.accept()
        await trio.sleep(0.05)
        theirs.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # "hi", zero mask key
        assert await ws.get_message() == "hi"
        theirs.sendall(CLOSE_1000)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


# ---------------------------------------------------------------------------
# Over TLS (``_wire.tls_stream.receive_at_once``)


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_close_already_there_over_tls_is_answered_in_the_first_step(
    nursery: trio.Nursery,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    server_stream = tls_stream(
        LeanSocketStream(ours), server_context(), server_side=True, https_compatible=True
    )  # (as the server makes them: its aclose sends no close_notify)
    client = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(theirs)),
        client_context(),
        server_hostname="example.org",
        https_compatible=True,
    )
    request_sent = trio.Event()

    async def send_request() -> None:
        await client.send_all(upgrade_request())  # (the handshake first)
        request_sent.set()

    with trio.fail_after(10):
        nursery.start_soon(send_request)
        request = await wrap_server_stream(nursery, server_stream)
        await request_sent.wait()
        await client.send_all(CLOSE_1000)  # on the socket before the reader starts
        steps = ReaderSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            ws = await request.accept()
            await steps.ended.wait()
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 2  # (three with a read of its own schedule point)
        assert ws.closed is not None and ws.closed.code == 1000
        received = b""
        while True:
            data = await client.receive_some(65536)
            if not data:
                break
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert rest == ECHO_1000
        await client.aclose()


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_read_at_once_takes_whole_records_and_keeps_the_rest() -> None:
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        ours = connection.ours
        # Nothing there: None, and nothing changed.
        assert receive_at_once(ours, 100) is None
        await connection.peer_sends(b"abc")
        assert receive_at_once(ours, 100) == b"abc"
        # Part of a record: None; the bytes wait for the next read.
        connection.tap.holding = True
        await connection.peer.send_all(b"x" * 1000)
        record = bytes(connection.tap.held)
        connection.tap.held = bytearray()
        connection.tap.holding = False
        await connection.tap.inner.send_all(record[:500])
        await connection.arrived(500)
        assert receive_at_once(ours, 2000) is None
        await connection.tap.inner.send_all(record[500:])
        assert await ours.receive_some(2000) == b"x" * 1000
        # max_bytes is checked as receive_some checks it.
        with pytest.raises(ValueError):
            receive_at_once(ours, 0)
        # The end of the data.
        await connection.peer.aclose()
        await connection.arrived(1)
        assert receive_at_once(ours, 100) == b""


async def test_a_read_at_once_is_none_where_it_cannot_read_directly() -> None:
    with trio.fail_after(10):
        # A plain trio.SSLStream (so with the fast paths off), and a stream
        # that is no TLS stream.
        connection = await connected(trio.SSLStream)
        await connection.peer_sends(b"abc")
        assert receive_at_once(connection.ours, 100) is None
        assert await connection.ours.receive_some(100) == b"abc"
        left, _ = trio.testing.memory_stream_pair()
        assert receive_at_once(left, 100) is None
