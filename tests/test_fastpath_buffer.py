"""The receive fast path (issue 3): wsproto reads frames from our chunk
buffer, which hands payloads over with fewer copies and holds a data frame
until it is whole when it fits in the message being received.

wsproto stays the parser, so the decisive tests compare the fast protocol
with an untouched wsproto ``Connection`` fed the same bytes cut in every
way: the same events (or, where whole frames change how a message is cut
into events, the same messages and control events in the same order) and
the same failures with the same close codes. Then the connection-level
promises that depend on the buffer: size limits still act before a huge
frame is complete, a streamed receive still gets pieces as they arrive.
"""

from __future__ import annotations

import os
import random
import struct
import sys
from collections.abc import Callable, Iterable

import pytest
import trio
import trio.testing
from conftest import open_pair
from test_connection import GUARD, OP_BINARY, OP_CONT, RawPeer, in_background, open_raw, settle
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import Buffer, FrameDecoder

from trio_websocket import ConnectionClosed
from trio_websocket._wire.frame_decoder import (
    _SMALL_READ,
    _ChunkBuffer,
    _FastMasker,
    _FastReceiveDecoder,
    use_fast_receive,
)

#: These tests check a fast path's own workings: they force the fast paths
#: on, also in CI's run of the suite with TRIO_WEBSOCKET_FAST_PATHS=0.
pytestmark = pytest.mark.usefixtures("fast_paths_on")

ROLES = ["client", "server"]
MASK_KEY = b"\x37\xfa\x21\x3d"


def frame_header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, masked: bool
) -> bytes:
    """A frame header per RFC 6455 section 5.2, with ``MASK_KEY`` if masked."""
    header = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header.append(mask_bit | length)
    elif length < 1 << 16:
        header.append(mask_bit | 126)
        header += struct.pack("!H", length)
    else:
        header.append(mask_bit | 127)
        header += struct.pack("!Q", length)
    return bytes(header) + (MASK_KEY if masked else b"")


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool
) -> bytes:
    """One frame built by hand (so that malformed ones can be built too)."""
    if masked:
        payload = bytes(byte ^ MASK_KEY[i % 4] for i, byte in enumerate(payload))
    return frame_header(opcode, len(payload), fin=fin, rsv=rsv, masked=masked) + payload


def receiver(role: str, room: Callable[[], int] | None = None) -> tuple[Connection, Connection]:
    """(plain wsproto, fast path) connections playing ``role``."""
    kind = ConnectionType.CLIENT if role == "client" else ConnectionType.SERVER
    plain, fast = Connection(kind), Connection(kind)
    assert use_fast_receive(fast, room)
    return plain, fast


def feed(protocol: Connection, pieces: Iterable[bytes]) -> list[Event]:
    """Feed each piece as one read, collecting the events after each."""
    events: list[Event] = []
    for piece in pieces:
        protocol.receive_data(piece)
        events.extend(protocol.events())
    return events


def cut(wire: bytes, sizes: Iterable[int]) -> list[bytes]:
    pieces, position = [], 0
    for size in sizes:
        if position >= len(wire):
            break
        pieces.append(wire[position : position + size])
        position += size
    if position < len(wire):
        pieces.append(wire[position:])
    return pieces


def random_cuts(wire: bytes, rng: random.Random, largest: int) -> list[bytes]:
    return cut(wire, iter(lambda: rng.randint(1, largest), None))


def summary(events: list[Event], *, reasons: bool = True) -> list[tuple[str, object]]:
    """Events with the data pieces of each message joined: what a user of
    whole messages sees (without the close reasons if not ``reasons``)."""
    out: list[tuple[str, object]] = []
    parts: list[bytes | str] = []
    for event in events:
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]
                out.append((type(event).__name__, joined))
                parts = []
        elif isinstance(event, CloseConnection):
            out.append(("close", (event.code, event.reason) if reasons else event.code))
        elif isinstance(event, (Ping, Pong)):
            out.append((type(event).__name__, event.payload))
        else:
            out.append(("other", repr(event)))
    return out


def traffic(masked: bool, rng: random.Random) -> bytes:
    """A mixed stream: sizes at the length-encoding boundaries, fragmented
    messages with control frames between the fragments, text with
    multi-byte characters split across frames, empty frames."""
    out = []
    for size in (0, 1, 125, 126, 127, 8192, 8193, 65535, 65536, 200_000):
        out.append(frame(OP_BINARY, rng.randbytes(size), masked=masked))
    text = ("grüße, ☃ and 𝄞 " * 700).encode()
    out.append(frame(0x1, text[:5001], fin=False, masked=masked))  # cuts a character
    out.append(frame(0x9, b"ping inside", masked=masked))
    out.append(frame(OP_CONT, b"", fin=False, masked=masked))
    out.append(frame(OP_CONT, text[5001:], masked=masked))
    out.append(frame(OP_BINARY, rng.randbytes(70_000), fin=False, masked=masked))
    out.append(frame(0xA, b"pong", masked=masked))
    out.append(frame(OP_CONT, rng.randbytes(3), fin=True, masked=masked))
    out.append(frame(0x1, "é".encode(), masked=masked))
    out.append(frame(0x8, struct.pack("!H", 4000) + b"bye", masked=masked))
    return b"".join(out)


# ---------------------------------------------------------------------------
# Installation


@pytest.mark.parametrize("role", ROLES)
def test_fast_receive_is_active_with_the_pinned_wsproto(role: str) -> None:
    # If a wsproto upgrade changes the decoder or its buffer, the fast path
    # stays off (correct, only slower): this test is what notices.
    _, fast = receiver(role)
    decoder = fast._proto._frame_decoder
    assert type(decoder) is _FastReceiveDecoder
    assert type(decoder.buffer) is _ChunkBuffer


async def test_a_connection_reads_through_the_fast_path(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    for ws in (client, server):
        assert type(ws._proto._proto._frame_decoder) is _FastReceiveDecoder  # type: ignore[attr-defined]


def test_fast_receive_leaves_an_unknown_layout_alone() -> None:
    class Unusual:
        pass

    assert not use_fast_receive(Unusual())  # type: ignore[arg-type]

    # A decoder with state wsproto 1.3.2 does not have: not replaced.
    protocol = Connection(ConnectionType.SERVER)
    decoder = protocol._proto._frame_decoder
    decoder.something_new = 1  # type: ignore[attr-defined]
    assert not use_fast_receive(protocol)
    assert protocol._proto._frame_decoder is decoder
    assert type(decoder.buffer) is Buffer

    # A decoder in the middle of a frame: not replaced either.
    protocol = Connection(ConnectionType.SERVER)
    protocol.receive_data(frame(OP_BINARY, b"x" * 300, masked=True)[:20])
    assert len(list(protocol.events())) == 1  # a first piece of the frame
    assert type(protocol._proto._frame_decoder) is FrameDecoder
    assert not use_fast_receive(protocol)
    assert type(protocol._proto._frame_decoder) is FrameDecoder


def test_bytes_that_came_with_the_handshake_are_kept() -> None:
    wire = frame(0x1, b"early", masked=True) + frame(OP_BINARY, b"\x00" * 500, masked=True)
    protocol = Connection(ConnectionType.SERVER, trailing_data=wire[:30])
    assert use_fast_receive(protocol)
    events = feed(protocol, [wire[30:]])
    assert summary(events) == [("TextMessage", "early"), ("BytesMessage", b"\x00" * 500)]


# ---------------------------------------------------------------------------
# Same events as wsproto


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("largest", [1, 61, 1000, 70_000, 300_000])
def test_without_holding_the_events_are_wsprotos_exactly(role: str, largest: int) -> None:
    # room=None: no frame is held, so even the cut of a message into
    # events is wsproto's own (and unmasking goes through our masker).
    rng = random.Random(largest)
    wire = traffic(masked=role == "server", rng=rng)
    reads = random_cuts(wire, rng, largest) if largest > 1 else cut(wire, [1] * 40_000)
    plain, fast = receiver(role, room=None)
    expected = feed(plain, reads)
    got = feed(fast, reads)
    assert [repr(event) for event in got] == [repr(event) for event in expected]
    assert isinstance(got[-1], CloseConnection) and got[-1].code == 4000


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("largest", [1, 97, 4096, 100_000, 1 << 20])
def test_holding_frames_keeps_every_message_and_control_event(role: str, largest: int) -> None:
    rng = random.Random(largest + 1)
    wire = traffic(masked=role == "server", rng=rng)
    reads = random_cuts(wire, rng, largest) if largest > 1 else cut(wire, [1] * 40_000)
    plain, fast = receiver(role, room=lambda: 1 << 20)
    expected = summary(feed(plain, reads))
    got = feed(fast, reads)
    assert summary(got) == expected
    # Every binary frame here fits the room: each arrives as one event.
    assert all(event.frame_finished for event in got if isinstance(event, BytesMessage))


BAD_STREAMS = {
    "invalid UTF-8 in a held frame": lambda m: frame(0x1, b"ok" * 300 + b"\xff", masked=m),
    "invalid UTF-8 across fragments": lambda m: (
        frame(0x1, b"a\xe2", fin=False, masked=m) + frame(OP_CONT, b"\x28\xa1", masked=m)
    ),
    "RSV1 without an extension": lambda m: frame(OP_BINARY, b"x" * 200, rsv=4, masked=m),
    "unknown opcode": lambda m: frame(0x3, b"x", masked=m),
    "continuation out of nowhere": lambda m: frame(OP_CONT, b"x" * 300, masked=m),
    "new message inside a fragmented one": lambda m: (
        frame(OP_BINARY, b"a", fin=False, masked=m) + frame(OP_BINARY, b"b", masked=m)
    ),
    "fragmented ping": lambda m: frame(0x9, b"p", fin=False, masked=m),
    "close with a reserved code": lambda m: frame(0x8, struct.pack("!H", 1004), masked=m),
    "close reason not UTF-8": lambda m: frame(0x8, struct.pack("!H", 1000) + b"\xc3", masked=m),
    "control frame too long": lambda m: bytes([0x89, (0x80 if m else 0) | 126, 0, 200]),
    "non-minimal 2-byte length": lambda m: (
        bytes([0x82, (0x80 if m else 0) | 126, 0, 5]) + (MASK_KEY if m else b"") + b"12345"
    ),
    "non-minimal 8-byte length": lambda m: (
        bytes([0x82, (0x80 if m else 0) | 127])
        + struct.pack("!Q", 300)
        + (MASK_KEY if m else b"")
        + b"x" * 300
    ),
    "wrong masking for the role": lambda m: frame(OP_BINARY, b"x" * 200, masked=not m),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
@pytest.mark.parametrize("largest", [1, 3, 1 << 20])
def test_bad_frames_fail_as_in_wsproto_with_the_same_close_code(
    role: str, name: str, largest: int
) -> None:
    masked = role == "server"
    wire = frame(OP_BINARY, b"before", masked=masked) + BAD_STREAMS[name](masked)
    reads = cut(wire, [largest] * len(wire))
    plain, fast = receiver(role, room=lambda: 1 << 20)
    expected = feed(plain, reads)
    got = feed(fast, reads)
    # (The reason of a 1007 names the position of the bad byte in the piece
    # the decoder had, which depends on how the frame was cut into events.)
    assert summary(got, reasons=False) == summary(expected, reasons=False)
    last = got[-1]
    assert isinstance(last, CloseConnection) and last.code in (1002, 1007)


# ---------------------------------------------------------------------------
# Whole frames and copies


@pytest.mark.parametrize("role", ROLES)
def test_a_frame_that_fits_the_room_is_one_event_however_it_is_read(role: str) -> None:
    payload = os.urandom(100_000)
    wire = frame(OP_BINARY, payload, masked=role == "server")
    _, fast = receiver(role, room=lambda: 100_000)
    events = feed(fast, cut(wire, [4000] * 100))
    assert len(events) == 1
    assert isinstance(events[0], BytesMessage) and events[0].data == payload
    assert type(events[0].data) is bytes


@pytest.mark.parametrize("role", ROLES)
def test_invalid_utf8_is_refused_before_the_text_frame_is_complete(role: str) -> None:
    # Text is never held: the bad bytes fail the frame as soon as they come
    # (Autobahn 6.4.3/6.4.4: fail fast on invalid UTF-8), also in a
    # continuation of a text message.
    masked = role == "server"
    for first_frame in (b"", frame(0x1, b"start ", fin=False, masked=masked)):
        opcode = OP_CONT if first_frame else 0x1
        payload = b"valid " * 100 + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"
        wire = first_frame + frame(opcode, payload + b"rest" * 25_000, masked=masked)
        _, fast = receiver(role, room=lambda: 1 << 20)
        events = feed(fast, [wire[: len(first_frame) + 14 + len(payload)]])
        last = events[-1]
        assert isinstance(last, CloseConnection) and last.code == 1007


@pytest.mark.parametrize("room", [0, 99_999])
def test_a_frame_larger_than_the_room_arrives_read_by_read(room: int) -> None:
    # Room 0 is what a streamed receive asks for; a frame over the room
    # would only be refused: both come in pieces as they arrive.
    payload = os.urandom(100_000)
    wire = frame(OP_BINARY, payload, masked=False)
    _, fast = receiver("client", room=lambda: room)
    events = feed(fast, cut(wire, [25_000] * 5))
    assert len(events) == 5
    assert b"".join(event.data for event in events) == payload  # type: ignore[attr-defined]
    assert [event.frame_finished for event in events] == [False] * 4 + [True]  # type: ignore[attr-defined]


def test_room_is_asked_only_for_data_frames_not_yet_whole() -> None:
    asked: list[int] = []

    def room() -> int:
        asked.append(1)
        return 1 << 20

    wire = frame(OP_BINARY, b"x" * 50_000, masked=False)
    _, fast = receiver("client", room=room)
    feed(fast, [wire + frame(0x9, b"p", masked=False)])  # whole at once: never asked
    assert asked == []
    feed(fast, [wire[:1000], wire[1000:]])
    assert asked == [1]


def test_a_payload_that_is_one_read_is_handed_over_without_a_copy() -> None:
    payload = os.urandom(200_000)
    wire = frame(OP_BINARY, payload, masked=False)
    header, body = wire[:10], wire[10:]
    _, fast = receiver("client", room=lambda: 1 << 20)
    (event,) = feed(fast, [header, body])
    assert event.data is body  # type: ignore[attr-defined]


def test_a_mutable_read_is_copied_when_fed() -> None:
    wire = bytearray(frame(OP_BINARY, b"a" * 20_000, masked=False))
    _, fast = receiver("client", room=lambda: 1 << 20)
    fast.receive_data(wire[:5000])
    rest = wire[5000:]
    fast.receive_data(rest)  # type: ignore[arg-type]
    rest[:] = b"b" * len(rest)  # the caller reuses its buffer
    (event,) = fast.events()
    assert event.data == b"a" * 20_000  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# What the buffer keeps


def held_bytes(buffer: _ChunkBuffer) -> int:
    return sum(len(chunk) for chunk in buffer._chunks)


@pytest.mark.parametrize("tail", [1, 9, 5000, 120_000])
def test_the_rest_of_a_read_is_kept_without_the_whole_read(tail: int) -> None:
    # A big read that ends with the start of the next frame: the buffer
    # keeps at most about twice what is pending, like wsproto's bytearray.
    next_frame = frame(OP_BINARY, b"n" * 200_000, masked=False)
    wire = frame(OP_BINARY, b"x" * 250_000, masked=False) + next_frame[:tail]
    _, fast = receiver("client", room=lambda: 1 << 20)
    events = feed(fast, [wire])
    assert len(events) == 1
    buffer = fast._proto._frame_decoder.buffer
    assert isinstance(buffer, _ChunkBuffer)
    pending = tail - min(tail, 10)  # what is left after the next header
    assert held_bytes(buffer) <= 8 * max(tail, pending) + 16
    (last,) = feed(fast, [next_frame[tail:]])
    assert last.data == b"n" * 200_000  # type: ignore[attr-defined]


def test_a_trickling_peer_cannot_inflate_the_buffer() -> None:
    # One byte per read of a frame held until whole: short reads are merged,
    # so the list holds a few big chunks, not one object per byte.
    payload = os.urandom(40_000)
    wire = frame(OP_BINARY, payload, masked=False)
    _, fast = receiver("client", room=lambda: 1 << 20)
    for byte_read in cut(wire[:-1], [1] * len(wire)):
        fast.receive_data(byte_read)
        assert list(fast.events()) == []
    buffer = fast._proto._frame_decoder.buffer
    assert isinstance(buffer, _ChunkBuffer)
    assert len(buffer._chunks) <= len(wire) // _SMALL_READ + 2
    (event,) = feed(fast, [wire[-1:]])
    assert event.data == payload  # type: ignore[attr-defined]
    assert held_bytes(buffer) == 0


def test_masked_payloads_use_the_fast_masker() -> None:
    _, fast = receiver("server", room=lambda: 1 << 20)
    fast.receive_data(frame(OP_BINARY, b"x" * 1000, masked=True)[:500])
    assert list(fast.events()) == []
    assert type(fast._proto._frame_decoder.masker) is _FastMasker


# ---------------------------------------------------------------------------
# Through a connection


async def send_part_of_a_frame(
    peer: RawPeer, opcode: int, length: int, sent: int, fin: bool
) -> None:
    """The header of a ``length``-byte frame of zeros and its first ``sent``
    bytes."""
    masked = peer.is_client
    zeros = MASK_KEY * (sent // 4 + 1) if masked else bytes(sent)
    await peer.send_raw(frame_header(opcode, length, fin=fin, masked=masked) + zeros[:sent])


@pytest.mark.parametrize("role", ROLES)
async def test_a_huge_frame_is_refused_before_it_is_complete(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role, max_message_size=100_000)
    with trio.fail_after(GUARD):
        await send_part_of_a_frame(peer, OP_BINARY, 50_000_000, 300_000, fin=True)
        assert (await peer.expect_close()).code == 1009
    with pytest.raises(ConnectionClosed):
        await ws.get_message()


@pytest.mark.parametrize("role", ROLES)
async def test_a_frame_that_would_overflow_the_message_is_refused_before_it_is_complete(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The first frame fits; the second alone would too, but not with the
    # first: it must not be held until whole before being refused.
    _ws, peer = await open_raw(nursery, role, max_message_size=100_000)
    with trio.fail_after(GUARD):
        await peer.send_frame(OP_BINARY, b"\x00" * 60_000, fin=False)
        await send_part_of_a_frame(peer, OP_CONT, 90_000, 50_000, fin=True)
        assert (await peer.expect_close()).code == 1009


@pytest.mark.parametrize("role", ROLES)
async def test_a_streamed_receive_gets_pieces_of_a_frame_as_they_arrive(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role)
    stream = ws.receive_fragments()
    first = in_background(nursery, stream.__anext__)
    await settle()
    with trio.fail_after(GUARD):
        await send_part_of_a_frame(peer, OP_BINARY, 500_000, 30_000, fin=True)
        await first.wait()
    assert first.value == b"\x00" * 30_000


@pytest.mark.parametrize("role", ROLES)
async def test_a_streamed_receive_started_during_a_held_frame_gets_pieces(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The frame's header came before anyone asked for pieces, so the frame
    # was being held until whole; the streamed receive stops that, and what
    # has arrived comes with the next read, long before the frame's end.
    ws, peer = await open_raw(nursery, role)
    payload = os.urandom(500_000)
    whole = frame(OP_BINARY, payload, masked=peer.is_client)
    header = len(whole) - len(payload)
    await peer.send_raw(whole[: header + 30_000])
    await settle()
    stream = ws.receive_fragments()
    first = in_background(nursery, stream.__anext__)
    await settle()
    with trio.fail_after(GUARD):
        await peer.send_raw(whole[header + 30_000 : header + 40_000])
        await first.wait()
        assert first.value == payload[:40_000]
        await peer.send_raw(whole[header + 40_000 :])
        rest = [piece async for piece in stream]
    assert first.value + b"".join(rest) == payload  # type: ignore[operator]


@pytest.mark.parametrize("role", ROLES)
async def test_a_message_in_one_frame_waits_for_its_last_byte(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role)
    whole = frame(OP_BINARY, os.urandom(300_000), masked=peer.is_client)
    await peer.send_raw(whole[:-1])
    await settle()
    with trio.move_on_after(0.05):
        await ws.get_message()
        pytest.fail("a message came before its last byte")
    await peer.send_raw(whole[-1:])
    with trio.fail_after(GUARD):
        message = await ws.get_message()
    assert len(message) == 300_000


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_big_messages_read_in_odd_pieces_round_trip(
    nursery: trio.Nursery, compression: str | None
) -> None:
    options: dict[str, object] = {
        "receive_buffer_size": 997,
        "max_message_size": 1 << 21,
        "compression": compression,
    }
    client, server = await open_pair(nursery, client_options=options, server_options=options)
    messages: list[str | bytes] = [
        os.urandom(700_000),
        ("texte répété ☃ " * 40_000),
        b"",
        "",
        os.urandom(65_536),
    ]
    with trio.fail_after(GUARD):
        for message in messages:
            await client.send_message(message)
            assert await server.get_message() == message
            await server.send_message(message)
            assert await client.get_message() == message


async def test_an_idle_connection_keeps_no_read_and_a_smaller_buffer(
    nursery: trio.Nursery,
) -> None:
    # Issue 3 also counts bytes per idle connection: once the messages are
    # taken, nothing of the reads they came in is kept, and the empty
    # buffer costs less than wsproto's (an object with a dict and a
    # bytearray).
    client, server = await open_pair(nursery)
    for size in (10, 70_000, 300_000):
        await client.send_message(os.urandom(size))
        await server.get_message()
    buffer = server._proto._proto._frame_decoder.buffer  # type: ignore[attr-defined]
    assert isinstance(buffer, _ChunkBuffer)
    assert buffer._chunks == [] and len(buffer) == 0
    ours = sys.getsizeof(buffer) + sys.getsizeof(buffer._chunks)
    theirs = Buffer()
    wsprotos = sys.getsizeof(theirs) + sys.getsizeof(theirs.__dict__) + sys.getsizeof(theirs.buffer)
    assert ours < wsprotos
