"""What the handshake and closing paths keep while they take fewer
schedule points (issue 17): ``get_message`` is still a checkpoint in
every way it can end, ``aclose`` of a connection already over is one too,
the close echo written without waiting keeps every byte in order when the
socket takes only part of it, and a request head that comes in pieces is
still read whole."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
import trio.testing
from server_fixtures import read_until_eof, upgrade_request

from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket
from trio_websocket._core.sending import ConnectionSending
from trio_websocket.testing import open_memory_pair


async def test_get_message_on_a_closed_connection_is_a_checkpoint() -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await client.aclose()
            with pytest.raises(ConnectionClosed):
                await server.get_message()
            # The inbox is closed and empty: raising at once, still a
            # cancellation point and a schedule point.
            with trio.testing.assert_checkpoints(), pytest.raises(ConnectionClosed):
                await server.get_message()
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await server.get_message()


async def test_get_message_waiting_for_the_close_raises_connection_closed() -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.aclose, 4002, "bye")
                with trio.testing.assert_checkpoints(), pytest.raises(ConnectionClosed) as raised:
                    await server.get_message()
            assert raised.value.reason.code == 4002
            assert raised.value.reason.reason == "bye"


async def test_messages_before_the_close_are_still_delivered() -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await client.send_message("one")
            await client.send_message(b"two")
            await client.aclose()
            assert await server.get_message() == "one"
            assert await server.get_message() == b"two"
            with pytest.raises(ConnectionClosed):
                await server.get_message()


class PartialSocket:
    """A stream whose ``send_now`` takes ``room`` bytes at most."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.wire = bytearray()

    def send_now(self, buffers: list[bytes | bytearray]) -> int:
        data = b"".join(buffers)[: self.room]
        self.wire += data
        return len(data)


def sending_state(stream: object, outbox: list[bytes | bytearray]) -> SimpleNamespace:
    return SimpleNamespace(
        _stream=stream,
        _outbox=list(outbox),
        _outbox_bytes=sum(map(len, outbox)),
        _writing=False,
        _ends_with_close=False,
        _bytes_sent=0,
    )


@pytest.mark.parametrize("room", [0, 1, 3, 4, 5, 7, 8, 9, 100])
def test_the_outbox_written_at_once_keeps_what_the_socket_did_not_take(room: int) -> None:
    outbox: list[bytes | bytearray] = [b"abc", bytearray(b"defg"), b"hi"]
    stream = PartialSocket(room)
    state = sending_state(stream, outbox)
    emptied = ConnectionSending._write_outbox_now(state)  # type: ignore[arg-type]
    whole = b"abcdefghi"
    assert emptied == (room >= len(whole))
    assert bytes(stream.wire) + b"".join(state._outbox) == whole
    assert state._outbox_bytes == sum(map(len, state._outbox)) == len(whole) - len(stream.wire)
    assert state._bytes_sent == len(stream.wire)
    assert all(state._outbox)  # no empty piece left behind


def test_the_outbox_is_not_written_at_once_behind_a_writer_or_without_send_now() -> None:
    busy = sending_state(PartialSocket(100), [b"x"])
    busy._writing = True
    assert not ConnectionSending._write_outbox_now(busy)  # type: ignore[arg-type]
    assert busy._outbox == [b"x"] and busy._stream.wire == b""
    plain = sending_state(object(), [b"x"])
    assert not ConnectionSending._write_outbox_now(plain)  # type: ignore[arg-type]
    assert plain._outbox == [b"x"]


@pytest.mark.parametrize("piece", [1, 7, 64])
async def test_a_request_head_in_pieces_is_read_whole(nursery: trio.Nursery, piece: int) -> None:
    """Over TCP: the first read of a head takes what is there without
    waiting; the rest comes by the stream's usual reads."""
    accepted: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        accepted.append(ws.path)
        await ws.aclose()

    with trio.fail_after(10):
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        client = await trio.open_tcp_stream("127.0.0.1", server.port)
        head = upgrade_request("/pieces")
        for start in range(0, len(head), piece):
            await client.send_all(head[start : start + piece])
            await trio.sleep(0.001)
        answer = b""
        while not answer.endswith(b"\r\n\r\n\x88\x02\x03\xe8"):  # the 101, our close frame
            chunk = await client.receive_some(1024)
            assert chunk, answer
            answer += chunk
        await client.send_all(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # the answer
        assert await read_until_eof(client) == b""
        await client.aclose()
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert accepted == ["/pieces"]
