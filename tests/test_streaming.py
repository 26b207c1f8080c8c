"""Streamed messages: ``send_fragments`` (a message sent in pieces, one frame
per piece) and ``receive_fragments`` (a message received piece by piece),
and how they mix with ``send_message`` / ``get_message`` on one connection.

The wire is checked with a hand-driven wsproto peer (``RawPeer``): it shows
frame boundaries, FIN bits and close codes exactly as a peer would see them.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from peers import require_module
from test_connection import (
    GUARD,
    OP_BINARY,
    OP_CONT,
    OP_TEXT,
    RawPeer,
    in_background,
    open_raw,
    open_sides,
    settle,
)
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong

from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from trio_websocket._core.config import READ_AHEAD_BYTES
from trio_websocket._core.messages import ITEM_COST, Inbox, InboxClosed

ROLES = ["client", "server"]


async def frames_of_next_message(peer: RawPeer) -> list[tuple[str | bytes, bool]]:
    """The frames of the next message the library sent, as (payload, FIN),
    skipping nothing: a control frame in between fails the test."""
    frames: list[tuple[str | bytes, bool]] = []
    payload: list[str | bytes] = []
    with trio.fail_after(GUARD):
        while True:
            event = await peer.next_event()
            assert isinstance(event, Message), f"expected a data frame, got {event!r}"
            payload.append(event.data)
            if event.frame_finished:
                joined = "".join(payload) if isinstance(event.data, str) else b"".join(payload)  # type: ignore[arg-type]
                frames.append((joined, event.message_finished))
                payload = []
                if event.message_finished:
                    return frames


async def agen(*pieces: str | bytes, gate: trio.Event | None = None) -> AsyncIterator[str | bytes]:
    """An async iterable of ``pieces``, pausing before the last one until
    ``gate`` is set (if given)."""
    for index, piece in enumerate(pieces):
        if gate is not None and index == len(pieces) - 1:
            await gate.wait()
        await trio.lowlevel.checkpoint()
        yield piece


async def collect(ws: WebSocketConnection, **kwargs: int | None) -> list[str | bytes]:
    with trio.fail_after(GUARD):
        return [piece async for piece in ws.receive_fragments(**kwargs)]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Sending in pieces


@pytest.mark.parametrize("role", ROLES)
async def test_each_piece_of_an_iterable_is_one_frame_fin_on_the_last(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    await ws.send_fragments([b"ab", b"", b"cde", b"f"])
    assert await frames_of_next_message(peer) == [
        (b"ab", False),
        (b"", False),
        (b"cde", False),
        (b"f", True),
    ]


@pytest.mark.parametrize("role", ROLES)
async def test_text_pieces_keep_multibyte_characters(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    await ws.send_fragments(iter(["h\u00e9", "\u2603", "\U0001f600!"]))
    frames = await frames_of_next_message(peer)
    assert frames == [("h\u00e9", False), ("\u2603", False), ("\U0001f600!", True)]


@pytest.mark.parametrize("role", ROLES)
async def test_a_single_piece_is_an_unfragmented_message(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    await ws.send_fragments(["whole"])
    assert await frames_of_next_message(peer) == [("whole", True)]


@pytest.mark.parametrize("role", ROLES)
async def test_async_iterable_pieces_go_out_as_they_come_then_an_empty_final_frame(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    gate = trio.Event()
    sending = in_background(nursery, ws.send_fragments, agen(b"one", b"two", b"three", gate=gate))
    # The first two pieces are on the wire before the third exists.
    with trio.fail_after(GUARD):
        first = await peer.expect(BytesMessage)
        second = await peer.expect(BytesMessage)
    assert (first.data, first.message_finished) == (b"one", False)
    assert (second.data, second.message_finished) == (b"two", False)
    gate.set()
    assert await frames_of_next_message(peer) == [(b"three", False), (b"", True)]
    await sending.wait()
    assert sending.error is None


@pytest.mark.parametrize("role", ROLES)
async def test_streamed_message_arrives_whole_at_a_library_peer(
    nursery: trio.Nursery, role: str
) -> None:
    ws, other = await open_sides(nursery, role)
    chunks = [bytes([i]) * 10_000 for i in range(50)]
    await ws.send_fragments(chunks)
    await ws.send_fragments(agen("x\u00e9", "y"))
    with trio.fail_after(GUARD):
        assert await other.get_message() == b"".join(chunks)
        assert await other.get_message() == "x\u00e9y"


@pytest.mark.parametrize("role", ROLES)
async def test_bytes_like_pieces_are_copied_when_taken(nursery: trio.Nursery, role: str) -> None:
    # A producer that reuses one buffer must not change pieces already taken.
    ws, other = await open_sides(nursery, role)
    buffer = bytearray(3)

    def reuse() -> Iterator[bytearray | memoryview]:
        for value in (b"abc", b"def"):
            buffer[:] = value
            yield buffer
        buffer[:] = b"ghi"
        yield memoryview(buffer)

    await ws.send_fragments(reuse())  # type: ignore[arg-type]
    with trio.fail_after(GUARD):
        assert await other.get_message() == b"abcdefghi"


@pytest.mark.parametrize("role", ROLES)
async def test_pieces_through_wsproto_when_an_extension_is_in_use(
    nursery: trio.Nursery, role: str
) -> None:
    # With an extension (permessage-deflate) data frames are built by
    # wsproto; the same framing must come out of that path.
    ws, peer = await open_raw(nursery, role)
    ws._own_framing = False
    await ws.send_fragments([b"ab", b"cd"])
    assert await frames_of_next_message(peer) == [(b"ab", False), (b"cd", True)]
    await ws.send_fragments(agen("\u00e9", "f"))
    assert await frames_of_next_message(peer) == [("\u00e9", False), ("f", False), ("", True)]
    await ws.send_message("after")
    assert await frames_of_next_message(peer) == [("after", True)]


@pytest.mark.parametrize("fragments", [[], (), iter([]), agen()])
async def test_no_pieces_is_value_error_and_sends_nothing(
    pair: tuple[WebSocketConnection, WebSocketConnection], fragments: object
) -> None:
    client, server = pair
    with pytest.raises(ValueError, match="empty"):
        await client.send_fragments(fragments)  # type: ignore[arg-type]
    await client.send_message("still open")
    with trio.fail_after(GUARD):
        assert await server.get_message() == "still open"


@pytest.mark.parametrize("fragments", ["text", b"bytes", bytearray(b"x"), 42, None])
async def test_a_message_or_a_non_iterable_is_type_error(
    pair: tuple[WebSocketConnection, WebSocketConnection], fragments: object
) -> None:
    client, _ = pair
    with pytest.raises(TypeError):
        await client.send_fragments(fragments)  # type: ignore[arg-type]
    assert client.closed is None


@pytest.mark.parametrize("fragments", [["a", b"b"], [b"a", "b"], [1, 2], ["a", None]])
async def test_wrong_second_piece_of_a_plain_iterable_is_caught_before_the_wire(
    nursery: trio.Nursery, fragments: list[object]
) -> None:
    ws, peer = await open_raw(nursery, "client")
    with pytest.raises(TypeError, match="piece"):
        await ws.send_fragments(fragments)  # type: ignore[arg-type]
    assert ws.closed is None
    await ws.send_message(b"next")
    # Nothing of the refused message reached the peer.
    assert await frames_of_next_message(peer) == [(b"next", True)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_wrong_piece_after_the_first_frame_closes_with_1011(
    nursery: trio.Nursery, role: str, asynchronous: bool
) -> None:
    ws, peer = await open_raw(nursery, role)
    pieces: list[object] = [b"a", b"b", "c", b"d"]
    source = agen(*pieces) if asynchronous else iter(pieces)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await ws.send_fragments(source)  # type: ignore[arg-type]
    assert ws.closed is not None
    assert ws.closed.code == 1011
    # The peer sees the frames sent, unfinished, then the close frame.
    with trio.fail_after(GUARD):
        close = await peer.expect_close()
    assert close.code == 1011
    with pytest.raises(ConnectionClosed):
        await ws.send_message(b"x")


@pytest.mark.parametrize("role", ROLES)
async def test_failing_source_after_the_first_frame_closes_with_1011_and_reraises(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)

    def failing() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        await ws.send_fragments(failing())
    with trio.fail_after(GUARD):
        assert (await peer.expect_close()).code == 1011


async def test_failing_source_before_the_first_frame_keeps_the_connection(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    client, server = pair

    def failing() -> Iterator[bytes]:
        raise OSError("cannot open")
        yield b""  # pragma: no cover

    with pytest.raises(OSError, match="cannot open"):
        await client.send_fragments(failing())
    assert client.closed is None
    await client.send_message(b"ok")
    with trio.fail_after(GUARD):
        assert await server.get_message() == b"ok"


@pytest.mark.parametrize("role", ROLES)
async def test_cancelled_between_frames_closes_with_1011(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    never = trio.Event()
    with trio.move_on_after(5):
        await ws.send_fragments(agen(b"a", b"b", gate=never))
    assert ws.closed is not None and ws.closed.code == 1011
    with trio.fail_after(GUARD):
        event = await peer.next_event()
        assert isinstance(event, BytesMessage) and not event.message_finished
        assert (await peer.expect_close()).code == 1011
        # The library finishes the closing handshake: the peer answers.
        await peer.send(CloseConnection(code=1011))
        await peer.expect_eof()


@pytest.mark.parametrize("role", ROLES)
async def test_other_senders_wait_for_the_streamed_message_to_end(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    gate = trio.Event()
    streaming = in_background(nursery, ws.send_fragments, agen(b"s1", b"s2", gate=gate))
    await settle()
    other = in_background(nursery, ws.send_message, b"whole")
    second_stream = in_background(nursery, ws.send_fragments, [b"t1", b"t2"])
    await settle()
    assert not other.done.is_set() and not second_stream.done.is_set()
    gate.set()
    # The streamed message is whole on the wire before any other data.
    assert await frames_of_next_message(peer) == [(b"s1", False), (b"s2", False), (b"", True)]
    rest = [await frames_of_next_message(peer), await frames_of_next_message(peer)]
    assert sorted(rest) == [[(b"t1", False), (b"t2", True)], [(b"whole", True)]]
    for call in (streaming, other, second_stream):
        await call.wait()
        assert call.error is None


@pytest.mark.parametrize("role", ROLES)
async def test_pings_and_pongs_go_through_inside_a_streamed_message(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    gate = trio.Event()
    streaming = in_background(nursery, ws.send_fragments, agen(b"a", b"b", gate=gate))
    with trio.fail_after(GUARD):
        assert not (await peer.expect(BytesMessage)).message_finished
        # The peer's ping is answered inside the unfinished message...
        await peer.send(Ping(b"are you there"))
        assert (await peer.expect(Pong)).payload == b"are you there"
        # ...and our own ping goes out too.
        pinging = in_background(nursery, ws.ping, b"mine")
        assert (await peer.expect(Ping)).payload == b"mine"
        await peer.send(Pong(b"mine"))
        await pinging.wait()
        assert pinging.error is None
    gate.set()
    assert await frames_of_next_message(peer) == [(b"b", False), (b"", True)]
    await streaming.wait()


@pytest.mark.parametrize("role", ROLES)
async def test_closing_during_a_streamed_message_stops_it_with_connection_closed(
    nursery: trio.Nursery, role: str
) -> None:
    ws, other = await open_sides(nursery, role)
    gate = trio.Event()
    streaming = in_background(nursery, ws.send_fragments, agen(b"a", b"b", gate=gate))
    await settle()
    with trio.fail_after(GUARD):
        closing = in_background(nursery, ws.aclose, 1000, "bye")
        with pytest.raises(ConnectionClosed):
            await other.get_message()
        gate.set()
        await streaming.wait()
        await closing.wait()
    assert isinstance(streaming.error, ConnectionClosed)
    assert closing.error is None
    assert ws.closed is not None and ws.closed.code == 1000


@pytest.mark.parametrize("role", ROLES)
async def test_a_close_stops_a_sender_waiting_on_its_source_and_those_waiting_behind(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    never = trio.Event()
    streaming = in_background(nursery, ws.send_fragments, agen(b"a", b"b", gate=never))
    await settle()
    queued = in_background(nursery, ws.send_message, b"queued")
    await settle()
    with trio.fail_after(GUARD):
        await peer.send(CloseConnection(code=4003, reason="leaving"))
        await streaming.wait()
        await queued.wait()
    assert isinstance(streaming.error, ConnectionClosed)
    assert streaming.error.reason.code == 4003
    assert isinstance(queued.error, ConnectionClosed)
    assert not never.is_set()
    # The close was echoed in the middle of the unfinished message.
    with trio.fail_after(GUARD):
        assert (await peer.expect_close()).code == 4003


# ---------------------------------------------------------------------------
# Receiving in pieces


@pytest.mark.parametrize("role", ROLES)
async def test_pieces_arrive_as_the_frames_do(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"first", fin=False)
        assert await stream.__anext__() == b"first"
        await peer.send_frame(OP_CONT, b"second", fin=False)
        assert await stream.__anext__() == b"second"
        await peer.send_frame(OP_CONT, b"last", fin=True)
        assert await stream.__anext__() == b"last"
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()


@pytest.mark.parametrize("role", ROLES)
async def test_an_empty_last_frame_ends_the_stream_after_its_pieces_were_taken(
    nursery: trio.Nursery, role: str
) -> None:
    # What send_fragments() of an async iterable produces.
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_TEXT, b"all of it", fin=False)
        assert await stream.__anext__() == "all of it"
        waiting = in_background(nursery, stream.__anext__)
        await settle()
        await peer.send_frame(OP_CONT, b"", fin=True)
        await waiting.wait()
        assert isinstance(waiting.error, StopAsyncIteration)
        await peer.send_frame(OP_TEXT, b"next")
        assert await ws.get_message() == "next"


async def test_an_async_iterable_streams_through_to_receive_fragments(
    pair: tuple[WebSocketConnection, WebSocketConnection], nursery: trio.Nursery
) -> None:
    client, server = pair
    receiving = in_background(nursery, collect, server)
    await settle()
    await client.send_fragments(agen(b"a" * 1000, b"b" * 1000))
    await receiving.wait()
    assert b"".join(receiving.value) == b"a" * 1000 + b"b" * 1000


@pytest.mark.parametrize("role", ROLES)
async def test_text_pieces_are_valid_str_even_when_a_character_is_split(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    snowman = "\u2603".encode()
    receiving = in_background(nursery, collect, ws)
    await peer.send_frame(OP_TEXT, b"a" + snowman[:1], fin=False)
    await settle()
    await peer.send_frame(OP_CONT, snowman[1:] + b"b", fin=True)
    await receiving.wait()
    pieces = receiving.value
    assert all(isinstance(piece, str) for piece in pieces)
    assert "".join(pieces) == "a\u2603b"


@pytest.mark.parametrize("role", ROLES)
async def test_a_message_bigger_than_max_message_size_streams_in_bounded_memory(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # 8 MiB through a connection that refuses 1 MiB messages when whole.
    ws, other = await open_sides(nursery, role, local_options={"receive_buffer_size": 32 * 1024})
    chunk = 64 * 1024
    count = 128

    def pieces() -> Iterator[bytes]:
        for i in range(count):
            yield bytes([i % 256]) * chunk

    nursery.start_soon(other.send_fragments, pieces())
    received = 0
    most_buffered = 0
    with trio.fail_after(GUARD):
        async for piece in ws.receive_fragments():
            assert isinstance(piece, bytes)
            assert piece == expected_bytes(received, len(piece), chunk)
            received += len(piece)
            most_buffered = max(most_buffered, ws._inbox.buffered_bytes)
            await settle()  # let the sender run ahead as far as it may
    assert received == count * chunk
    assert most_buffered <= READ_AHEAD_BYTES + 32 * 1024
    assert ws.closed is None


def expected_bytes(offset: int, size: int, chunk: int) -> bytes:
    """What ``pieces()`` above sent at ``offset``: chunk i is byte i % 256."""
    out = bytearray()
    while size:
        take = min(size, chunk - offset % chunk)
        out += bytes([(offset // chunk) % 256]) * take
        offset += take
        size -= take
    return bytes(out)


@pytest.mark.parametrize("message", ["", b""])
async def test_an_empty_message_gives_one_empty_piece_of_its_type(
    pair: tuple[WebSocketConnection, WebSocketConnection],
    nursery: trio.Nursery,
    message: str | bytes,
) -> None:
    client, server = pair
    receiving = in_background(nursery, collect, server)
    await settle()
    await client.send_message(message)
    await receiving.wait()
    assert receiving.value == [message]
    assert type(receiving.value[0]) is type(message)


async def test_a_message_already_received_whole_is_one_piece(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    client, server = pair
    await client.send_message(b"x" * 1000)
    await settle()
    assert await collect(server) == [b"x" * 1000]


@pytest.mark.parametrize("role", ROLES)
async def test_streaming_takes_over_a_message_partly_assembled(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    await peer.send_frame(OP_TEXT, b"begun ", fin=False)
    await peer.send_frame(OP_CONT, b"before ", fin=False)
    await settle()  # the reader has assembled part of the message
    receiving = in_background(nursery, collect, ws)
    await settle()
    await peer.send_frame(OP_CONT, b"and after", fin=True)
    await receiving.wait()
    assert "".join(receiving.value) == "begun before and after"


@pytest.mark.parametrize("role", ROLES)
async def test_messages_after_a_streamed_one_stay_whole_and_in_order(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    receiving = in_background(nursery, collect, ws)
    await settle()
    # All in one write: the streamed message's frames and two more messages.
    await peer.send_raw(
        b"".join(
            [
                _frame(OP_BINARY, b"s1", fin=False, masked=peer.is_client),
                _frame(OP_CONT, b"s2", fin=True, masked=peer.is_client),
                _frame(OP_TEXT, b"m2", masked=peer.is_client),
                _frame(OP_BINARY, b"m3", masked=peer.is_client),
            ]
        )
    )
    await receiving.wait()
    assert b"".join(receiving.value) == b"s1s2"
    with trio.fail_after(GUARD):
        assert await ws.get_message() == "m2"
        assert await ws.get_message() == b"m3"


def _frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool) -> bytes:
    from test_connection import build_frame

    return build_frame(opcode, payload, fin=fin, masked=masked)


@pytest.mark.parametrize("role", ROLES)
async def test_max_size_counts_utf8_bytes_and_closes_with_1009(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    # 4 characters, 8 bytes per piece: 16 bytes fit in 20, 24 do not.
    stream = ws.receive_fragments(max_size=20)
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_TEXT, ("\u00e9" * 4).encode(), fin=False)
        await peer.send_frame(OP_CONT, ("\u00e9" * 4).encode(), fin=False)
        assert await stream.__anext__() == "\u00e9" * 4
        assert await stream.__anext__() == "\u00e9" * 4
        await peer.send_frame(OP_CONT, ("\u00e9" * 4).encode(), fin=True)
        with pytest.raises(ConnectionClosed) as caught:
            await stream.__anext__()
        assert caught.value.reason.code == 1009
        assert (await peer.expect_close()).code == 1009


@pytest.mark.parametrize("role", ROLES)
async def test_max_size_exactly_reached_is_accepted(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    receiving = in_background(nursery, partial(collect, ws, max_size=6))
    await settle()
    await peer.send_frame(OP_TEXT, "\u00e9\u00e9".encode(), fin=False)
    await peer.send_frame(OP_CONT, "\u00e9".encode(), fin=True)
    await receiving.wait()
    assert "".join(receiving.value) == "\u00e9\u00e9\u00e9"
    assert ws.closed is None


async def test_max_size_applies_to_a_message_already_received_whole(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    client, server = pair
    await client.send_message(b"x" * 100)
    await settle()
    with pytest.raises(ConnectionClosed) as caught:
        await collect(server, max_size=99)
    assert caught.value.reason.code == 1009
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed):
        await client.get_message()
    assert client.closed is not None and client.closed.code == 1009


async def test_max_size_is_checked(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    client, _ = pair
    with pytest.raises(TypeError):
        client.receive_fragments(max_size="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.receive_fragments(max_size=True)
    with pytest.raises(ValueError):
        client.receive_fragments(max_size=-1)


@pytest.mark.parametrize("role", ROLES)
async def test_peer_closing_mid_message_ends_the_stream_with_connection_closed(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    await peer.send_frame(OP_BINARY, b"part", fin=False)
    await peer.send(CloseConnection(code=4000, reason="gone"))
    with trio.fail_after(GUARD):
        assert await stream.__anext__() == b"part"
        with pytest.raises(ConnectionClosed) as caught:
            await stream.__anext__()
    assert caught.value.reason.code == 4000


async def test_local_close_ends_a_waiting_stream(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    _, server = pair
    async with trio.open_nursery() as nursery:
        receiving = in_background(nursery, collect, server)
        await settle()
        await server.aclose()
        await receiving.wait()
    assert isinstance(receiving.error, ConnectionClosed)


# ---------------------------------------------------------------------------
# Mixing streamed and whole receives


@pytest.mark.parametrize("role", ROLES)
async def test_get_message_gives_up_an_unfinished_stream_and_gets_the_next_message(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"head", fin=False)
        assert await stream.__anext__() == b"head"
        # Left half-way: the rest of that message, arriving later or
        # already here, is dropped; the next message is intact.
        await peer.send_frame(OP_CONT, b"queued", fin=False)
        await settle()
        getting = in_background(nursery, ws.get_message)
        await settle()
        await peer.send_frame(OP_CONT, b"tail", fin=True)
        await peer.send_frame(OP_TEXT, b"next message")
        await getting.wait()
    assert getting.value == "next message"
    with pytest.raises(RuntimeError, match="discarded"):
        await stream.__anext__()
    assert ws._inbox.buffered_bytes == 0


@pytest.mark.parametrize("role", ROLES)
async def test_a_new_stream_after_an_abandoned_one_gets_the_next_message(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"old-1", fin=False)
        async for piece in ws.receive_fragments():
            assert piece == b"old-1"
            break  # give it up half-way
        receiving = in_background(nursery, collect, ws)
        await settle()
        await peer.send_frame(OP_CONT, b"old-2", fin=True)
        await peer.send_frame(OP_BINARY, b"new-1", fin=False)
        await peer.send_frame(OP_CONT, b"new-2", fin=True)
        await receiving.wait()
    assert receiving.value == [b"new-1", b"new-2"]


@pytest.mark.parametrize("role", ROLES)
async def test_aclose_gives_the_rest_of_the_message_up(nursery: trio.Nursery, role: str) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"a" * 100, fin=False)
        assert await stream.__anext__() == b"a" * 100
        await stream.aclose()  # type: ignore[attr-defined]
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        await peer.send_frame(OP_CONT, b"b" * 100, fin=True)
        await peer.send_frame(OP_BINARY, b"after")
        assert await ws.get_message() == b"after"


async def test_a_finished_stream_leaves_the_next_message_to_get_message(
    pair: tuple[WebSocketConnection, WebSocketConnection],
) -> None:
    client, server = pair
    await client.send_fragments([b"1", b"2"])
    await client.send_message("then whole")
    assert b"".join(await collect(server)) == b"12"  # type: ignore[arg-type]
    with trio.fail_after(GUARD):
        assert await server.get_message() == "then whole"


async def test_receiving_while_another_task_waits_for_a_piece_is_busy(
    pair: tuple[WebSocketConnection, WebSocketConnection], nursery: trio.Nursery
) -> None:
    client, server = pair
    stream = server.receive_fragments()
    waiting = in_background(nursery, stream.__anext__)
    await settle()
    with pytest.raises(trio.BusyResourceError):
        await server.get_message()
    with pytest.raises(trio.BusyResourceError):
        await server.receive_fragments().__anext__()
    with pytest.raises(trio.BusyResourceError):
        await stream.__anext__()
    # The waiting stream is undisturbed.
    await client.send_message(b"for the stream")
    await waiting.wait()
    assert waiting.value == b"for the stream"


async def test_streaming_cannot_start_while_a_task_waits_in_get_message(
    pair: tuple[WebSocketConnection, WebSocketConnection], nursery: trio.Nursery
) -> None:
    client, server = pair
    getting = in_background(nursery, server.get_message)
    await settle()
    with pytest.raises(trio.BusyResourceError):
        await server.receive_fragments().__anext__()
    await client.send_message("for get_message")
    await getting.wait()
    assert getting.value == "for get_message"


@pytest.mark.parametrize("role", ROLES)
async def test_pings_are_answered_while_streamed_pieces_wait_unread(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"x" * 1000, fin=False)
        assert await stream.__anext__() == b"x" * 1000
        # The application does not read on; the peer keeps sending.
        await peer.send_frame(OP_CONT, b"y" * 1000, fin=False)
        await peer.send(Ping(b"still alive?"))
        assert (await peer.expect(Pong)).payload == b"still alive?"
        await peer.send_frame(OP_CONT, b"z", fin=True)
        rest = [piece async for piece in stream]
    assert b"".join(rest) == b"y" * 1000 + b"z"  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The example of docs/streaming.rst


async def test_a_file_streams_from_disk_to_disk(
    pair: tuple[WebSocketConnection, WebSocketConnection],
    nursery: trio.Nursery,
    tmp_path: trio.Path,
) -> None:
    source = trio.Path(tmp_path) / "source.bin"
    target = trio.Path(tmp_path) / "target.bin"
    content = bytes(range(256)) * 2000  # 512 000 bytes: several chunks
    await source.write_bytes(content)
    client, server = pair

    async def file_chunks(path: trio.Path) -> AsyncIterator[bytes]:
        async with await trio.open_file(path, "rb") as file:
            while chunk := await file.read(64 * 1024):
                yield chunk

    async def receive_upload() -> None:
        async with await trio.open_file(target, "wb") as file:
            async for piece in server.receive_fragments(max_size=2**30):
                await file.write(piece)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as both:
            both.start_soon(receive_upload)
            both.start_soon(client.send_fragments, file_chunks(source))
    assert await target.read_bytes() == content


# ---------------------------------------------------------------------------
# Another implementation on the other end: websockets (its Trio API)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="websockets' Trio API needs websockets 17, hence Python 3.11"
)
async def test_fragments_interoperate_with_websockets(nursery: trio.Nursery) -> None:
    websockets_server = require_module("websockets.trio.server")

    frames_seen: list[list[Any]] = []

    async def handler(ws: Any) -> None:
        # websockets yields one item per frame of a fragmented message.
        for _ in range(2):
            frames_seen.append([frame async for frame in ws.recv_streaming()])
        await ws.send(iter([b"p1", b"p2", b"p3"]))

        async def text() -> AsyncIterator[str]:
            for piece in ("t\u00e9", "", "xt"):
                await trio.lowlevel.checkpoint()
                yield piece

        await ws.send(text())
        await ws.wait_closed()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
    server = await nursery.start(
        partial(websockets_server.serve, handler, listeners=listeners, max_size=None)
    )
    try:
        with trio.fail_after(GUARD):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                big = [bytes([i]) * 300_000 for i in range(8)]  # 2.4 MB in all
                await ws.send_fragments(big)
                await ws.send_fragments(agen("\u2603", "b"))
                binary = [piece async for piece in ws.receive_fragments()]
                text_pieces = [piece async for piece in ws.receive_fragments()]
            assert frames_seen[0] == big
            assert "".join(frames_seen[1]) == "\u2603b"
            assert frames_seen[1][-1] == ""  # the empty final frame
            assert b"".join(binary) == b"p1p2p3"  # type: ignore[arg-type]
            assert all(isinstance(piece, str) for piece in text_pieces)
            assert "".join(text_pieces) == "t\u00e9xt"  # type: ignore[arg-type]
    finally:
        await server.aclose()


# ---------------------------------------------------------------------------
# The inbox's piece mode, on its own


async def test_inbox_hands_pieces_over_and_marks_the_last() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    assert inbox.start_pieces(["ab"], None)
    assert inbox.takes_pieces
    assert inbox.put_piece("\u00e9", False)
    assert inbox.buffered_bytes == 4  # UTF-8 bytes
    assert inbox.put_piece("", False)  # skipped: not the only piece
    assert inbox.put_piece("z", True)
    assert not inbox.takes_pieces  # the reader assembles the next message
    assert [await inbox.get_piece() for _ in range(3)] == [
        ("ab", False),
        ("\u00e9", False),
        ("z", True),
    ]
    assert inbox.buffered_bytes == 0
    assert len(inbox) == 0


async def test_inbox_reports_the_end_of_a_message_whose_last_piece_is_empty() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    inbox.start_pieces([], None)
    inbox.put_piece(b"data", False)
    assert await inbox.get_piece() == (b"data", False)
    inbox.put_piece(b"", True)
    assert await inbox.get_piece() == (None, True)


async def test_inbox_gives_an_empty_message_as_one_empty_piece() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    inbox.start_pieces([], None)
    inbox.put_piece("", False)
    inbox.put_piece("", True)
    assert await inbox.get_piece() == ("", True)


def test_inbox_refuses_pieces_past_the_limit_in_utf8_bytes() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    assert not inbox.start_pieces(["\u00e9\u00e9"], 3)  # 4 bytes already
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    assert inbox.start_pieces(["\u00e9"], 3)
    assert inbox.put_piece("a", False)  # 3 bytes: at the limit
    assert not inbox.put_piece("a", False)
    assert inbox.buffered_bytes == 3


def test_inbox_stops_the_reader_at_the_read_ahead_of_pieces() -> None:
    inbox = Inbox(max_messages=100, read_ahead_bytes=10 + 2 * ITEM_COST)
    inbox.start_pieces([], None)
    inbox.put_piece(b"x" * 9, False)
    assert not inbox.reader_must_wait()
    inbox.put_piece(b"x", False)
    assert inbox.reader_must_wait()  # pieces count as a full queue


async def test_inbox_drops_the_rest_of_an_abandoned_message_then_streams_the_next() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    inbox.start_pieces([], None)
    inbox.put_piece(b"old-1", False)
    inbox.abandon_pieces()
    assert inbox.buffered_bytes == 0
    assert inbox.takes_pieces  # the rest of the old message must be dropped
    inbox.start_pieces([], None)  # a new streamed receive, for the next one
    inbox.put_piece(b"old-2", False)
    inbox.put_piece(b"old-3", True)
    assert len(inbox) == 0 and inbox.takes_pieces
    inbox.put_piece(b"new", True)
    assert await inbox.get_piece() == (b"new", True)
    assert not inbox.takes_pieces


def test_inbox_goes_back_to_assembling_after_an_abandoned_message_ends() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    inbox.start_pieces([], None)
    inbox.put_piece(b"old", False)
    inbox.abandon_pieces()
    inbox.put_piece(b"rest", True)
    assert not inbox.takes_pieces
    assert len(inbox) == 0


async def test_inbox_closed_mid_message_delivers_the_pieces_then_raises() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=1000)
    inbox.start_pieces([], None)
    inbox.put_piece(b"part", False)
    inbox.close(discard=False)
    assert await inbox.get_piece() == (b"part", False)
    with pytest.raises(InboxClosed):
        await inbox.get_piece()


@pytest.mark.parametrize("nested", ["send_message", "send_fragments"])
async def test_sending_from_inside_the_source_is_runtime_error_not_a_hang(
    pair: tuple[WebSocketConnection, WebSocketConnection], nested: str
) -> None:
    client, server = pair

    async def source() -> AsyncIterator[bytes]:
        yield b"first"
        if nested == "send_message":
            await client.send_message(b"inner")
        else:
            await client.send_fragments([b"inner"])
        yield b"never"  # pragma: no cover

    with trio.fail_after(GUARD), pytest.raises(RuntimeError, match="send_fragments"):
        await client.send_fragments(source())
    # The message was cut short: the connection closes with 1011.
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed) as caught:
        await server.get_message()
    assert caught.value.reason.code == 1011


async def test_the_source_may_close_the_connection_cleanly(
    pair: tuple[WebSocketConnection, WebSocketConnection], nursery: trio.Nursery
) -> None:
    client, server = pair

    async def source() -> AsyncIterator[bytes]:
        yield b"first"
        await client.aclose(4004, "source is done")
        yield b"second"

    closing = in_background(nursery, server.get_message)
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed):
        await client.send_fragments(source())
    await closing.wait()
    assert client.closed is not None and client.closed.code == 4004
    assert isinstance(closing.error, ConnectionClosed)
    assert closing.error.reason.code == 4004


# ---------------------------------------------------------------------------
# With an extension: permessage-deflate, negotiated by hand with wsproto


class CountingStream(trio.abc.Stream):
    """Counts the bytes written through ``inner``."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def open_deflate_pair(
    nursery: trio.Nursery,
) -> tuple[WebSocketConnection, WebSocketConnection, CountingStream]:
    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.extensions import PerMessageDeflate

    from trio_websocket._core.config import ConnectionOptions

    client_extension, server_extension = PerMessageDeflate(), PerMessageDeflate()
    client_extension.finalize(server_extension.accept(client_extension.offer()))  # type: ignore[arg-type]
    client_stream, server_stream = trio.testing.memory_stream_pair()
    counting = CountingStream(client_stream)
    sides = []
    for stream, kind, extension in (
        (counting, ConnectionType.CLIENT, client_extension),
        (server_stream, ConnectionType.SERVER, server_extension),
    ):
        connection = WebSocketConnection(
            stream,
            Connection(kind, extensions=[extension]),
            is_client=kind is ConnectionType.CLIENT,
            path="/",
            subprotocol=None,
            handshake_headers=[],
            options=ConnectionOptions(),
            extensions=[extension],
            endpoints=("local", "remote"),
        )
        connection._start(nursery)
        sides.append(connection)
    return sides[0], sides[1], counting


async def test_streamed_messages_are_compressed_by_the_extension_both_ways(
    nursery: trio.Nursery,
) -> None:
    client, server, counting = await open_deflate_pair(nursery)
    assert not client._own_framing
    receiving = in_background(nursery, collect, server)
    await settle()
    await client.send_fragments([b"a" * 50_000, b"b" * 50_000])
    await receiving.wait()
    assert b"".join(receiving.value) == b"a" * 50_000 + b"b" * 50_000
    assert counting.sent < 10_000  # compressed on the wire
    await server.send_fragments(agen("\u00e9" * 1000, "z" * 1000))
    with trio.fail_after(GUARD):
        assert await client.get_message() == "\u00e9" * 1000 + "z" * 1000
    await client.send_message("whole, after")
    with trio.fail_after(GUARD):
        assert await server.get_message() == "whole, after"
    with trio.fail_after(GUARD):
        await client.aclose()
