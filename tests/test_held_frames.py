"""Frames held until whole, taken past wsproto (issue 17): a read that
completes the binary frame the decoder holds and a read that only adds
to it are handled by ``_wire.quick_frames.take_whole_messages``, and the
start of one that a read ends in by ``hold_frame_start``, without
wsproto's parse. For
every way of cutting a stream of frames into reads (every single cut,
reads of every small size, random cuts), both roles, every holding rule
(``room``), size and count limits, a reader that tries the quick path on
each read and gives wsproto the rest gets exactly wsproto's events and
errors, and leaves wsproto's state exactly as wsproto's own parse does.
When the quick path says the read is all taken, wsproto would have had
nothing to say about it. And the mechanism itself: what it takes, that it
copies no read, and when it stays away."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_connection import open_raw, settle
from test_quick_frames import (
    BIG,
    TURN,
    binary,
    feed,
    frame,
    protocol,
    state,
    taken,
    text,
)
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, Ping
from wsproto.extensions import PerMessageDeflate

from trio_websocket._wire import fast_paths
from trio_websocket._wire.frame_decoder import (
    _SMALL_READ,
    _ChunkBuffer,
    decoder_holding_frame,
    stop_holding,
    use_compact_event_queue,
    use_fast_receive,
)
from trio_websocket._wire.quick_frames import hold_frame_start, take_whole_messages

pytestmark = pytest.mark.usefixtures("fast_paths_on")

ROOMS = [None, 0, 250, BIG]


def reader_step(
    connection: Connection, read: bytes, max_size: int = BIG, max_count: int = TURN
) -> list[tuple[object, ...]]:
    """One read as a connection's reader handles it: the quick path, then
    wsproto for the rest, if any; the events of both."""
    messages, rest = take_whole_messages(connection, read, max_size, max_count)
    assert len(messages) <= max_count
    events = [taken(message) for message in messages]
    if rest:
        assert bytes(rest) == read[len(read) - len(rest) :]
        if not hold_frame_start(connection, rest, max_size):
            return events + feed(connection, rest)
    # The reader asks wsproto nothing more: it would have had nothing.
    assert feed(connection, b"") == []
    return events


def compare(
    client: bool,
    reads: Sequence[bytes],
    *,
    room: int | None,
    max_size: int = BIG,
    max_count: int = TURN,
) -> None:
    """The reader's way and wsproto's, read by read: the same events, the
    same state."""
    plain = protocol(client, room)
    quick = protocol(client, room)
    for read in reads:
        expected = feed(plain, read)
        assert reader_step(quick, read, max_size, max_count) == expected
        assert state(quick) == state(plain)


def mixed_stream(masked: bool) -> bytes:
    """Frames of every kind a held frame meets: whole and fragmented,
    text, control frames, every short length form, the peer's close."""
    return b"".join(
        [
            binary(bytes(range(200)), masked),
            binary(b"\x01" * 130, masked),  # a 16-bit length
            text("h\u00e9llo " * 10, masked),
            frame(9, b"ping data!", masked=masked),
            binary(b"", masked),
            binary(bytes(range(250)) * 4, masked),
            frame(2, b"ab", masked=masked, fin=False),
            frame(10, b"pong", masked=masked),
            frame(0, b"cd" * 100, masked=masked),
            binary(b"\xfe" * 300, masked),
            text(b"t" * 400, masked),
            binary(b"\x02" * 126, masked),
            frame(8, b"\x03\xe8bye", masked=masked),
        ]
    )


# ----------------------------------------------------------------------
# Every way of cutting


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("room", ROOMS)
def test_every_single_cut(client: bool, room: int | None) -> None:
    stream = mixed_stream(not client)
    for cut in range(len(stream) + 1):
        compare(client, [stream[:cut], stream[cut:]], room=room)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("room", ROOMS)
def test_reads_of_every_small_size(client: bool, room: int | None) -> None:
    """A peer trickling bytes: reads of 1 to 64 bytes, then a few larger
    sizes, each boundary somewhere else in the frames."""
    stream = mixed_stream(not client)
    for size in [*range(1, 65), 100, 127, 255, 256, 1000, 4096]:
        compare(client, [stream[i : i + size] for i in range(0, len(stream), size)], room=room)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize(("max_size", "max_count"), [(BIG, 1), (BIG, 0), (250, TURN), (0, TURN)])
def test_limits(client: bool, max_size: int, max_count: int) -> None:
    """A held frame over the size limit stays wsproto's (which delivers it
    for the reader to refuse with 1009); the count limit holds with a
    held frame completed first."""
    stream = mixed_stream(not client)
    for size in (7, 64, 301, 1000):
        reads = [stream[i : i + size] for i in range(0, len(stream), size)]
        compare(client, reads, room=BIG, max_size=max_size, max_count=max_count)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_large_frames_and_every_long_length_form(client: bool) -> None:
    """Frames of 64 KiB and more (a 64-bit length), cut in their headers,
    keys and payloads, at their ends, and in reads of the sizes a TLS
    stream and a socket give."""
    masked = not client
    stream = (
        binary(bytes(range(256)) * 256, masked)  # 0x10000: the 64-bit form
        + binary(b"\x07" * 70000, masked)
        + text("x" * 70000, masked)
        + binary(b"\x09" * 0xFFFF, masked)  # the largest 16-bit form
        + binary(b"small", masked)
    )
    ends = []
    position = 0
    for size in (0x10000 + 14, 70000 + 14, 70000 + 14, 0xFFFF + 8, 5 + 6):
        ends.append(position)
        position += size if masked else size - 4
    cuts = {c for end in ends for c in range(end - 3, end + 20) if 0 < c < len(stream)}
    cuts |= {len(stream) - 1, 40000, 100000}
    for cut in sorted(cuts):
        compare(client, [stream[:cut], stream[cut:]], room=BIG)
    for size in (1000, 16384, 65536, 65550, 131072 - 28, 131072):
        reads = [stream[i : i + size] for i in range(0, len(stream), size)]
        for room in (BIG, 0x10000, 70000):
            compare(client, reads, room=room)


@st.composite
def cut_streams(draw: st.DrawFn) -> tuple[bool, list[bytes], int | None, int, int]:
    client = draw(st.booleans())
    masked = not client
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["binary", "binary", "text", "ping", "fragments", "odd"]))
        size = draw(st.sampled_from([0, 1, 125, 126, 300, 2000, 5000]))
        payload = draw(st.binary(min_size=min(size, 8), max_size=8)) * (size // 8 + 1)
        payload = payload[:size]
        if kind == "binary":
            parts.append(binary(payload, masked))
        elif kind == "text":
            parts.append(text(payload.hex()[:size], masked))
        elif kind == "ping":
            parts.append(frame(9, payload[:125], masked=masked))
        elif kind == "fragments":
            parts.append(frame(2, payload, masked=masked, fin=False))
            parts.append(frame(0, payload[:50], masked=masked))
        else:
            parts.append(
                frame(
                    draw(st.integers(0, 15)),
                    payload[:20],
                    masked=draw(st.booleans()),
                    fin=draw(st.booleans()),
                    rsv=draw(st.integers(0, 7)),
                )
            )
    if draw(st.booleans()):
        parts.append(frame(8, b"\x03\xe8", masked=masked))
    stream = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    room = draw(st.sampled_from([None, 0, 126, 300, 2000, BIG]))
    max_size = draw(st.sampled_from([0, 125, 2000, BIG]))
    max_count = draw(st.sampled_from([0, 1, 2, TURN]))
    return client, reads, room, max_size, max_count


@settings(max_examples=400)
@given(cut_streams())
def test_random_streams_cut_at_random(
    case: tuple[bool, list[bytes], int | None, int, int],
) -> None:
    client, reads, room, max_size, max_count = case
    compare(client, reads, room=room, max_size=max_size, max_count=max_count)


# ----------------------------------------------------------------------
# What it takes


def held(client: bool = False, room: int = BIG) -> Connection:
    return protocol(client, room)


def test_a_binary_frame_a_read_ends_in_is_held_uncopied() -> None:
    """The start of a binary frame at the end of a read is held until
    whole with wsproto never asked, what is left of the read kept as it
    came; a read that is only such a start is kept whole."""
    connection = held()
    big = binary(b"\x05" * 100_000, True)
    read = binary(b"first", True) + big[:50_000]
    messages, rest = take_whole_messages(connection, read, BIG, TURN)
    assert (list(messages), rest) == ([b"first"], big[:50_000])
    assert hold_frame_start(connection, rest, BIG)
    decoder = decoder_holding_frame(connection, BIG)
    assert decoder is not None
    assert decoder.header is not None and decoder.header.payload_len == 100_000
    buffer = decoder.buffer
    assert isinstance(buffer, _ChunkBuffer)
    assert buffer._chunks[0] is read  # kept, not copied
    assert len(buffer) == 50_000 - 14
    alone = held()
    assert take_whole_messages(alone, big[:50_000], BIG, TURN) == ((), big[:50_000])
    start = big[:50_000]
    assert hold_frame_start(alone, start, BIG)
    assert alone._proto._frame_decoder.buffer._chunks[0] is start


def test_a_frame_start_is_held_only_as_the_decoder_would() -> None:
    """Not with ``room`` too small (nor 0: a streamed receive), not over
    ``max_size``, not text, not a whole frame, not its header cut."""
    big = binary(b"\x05" * 1000, True)
    for room, max_size, start in [
        (999, BIG, big[:500]),
        (0, BIG, big[:500]),
        (BIG, 999, big[:500]),
        (BIG, BIG, text(b"t" * 1000, True)[:500]),
        (BIG, BIG, big),
        (BIG, BIG, big[:7]),  # the key cut
        (BIG, BIG, big[:3]),
    ]:
        connection = held(room=room)
        assert not hold_frame_start(connection, start, max_size)
        assert decoder_holding_frame(connection, BIG) is None


def test_a_read_within_a_held_frame_goes_to_its_buffer_uncopied() -> None:
    connection = held()
    big = binary(b"\x05" * 100_000, True)
    assert reader_step(connection, big[:20_000]) == []
    middle = big[20_000:60_000]
    assert len(middle) >= _SMALL_READ
    assert take_whole_messages(connection, middle, BIG, TURN) == ((), b"")
    decoder = decoder_holding_frame(connection, BIG)
    assert decoder is not None
    assert decoder.buffer._chunks[-1] is middle


def test_a_read_completing_a_held_frame_delivers_it_whole() -> None:
    """The frame's payload, from the reads it spans, unmasked into one
    ``bytes``; the whole frames after it in the read come too."""
    connection = held()
    payload = bytes(range(256)) * 400
    big = binary(payload, True)
    assert hold_frame_start(connection, big[:30_000], BIG)
    assert take_whole_messages(connection, big[30_000:70_000], BIG, TURN) == ((), b"")
    read = big[70_000:] + binary(b"next", True) + text("\u00e9t\u00e9", True)
    messages, rest = take_whole_messages(connection, read, BIG, TURN)
    assert list(messages) == [payload, b"next", "\u00e9t\u00e9"]
    assert type(messages[0]) is bytes
    assert rest == b""
    assert decoder_holding_frame(connection, BIG) is None
    assert len(connection._proto._frame_decoder.buffer) == 0


def test_a_client_completes_unmasked_frames() -> None:
    connection = held(client=True)
    payload = b"\x11" * 5000
    frame_bytes = binary(payload, False)
    assert hold_frame_start(connection, frame_bytes[:1000], BIG)
    messages, rest = take_whole_messages(connection, frame_bytes[1000:], BIG, TURN)
    assert (list(messages), rest) == ([payload], b"")


# ----------------------------------------------------------------------
# When it stays away


def started(connection: Connection, size: int = 5000) -> bytes:
    """Hold the start of a binary frame of ``size`` in ``connection`` (by
    wsproto's own parse); returns the rest of the frame."""
    whole = binary(b"\x03" * size, True)
    assert feed(connection, whole[:100]) == []
    assert decoder_holding_frame(connection, BIG) is not None
    return whole[100:]


def test_not_with_the_fast_paths_off(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = held()
    rest = started(connection)
    monkeypatch.setattr(fast_paths, "ENABLED", False)
    assert take_whole_messages(connection, rest, BIG, TURN) == ((), rest)


def test_not_once_a_streamed_receive_wants_pieces() -> None:
    """``stop_holding``: the frame comes piece by piece from wsproto."""
    connection = held()
    rest = started(connection)
    stop_holding(connection)
    assert decoder_holding_frame(connection, BIG) is None
    assert take_whole_messages(connection, rest[:1000], BIG, TURN) == ((), rest[:1000])
    events = feed(connection, rest[:1000])
    assert len(events) == 1 and events[0][0] == "bytes" and events[0][3] is False


def test_not_after_our_close() -> None:
    """Waiting for the answer to our close, wsproto still parses; the
    quick path does not (it needs the connection open)."""
    connection = held()
    reference = held()
    rest = started(connection)
    started(reference)
    connection.send(CloseConnection(1000))
    reference.send(CloseConnection(1000))
    assert decoder_holding_frame(connection, BIG) is None
    assert take_whole_messages(connection, rest, BIG, TURN) == ((), rest)
    assert feed(connection, rest) == feed(reference, rest)


def test_not_while_an_event_is_queued() -> None:
    connection = held()
    rest = started(connection)
    connection._events.append(Ping(b"queued"))
    assert take_whole_messages(connection, rest, BIG, TURN) == ((), rest)


def test_not_with_an_extension() -> None:
    deflate = PerMessageDeflate()
    deflate._enabled = True
    connection = Connection(ConnectionType.SERVER, extensions=[deflate])
    assert use_fast_receive(connection, lambda: BIG)
    use_compact_event_queue(connection)
    whole = binary(b"\x03" * 5000, True)
    assert take_whole_messages(connection, whole[:100], BIG, TURN) == ((), whole[:100])
    feed(connection, whole[:100])
    assert decoder_holding_frame(connection, BIG) is None


def test_not_a_control_frame_or_text() -> None:
    """wsproto holds control frames until whole too, and text is never
    held: neither is the quick path's."""
    for start in (frame(9, b"p" * 100, masked=True)[:50], text(b"t" * 5000, True)[:100]):
        connection = held()
        feed(connection, start)
        assert decoder_holding_frame(connection, BIG) is None


# ----------------------------------------------------------------------
# A connection's reader


@pytest.mark.parametrize("role", ["client", "server"])
async def test_the_budget_stops_after_a_held_frame_completed(
    nursery: trio.Nursery, role: str
) -> None:
    """A read that completes a held frame and brings whole messages after
    it, with the inbox's budget reached at the first: the reader stops
    parsing there, and the others come, in order, once there is room (it
    must feed wsproto the read from the first message not delivered, which
    is counted from the read's end: the held frame's bytes only end in
    it)."""
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role, max_buffered_bytes=10_000)
        masked = peer.is_client
        big = b"\x04" * 20_000
        whole = binary(big, masked)
        after = [b"a" * 3000, b"b" * 3000, b"c" * 3000]
        await peer.send_raw(whole[:5000])
        await settle()
        await peer.send_raw(whole[5000:] + b"".join(binary(m, masked) for m in after))
        await settle()
        assert ws.statistics().messages_buffered == 1  # the budget: one message
        for expected in [big, *after]:
            assert await ws.get_message() == expected


@pytest.mark.parametrize("role", ["client", "server"])
async def test_the_budget_stops_before_a_frame_a_read_ends_in(
    nursery: trio.Nursery, role: str
) -> None:
    """Whole messages, the budget reached part-way through them, and the
    start of a big frame at the end of the read: the reader stops there,
    and wsproto gets the messages not delivered and the frame's start
    behind them, in order (the frame is not held ahead of them)."""
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role, max_buffered_bytes=10_000)
        masked = peer.is_client
        small = [bytes([i]) * 3000 for i in range(6)]
        big = b"\x04" * 20_000
        whole = binary(big, masked)
        await peer.send_raw(b"".join(binary(m, masked) for m in small) + whole[:5000])
        await settle()
        assert ws.statistics().messages_buffered < len(small)  # stopped at the budget
        await peer.send_raw(whole[5000:] + binary(b"after", masked))
        for expected in [*small, big, b"after"]:
            assert await ws.get_message() == expected
