"""The close echo over TLS (``_wire.tls_stream.send_before_closing``): a
connection that answers the peer's close frame and then closes its stream
writes the echo, over a stream on the direct paths, without a schedule
point of its own (the ``aclose`` right after makes the pair's one), as it
already did over a plain socket (``send_now``). Everything else about the
write is ``send_all``'s: the cancellation check first, every byte
delivered in order when the socket has no room, the same on any other
stream."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from conftest import ReaderSteps
from server_fixtures import upgrade_request
from test_tls_send import MAKERS, connected, read_exactly, schedule_points
from test_tls_stream import client_context, server_context

from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket
from trio_websocket._wire.tls_stream import send_before_closing, tls_stream

# A client's close frame, code 1000, masked with a zero key (so its payload
# reads as is), and the server's unmasked echo of it.
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
ECHO_1000 = b"\x88\x02\x03\xe8"


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_write_before_closing_makes_no_schedule_point_of_its_own() -> None:
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        ours = connection.ours
        assert await schedule_points(lambda: send_before_closing(ours, b"bye")) == 0
        # (A plain send_all: one.)
        assert await schedule_points(lambda: ours.send_all(b"!")) == 1
        assert await schedule_points(ours.aclose) >= 1
        assert await read_exactly(connection.peer, 4) == b"bye!"
        assert await connection.peer.receive_some(10) == b""


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_write_before_closing_checks_for_cancellation_first() -> None:
    with trio.fail_after(10):
        connection = await connected(tls_stream)
        ours = connection.ours
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await send_before_closing(ours, b"never")
        # Nothing was written, and the stream is as it was.
        await ours.send_all(b"after")
        assert await read_exactly(connection.peer, 5) == b"after"


async def test_a_write_before_closing_that_waits_for_room_delivers_everything() -> None:
    # Small socket buffers: the write waits (a schedule point of its own,
    # as send_all's) while the peer reads; every byte arrives, in order.
    data = bytes(index % 251 for index in range(200_000))
    for name, make in MAKERS.items():
        with trio.fail_after(30):
            connection = await connected(make, small_buffers=True)
            received: list[bytes] = []

            async def read() -> None:
                await trio.sleep(0.05)
                received.append(await read_exactly(connection.peer, len(data)))  # noqa: B023

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await send_before_closing(connection.ours, data)
            await connection.ours.aclose()
            assert received == [data], name


async def test_any_other_stream_writes_with_send_all() -> None:
    with trio.fail_after(10):
        # A plain trio.SSLStream: its own send_all, its schedule points.
        connection = await connected(trio.SSLStream)
        points = await schedule_points(lambda: send_before_closing(connection.ours, b"x"))
        assert points >= 1
        assert await read_exactly(connection.peer, 1) == b"x"
        left, right = trio.testing.memory_stream_pair()
        # Any other stream: as many as its send_all makes.
        expected = await schedule_points(lambda: left.send_all(b"a"))
        assert await schedule_points(lambda: send_before_closing(left, b"b")) == expected
        assert await right.receive_some(10) == b"ab"


@pytest.mark.usefixtures("fast_paths_on")
async def test_the_server_echoes_a_close_over_tls_in_one_step_less(
    nursery: trio.Nursery,
) -> None:
    # The reader, parked on an idle TLS connection, gets the client's close
    # frame: it wakes, echoes, closes the stream (one schedule point), and
    # ends. With the echo's own schedule point it took a step more.
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with pytest.raises(ConnectionClosed):
            await ws.get_message()

    with trio.fail_after(10):
        server: Any = await nursery.start(
            serve_websocket, handler, "127.0.0.1", 0, server_context()
        )
        client = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", server.port),
            client_context(),
            server_hostname="example.org",
        )
        await client.send_all(upgrade_request())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await client.receive_some(1024)
        assert answer.startswith(b"HTTP/1.1 101 ")
        # Let the reader start and wait for data (well within its quiet
        # first read's deadline).
        await trio.sleep(0.1)
        steps = ReaderSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            await client.send_all(CLOSE_1000)
            assert await read_exactly(client, len(ECHO_1000)) == ECHO_1000
            await steps.ended.wait()
        finally:
            trio.lowlevel.remove_instrument(steps)
        await client.aclose()
    assert steps.steps == 2
