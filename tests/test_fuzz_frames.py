"""Property-based fuzzing of the receive path: random and mutated frame
streams (valid messages in fragments, control frames between them, bad
opcodes, reserved bits, oversized or fragmented control frames, bad close
payloads, invalid UTF-8, masking wrong for the role, lengths not in their
shortest form or impossibly long), cut into random reads.

Properties:
- Differential: a wsproto ``Connection`` with the fast paths of
  ``_wire.frame_decoder`` installed (as ``WebSocketConnection`` installs them, and
  the older fast unmasking alone) reports what plain wsproto reports for
  the same bytes: the same messages (joined: the fast path may hand a frame
  over whole where wsproto gives it read by read), pings, pongs and close
  (code and reason), in the same order. Of a message left unfinished when
  the bytes end, the fast path may have handed over less (a binary frame
  is held until whole), never anything else.
- Whole connection: a ``WebSocketConnection`` (either role) fed the stream
  by a raw peer delivers exactly the messages plain wsproto finds before
  the first close, protocol error or message over ``max_message_size``,
  then ``get_message`` raises ``ConnectionClosed`` with the matching code
  (the peer's, 1002/1007 for a protocol error, 1009 for a message too big,
  1006 when the stream just ends), and nothing else; it answers pings in
  order and sends that close code on the wire; never a hang.

Two bugs found here (a frame out of order refused only once whole, a close
frame hiding a pending 1009) have regression tests at the end of each
section. Example counts come from the Hypothesis profile (see
tests/README.md).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing
from conftest import FUZZ_TIME_LIMIT, accept_by_hand, read_request_head
from hypothesis import event, given
from hypothesis import strategies as st
from server_fixtures import upgrade_request
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.extensions import Extension

from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from trio_websocket._server.request import wrap_server_stream
from trio_websocket._wire.frame_decoder import (
    use_compact_event_queue,
    use_fast_receive,
    use_fast_unmasking,
)

pytestmark = pytest.mark.time_limit(FUZZ_TIME_LIMIT)

T = TypeVar("T")

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: Virtual seconds one connection may take: the closing handshake's grace
#: periods are a few seconds.
CONNECTION_TIMEOUT = 120.0


def run_on_autojump_clock(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """One example's trio run, on a fresh autojump clock."""
    return trio.run(function, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# ----------------------------------------------------------------------
# Frames on the wire


@dataclass(frozen=True)
class Frame:
    """One frame as a peer writes it, right or wrong."""

    opcode: int
    payload: bytes
    fin: bool = True
    #: The three reserved bits (RSV1 is 4).
    rsv: int = 0
    #: Masked or not; None: as the receiver's role wants (masked to a server).
    masked: bool | None = None
    #: Masked the other way than ``masked`` says (an error when that is
    #: what the receiver's role wants).
    mask_flipped: bool = False
    #: The length field's size in bytes (0: in the second byte, 2, 8);
    #: None: the shortest form. A longer form than needed is an error.
    length_form: int | None = None
    #: Claim a 64-bit length with the top bit set (an error).
    huge_length: bool = False
    key: bytes = b"\x37\xfa\x21\x3d"

    def serialize(self, to_server: bool) -> bytes:
        first = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        masked = (to_server if self.masked is None else self.masked) != self.mask_flipped
        mask_bit = 0x80 if masked else 0
        size = len(self.payload)
        form = self.length_form
        if form is None or self.huge_length:
            form = 8 if self.huge_length or size > 0xFFFF else 2 if size > 125 else 0
        if form == 0 and size <= 125:
            header = bytes([first, mask_bit | size])
        elif form == 2 and size <= 0xFFFF:
            header = bytes([first, mask_bit | 126]) + size.to_bytes(2, "big")
        else:
            claimed = size | (1 << 63) if self.huge_length else size
            header = bytes([first, mask_bit | 127]) + claimed.to_bytes(8, "big")
        if not masked:
            return header + self.payload
        return header + self.key + xor_mask(self.payload, self.key)


def xor_mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 masking (its own inverse), written independently of the
    library's maskers."""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def serialize(frames: list[Frame], to_server: bool) -> bytes:
    return b"".join(frame.serialize(to_server) for frame in frames)


# ----------------------------------------------------------------------
# Strategies

keys = st.binary(min_size=4, max_size=4)
#: Sizes at the edges of the length forms and of the fast path's buffer
#: (4 KiB reads merged, 8 KiB slices copied).
EDGE_SIZES = [125, 126, 127, 4095, 4096, 4097, 8191, 8192, 8193, 20000, 65535, 65536, 65537, 70001]


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


big_binary = st.builds(random_bytes, st.sampled_from(EDGE_SIZES), st.integers(0, 2**16))
big_text = st.builds(
    lambda size, char: (char * size).encode("utf-8"),
    st.sampled_from([40, 2000, 3000, 22000]),
    st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001f600"]),
)
binary_payloads = st.one_of(st.binary(max_size=140), big_binary)
valid_text_payloads = st.one_of(
    st.text(max_size=60).map(lambda text: text.encode("utf-8")), big_text
)
#: Mostly invalid UTF-8 among them.
text_payloads = st.one_of(valid_text_payloads, st.binary(min_size=1, max_size=20))
small_payloads = st.binary(max_size=125)

#: Close codes a peer may send, and some it may not.
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@st.composite
def close_payloads(draw: st.DrawFn, clean: bool = False) -> bytes:
    if clean:
        kind = draw(st.sampled_from(["valid", "empty"]))
    else:
        kind = draw(st.sampled_from(["valid", "empty", "invalid code", "one byte", "bad utf8"]))
    if kind == "empty":
        return b""
    if kind == "one byte":
        return b"\x03"
    codes = VALID_CLOSE_CODES if kind != "invalid code" else INVALID_CLOSE_CODES
    code = draw(st.sampled_from(codes)).to_bytes(2, "big")
    if kind == "bad utf8":
        return code + b"bye \xff"
    return code + draw(st.text(max_size=30)).encode("utf-8")[:123]


@st.composite
def control_frames(draw: st.DrawFn, clean: bool = False) -> Frame:
    """A ping, pong or close; unless ``clean``, maybe a bad one (too long,
    fragmented, a bad close payload)."""
    opcode = draw(st.sampled_from([PING, PING, PONG, CLOSE]))
    payload = draw(close_payloads(clean)) if opcode == CLOSE else draw(small_payloads)
    frame = Frame(opcode, payload, key=draw(keys))
    flaw = None if clean else draw(st.sampled_from([None] * 4 + ["too long", "not final"]))
    if flaw == "too long":
        frame = replace(frame, payload=payload + b"x" * (126 - len(payload)))
    elif flaw == "not final":
        frame = replace(frame, fin=False)
    return frame


@st.composite
def messages(draw: st.DrawFn, clean: bool = False) -> list[Frame]:
    """One text or binary message in one to four fragments (empty ones
    too, and text cut inside a UTF-8 sequence, both valid), with control
    frames between the fragments; unless ``clean``, the text may be
    invalid UTF-8."""
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    texts = valid_text_payloads if clean else text_payloads
    data = draw(texts if opcode == TEXT else binary_payloads)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    edges = [0, *cuts, len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(edges)]
    frames = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        frames.append(
            Frame(opcode if index == 0 else CONTINUATION, piece, fin=last, key=draw(keys))
        )
        if not last and draw(st.integers(0, 3)) == 0:
            frames.append(draw(control_frames(clean)))
    return frames


@st.composite
def raw_frames(draw: st.DrawFn) -> Frame:
    """Any opcode (the reserved ones too), any bits."""
    return Frame(
        draw(st.integers(0, 15)),
        draw(st.binary(max_size=20)),
        fin=draw(st.booleans()),
        rsv=draw(st.integers(0, 7)),
        masked=draw(st.one_of(st.none(), st.booleans())),
        key=draw(keys),
    )


def tweaked(frame: Frame, flaw: str) -> Frame:
    """``frame`` with one thing wrong."""
    if flaw == "rsv":
        return replace(frame, rsv=4 if frame.rsv == 0 else 0)
    if flaw == "mask":
        return replace(frame, mask_flipped=not frame.mask_flipped)
    if flaw == "long form":
        return replace(frame, length_form=8)
    if flaw == "medium form":
        return replace(frame, length_form=2)
    if flaw == "huge length":
        return replace(frame, huge_length=True)
    if flaw == "reserved opcode":
        return replace(frame, opcode=frame.opcode | 0x3)
    return replace(frame, fin=not frame.fin)


FLAWS = ["rsv", "mask", "long form", "medium form", "huge length", "reserved opcode", "fin"]


@st.composite
def frame_lists(draw: st.DrawFn, clean: bool) -> list[Frame]:
    """Messages and control frames, maybe a close frame at the end; unless
    ``clean``, also raw frames, and maybe one frame with a flaw."""
    frames: list[Frame] = []
    kinds = ["message"] * 4 + ["control"] * 2 + ([] if clean else ["raw"])
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(kinds))
        if kind == "message":
            frames.extend(draw(messages(clean)))
        elif kind == "control":
            frames.append(draw(control_frames(clean)))
        else:
            frames.append(draw(raw_frames()))
    if frames and not clean and draw(st.booleans()):
        index = draw(st.integers(0, len(frames) - 1))
        frames[index] = tweaked(frames[index], draw(st.sampled_from(FLAWS)))
    if draw(st.booleans()):
        frames.append(Frame(CLOSE, draw(close_payloads(clean)), key=draw(keys)))
    return frames


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data``, or (one time in three) with a few bits flipped, bytes
    inserted or a run deleted."""
    if not data or draw(st.integers(0, 2)) > 0:
        return data
    mutated = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(mutated) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip":
            mutated[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            mutated[index:index] = draw(st.binary(min_size=1, max_size=4))
        else:
            del mutated[index : index + draw(st.integers(1, 4))]
        if not mutated:
            break
    return bytes(mutated)


chunk_sizes = st.lists(
    st.one_of(
        st.sampled_from([1, 2, 3, 7, 126, 4095, 4096, 4097, 8192, 65536, 2**20]),
        st.integers(1, 300),
    ),
    min_size=1,
    max_size=8,
)
#: The most reads one stream is cut into (the last takes the rest).
MAX_CHUNKS = 400


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in reads of the given sizes, over and over."""
    chunks: list[bytes] = []
    position = 0
    while position < len(data):
        size = sizes[len(chunks) % len(sizes)]
        if len(chunks) == MAX_CHUNKS - 1:
            size = len(data)
        chunks.append(data[position : position + size])
        position += size
    return chunks


@dataclass(frozen=True)
class Stream:
    """A peer's bytes for a receiver of the given role, and its reads."""

    to_server: bool
    data: bytes
    chunks: list[bytes]


@st.composite
def streams(draw: st.DrawFn, to_server: bool | None = None) -> Stream:
    """A valid stream (half the time), or one with flaws and mutations."""
    if to_server is None:
        to_server = draw(st.booleans())
    clean = draw(st.booleans())
    data = serialize(draw(frame_lists(clean)), to_server)
    if not clean:
        data = draw(byte_mutations(data))
    return Stream(to_server, data, cut(data, draw(chunk_sizes)))


# ----------------------------------------------------------------------
# What a wsproto connection reports


@dataclass
class Report:
    """The events of one connection, data joined per message."""

    #: In order: ("text" | "binary", whole message), ("ping" | "pong",
    #: payload), ("close", code, reason).
    items: list[tuple[object, ...]]
    #: The unfinished message's kind and what arrived of it, if any.
    partial: tuple[str, str | bytes] | None

    @property
    def closed(self) -> bool:
        return bool(self.items) and self.items[-1][0] == "close"


def collect(connection: Connection, chunks: list[bytes], eof: bool) -> Report:
    """Feed ``chunks`` one by one, up to the first close event (a close
    frame, or a protocol error wsproto reports as one), then the end of
    the stream if ``eof``."""
    items: list[tuple[object, ...]] = []
    parts: list[str | bytes] = []
    kind = ""

    def take(events: list[Event]) -> bool:
        nonlocal kind
        for item in events:
            if isinstance(item, (TextMessage, BytesMessage)):
                kind = "text" if isinstance(item, TextMessage) else "binary"
                parts.append(item.data)
                if item.message_finished:
                    items.append((kind, join(parts)))
                    parts.clear()
            elif isinstance(item, (Ping, Pong)):
                items.append(("ping" if isinstance(item, Ping) else "pong", bytes(item.payload)))
            elif isinstance(item, CloseConnection):
                items.append(("close", item.code, item.reason))
                return True
        return False

    for chunk in chunks:
        connection.receive_data(chunk)
        if take(list(connection.events())):
            break
    else:
        if eof:
            connection.receive_data(None)
            take(list(connection.events()))
    return Report(items, (kind, join(parts)) if parts else None)


def join(parts: list[str | bytes]) -> str | bytes:
    if parts and isinstance(parts[0], str):
        return "".join(parts)  # type: ignore[arg-type]
    return b"".join(parts)  # type: ignore[arg-type]


def plain_connection(to_server: bool, extensions: list[Extension] | None = None) -> Connection:
    role = ConnectionType.SERVER if to_server else ConnectionType.CLIENT
    return Connection(role, extensions)


def fast_connection(
    to_server: bool,
    mode: str,
    room: int | None,
    extensions: list[Extension] | None = None,
) -> Connection:
    """A connection with the fast paths installed: the way
    ``WebSocketConnection`` does ("receive"), or the fallback fast
    unmasking alone ("unmasking", servers only)."""
    connection = plain_connection(to_server, extensions)
    if mode == "receive":
        assert use_fast_receive(connection, None if room is None else lambda: room)
    else:
        assert use_fast_unmasking(connection)
    assert use_compact_event_queue(connection)
    return connection


def assert_same_report(fast: Report, plain: Report) -> None:
    assert fast.items == plain.items
    if fast.partial is not None:
        # The fast path holds a binary frame until whole: of an unfinished
        # message it may have handed over less, never more or other.
        assert plain.partial is not None
        assert fast.partial[0] == plain.partial[0]
        assert plain.partial[1][: len(fast.partial[1])] == fast.partial[1]


#: What a receiver lets a binary frame be held for (see ``_wire.frame_decoder``):
#: never, always piece by piece, or a small or large room.
rooms = st.sampled_from([None, 0, 1, 126, 5000, 70000, 2**20])


@given(streams(), st.sampled_from(["receive", "unmasking"]), rooms, st.booleans())
def test_fast_paths_report_what_wsproto_reports(
    stream: Stream, mode: str, room: int | None, eof: bool
) -> None:
    if mode == "unmasking" and not stream.to_server:
        mode = "receive"  # the fast unmasking is a server's fallback only
    plain = collect(plain_connection(stream.to_server), stream.chunks, eof)
    fast = collect(fast_connection(stream.to_server, mode, room), stream.chunks, eof)
    event(f"ends with: {plain.items[-1][0:2] if plain.closed else 'no close'}")
    assert_same_report(fast, plain)


@given(streams(), rooms)
def test_fast_path_reads_a_stream_whole_or_in_pieces_alike(
    stream: Stream, room: int | None
) -> None:
    """The fast path's own chunk buffer, with reads merged and split every
    way, reports the same as with the whole stream in one read."""
    whole = collect(fast_connection(stream.to_server, "receive", room), [stream.data], False)
    pieces = collect(fast_connection(stream.to_server, "receive", room), stream.chunks, False)
    # (A close for invalid UTF-8 names the position in the read it was
    # found in: the reason may differ, the code may not.)
    assert without_reasons(pieces.items) == without_reasons(whole.items)


def without_reasons(items: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [item[:2] if item[0] == "close" else item for item in items]


@pytest.mark.parametrize(
    "frames",
    [
        [Frame(CONTINUATION, b"x" * 10)],
        [Frame(TEXT, b"a", fin=False), Frame(BINARY, b"y" * 10)],
        [Frame(BINARY, b"a", fin=False), Frame(BINARY, b"y" * 10)],
    ],
    ids=["continuation first", "binary inside text", "binary inside binary"],
)
def test_a_frame_out_of_order_is_refused_before_it_is_whole(frames: list[Frame]) -> None:
    """_FastReceiveDecoder.parse_header holds a binary or continuation frame
    until its whole payload has arrived only when it is in order: a frame
    out of order (a continuation with no message begun, a binary frame
    inside a fragmented message) is refused with 1002 at its first payload
    byte, as wsproto refuses it, even when the stream ends before the
    frame does (it used to be held, and the close was then 1006)."""
    data = serialize(frames, to_server=True)[:-5]  # the last frame cut short
    plain = collect(plain_connection(True), [data], eof=True)
    assert plain.items[-1][:2] == ("close", 1002)
    fast = collect(fast_connection(True, "receive", 2**20), [data], eof=True)
    assert fast.items == plain.items


# ----------------------------------------------------------------------
# A whole WebSocketConnection, fed by a raw peer


@dataclass
class Expected:
    messages: list[str | bytes]
    code: int
    #: The pings before the first close event. (After a message too big,
    #: the connection goes on answering pings until the application has
    #: read the messages before it: only then is the 1009 sent.)
    pings: list[bytes]


def expected_by_wsproto(stream: Stream, max_message_size: int, *, bytewise: bool) -> Expected:
    """What plain wsproto finds in the stream: the messages before the
    first close event (the peer's close frame or a protocol error) or
    before a message grows past ``max_message_size`` (then 1009); 1006 if
    the stream just ends. The stream is read whole, or a byte at a time
    (``bytewise``: then wsproto hands over every character of a text
    frame that decodes before an invalid one)."""
    connection = plain_connection(stream.to_server)
    events = []
    data = stream.data
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        connection.receive_data(chunk)
        # (Events queued by the end of the stream come first out of
        # events(): the frames' events must be taken before.)
        events.extend(connection.events())
        if events and isinstance(events[-1], CloseConnection):
            break
    connection.receive_data(None)
    events.extend(connection.events())
    found: list[str | bytes] = []
    pings: list[bytes] = []
    parts: list[str | bytes] = []
    size = 0
    too_big: Expected | None = None
    for item in events:
        if isinstance(item, (TextMessage, BytesMessage)):
            parts.append(item.data)
            size += len(item.data.encode("utf-8") if isinstance(item.data, str) else item.data)
            if size > max_message_size and too_big is None:
                too_big = Expected(list(found), 1009, pings)
            if item.message_finished:
                found.append(join(parts))
                parts.clear()
                size = 0
        elif isinstance(item, Ping):
            pings.append(bytes(item.payload))
        elif isinstance(item, CloseConnection):
            if too_big is not None:
                return too_big
            return Expected(found, item.code, pings)
    raise AssertionError("wsproto reports a close event at the end of the stream")


@dataclass
class Outcome:
    messages: list[str | bytes]
    code: int | None
    #: Everything the connection wrote after the opening handshake.
    output: bytes


async def read_head(stream: trio.abc.Stream) -> bytes:
    """The HTTP head, and nothing after it (the raw peer reads what comes
    next with the frames)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = await stream.receive_some(1)
        assert byte, head
        head += byte
    return head


async def feed_connection(stream: Stream, max_message_size: int, read_size: int) -> Outcome:
    """Open a ``WebSocketConnection`` whose peer is raw (the library is the
    server when the stream goes to a server), send it the stream's reads,
    then end the stream; take messages until ``ConnectionClosed``."""
    client_end, server_end = trio.testing.memory_stream_pair()
    peer = client_end if stream.to_server else server_end
    options = {"max_message_size": max_message_size, "receive_buffer_size": read_size}
    connections: list[WebSocketConnection] = []
    opened = trio.Event()
    outcome = Outcome([], None, b"")

    async def open_library_end() -> None:
        if stream.to_server:
            request = await wrap_server_stream(nursery, server_end, **options)  # type: ignore[arg-type]
            connections.append(await request.accept())
        else:
            connections.append(
                await wrap_client_stream(nursery, client_end, "example.com", "/", **options)  # type: ignore[arg-type]
            )
        opened.set()

    async def handshake_by_hand() -> None:
        if stream.to_server:
            await peer.send_all(upgrade_request())
            assert (await read_head(peer)).startswith(b"HTTP/1.1 101 ")
        else:
            await accept_by_hand(peer, await read_request_head(peer))

    async def send_stream() -> None:
        try:
            for chunk in stream.chunks:
                await peer.send_all(chunk)
                await trio.lowlevel.checkpoint()
            await peer.send_eof()  # type: ignore[attr-defined]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection closed its end

    async def read_output() -> None:
        while chunk := await peer.receive_some():
            outcome.output += chunk

    with trio.fail_after(CONNECTION_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_library_end)
            await handshake_by_hand()
            await opened.wait()
            [ws] = connections
            nursery.start_soon(send_stream)
            nursery.start_soon(read_output)
            outcome.messages, outcome.code = await messages_until_closed(ws, 10_000)
    return outcome


async def messages_until_closed(
    ws: WebSocketConnection, most: int
) -> tuple[list[str | bytes], int | None]:
    """The messages ``ws`` delivers (at most ``most``) and the close code of
    the ``ConnectionClosed`` that ends them (None if none came)."""
    messages: list[str | bytes] = []
    for _ in range(most):
        try:
            messages.append(await ws.get_message())
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return messages, exc.reason.code
    return messages, None


def frames_written(output: bytes, to_server: bool) -> Report:
    """The connection's own frames, read by a plain wsproto peer."""
    return collect(plain_connection(not to_server), [output], False)


@given(
    streams(),
    st.sampled_from([2**20, 1000, 100, 1]),
    st.sampled_from([2**17, 4096, 100, 7, 1]),
)
def test_a_connection_delivers_what_wsproto_finds_then_closes_with_its_code(
    stream: Stream, max_message_size: int, read_size: int
) -> None:
    expected = expected_by_wsproto(stream, max_message_size, bytewise=False)
    # (At most a few hundred reads: a large stream read a byte at a time
    # would take seconds.)
    read_size = max(read_size, len(stream.data) // MAX_CHUNKS)
    outcome = run_on_autojump_clock(feed_connection, stream, max_message_size, read_size)
    event(f"close code {outcome.code}")
    if expected.code == 1007 and outcome.code == 1009:
        # A text message with invalid UTF-8: what decodes before the bad
        # byte is handed over as it arrives, and may pass the size limit
        # first, depending on the reads (most of it in a byte at a time).
        expected = expected_by_wsproto(stream, max_message_size, bytewise=True)
    assert outcome.messages == expected.messages
    written = frames_written(outcome.output, stream.to_server)
    pongs = [item[1] for item in written.items if item[0] == "pong"]
    assert pongs == expected.pings[: len(pongs)]
    assert outcome.code == expected.code
    closes = [item[1] for item in written.items if item[0] == "close"]
    if expected.code == 1006:
        assert closes == []
    else:
        assert closes == [expected.code]


@pytest.mark.parametrize("to_server", [True, False], ids=["server", "client"])
def test_a_close_frame_after_a_message_too_big_does_not_hide_1009(to_server: bool) -> None:
    """A message over max_message_size found while earlier messages wait in
    the inbox leaves its 1009 pending (WebSocketConnection._fail); a close
    frame in the same read is answered with that 1009, not an echo of the
    peer's code, so the peer learns its message was too big (it used to get
    the echo, and get_message raised ConnectionClosed(1000))."""
    data = serialize(
        [Frame(TEXT, b"ok"), Frame(BINARY, b"too big!"), Frame(CLOSE, (1000).to_bytes(2, "big"))],
        to_server,
    )
    outcome = run_on_autojump_clock(feed_connection, Stream(to_server, data, [data]), 4, 65536)
    assert outcome.messages == ["ok"]
    written = frames_written(outcome.output, to_server)
    assert (outcome.code, written.items[-1][:2]) == (1009, ("close", 1009))
