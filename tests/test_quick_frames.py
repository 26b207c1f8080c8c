"""``_wire.quick_frames.take_whole_messages`` (issue 17): the messages it
takes from the start of a read, followed by what wsproto makes of the
rest, are exactly the events wsproto makes of the whole read, for every
first two bytes of a frame, every length form, both roles, valid and
invalid UTF-8, size limits, and random mixes of frames; and wsproto's
state afterwards is the one it would have reached itself (the same events
and errors for whatever comes next). It takes nothing unless the
connection is plainly between messages, and never more than it is
allowed to."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from trio_websocket._wire import fast_paths
from trio_websocket._wire import frame_decoder as _fastpath
from trio_websocket._wire.frame_decoder import (
    _ChunkBuffer,
    use_compact_event_queue,
    use_fast_receive,
)
from trio_websocket._wire.masking import apply_mask_bytes
from trio_websocket._wire.quick_frames import frames_size, take_whole_messages

pytestmark = pytest.mark.usefixtures("fast_paths_on")

KEY = b"\x5a\xc3\x0f\x96"
BIG = 1 << 30
#: The reader's per-turn bound, as the connection passes it.
TURN = 1024


def frame(
    opcode: int,
    payload: bytes,
    *,
    masked: bool,
    fin: bool = True,
    rsv: int = 0,
    length_code: int | None = None,
    length: int | None = None,
) -> bytes:
    """One frame as a peer sends it; ``length_code`` (126 or 127) forces an
    extended length form, ``length`` a declared length other than the
    payload's."""
    declared = len(payload) if length is None else length
    if length_code is None:
        length_code = declared if declared < 126 else 126 if declared <= 0xFFFF else 127
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    header = bytes((first, (0x80 if masked else 0) | length_code))
    if length_code == 126:
        header += declared.to_bytes(2, "big")
    elif length_code == 127:
        header += declared.to_bytes(8, "big")
    if masked:
        return header + KEY + apply_mask_bytes(payload, KEY)
    return header + payload


def binary(payload: bytes, masked: bool, **options: int | bool) -> bytes:
    return frame(2, payload, masked=masked, **options)  # type: ignore[arg-type]


def text(payload: bytes | str, masked: bool, **options: int | bool) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return frame(1, payload, masked=masked, **options)  # type: ignore[arg-type]


def protocol(client: bool, room: int | None = None, **options: object) -> Connection:
    """A wsproto connection with the fast receive installed, as a
    ``WebSocketConnection`` has it, after the reader's first parse."""
    kind = ConnectionType.CLIENT if client else ConnectionType.SERVER
    connection = Connection(kind, **options)  # type: ignore[arg-type]
    assert use_fast_receive(connection, None if room is None else (lambda: room))
    use_compact_event_queue(connection)
    assert list(connection.events()) == []
    return connection


def describe(event: Event) -> tuple[object, ...]:
    if isinstance(event, BytesMessage):
        return ("bytes", bytes(event.data), event.frame_finished, event.message_finished)
    if isinstance(event, TextMessage):
        return ("text", event.data, event.frame_finished, event.message_finished)
    if isinstance(event, (Ping, Pong)):
        return (type(event).__name__, bytes(event.payload))
    if isinstance(event, CloseConnection):
        return ("close", int(event.code), event.reason)
    raise AssertionError(event)  # pragma: no cover


def taken(message: bytes | str) -> tuple[object, ...]:
    """A taken message as the event wsproto would have made of it."""
    return ("bytes" if isinstance(message, bytes) else "text", message, True, True)


def feed(connection: Connection, data: bytes | bytearray) -> list[tuple[object, ...]]:
    """What wsproto makes of ``data``: its events, or its refusal."""
    try:
        connection.receive_data(data)  # type: ignore[arg-type]
    except LocalProtocolError as exc:
        return [("refused", str(exc))]
    return [describe(event) for event in connection.events()]


def state(connection: Connection) -> tuple[object, ...]:
    """Everything of wsproto's receive state, and the bytes it holds."""
    frame_protocol = connection._proto
    decoder = frame_protocol._frame_decoder
    buffer = decoder.buffer
    assert isinstance(buffer, _ChunkBuffer)
    held = b"".join(buffer._chunks)[buffer._start :]
    messages = frame_protocol._message_decoder
    return (
        connection.state,
        list(connection._events),
        frame_protocol._parse_more.gi_frame is None,  # type: ignore[attr-defined]
        decoder.header,
        decoder.effective_opcode,
        type(decoder.masker).__name__,
        getattr(decoder.masker, "_masking_key", None),
        decoder.payload_required,
        decoder.payload_consumed,
        decoder.in_text_message,
        decoder.in_compressed_message,
        decoder.in_message,
        held,
        len(buffer),
        messages.opcode,
        messages.decoder is None,
    )


def check(
    client: bool,
    data: bytes,
    *,
    then: Sequence[bytes] = (),
    max_size: int = BIG,
    max_count: int = TURN,
    room: int | None = None,
) -> list[bytes | str]:
    """Compare the quick path with wsproto on ``data`` (one read), then on
    each read of ``then``; returns the messages taken."""
    plain = protocol(client, room)
    quick = protocol(client, room)
    expected = feed(plain, data)
    messages, rest = take_whole_messages(quick, data, max_size, max_count)
    messages = list(messages)
    assert len(messages) <= max_count
    if not messages and rest:
        assert rest is data
    for message in messages:
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        assert size <= max_size
    if rest:
        assert frames_size(messages, masked=not client) == len(data) - len(rest)
    else:
        # (Or the read ends in a binary frame now held until whole.)
        assert frames_size(messages, masked=not client) <= len(data)
    assert bytes(rest) == data[len(data) - len(rest) :]
    got = [taken(message) for message in messages] + feed(quick, rest)
    assert got == expected
    assert state(quick) == state(plain)
    for read in then:
        assert feed(quick, read) == feed(plain, read)
        assert state(quick) == state(plain)
    return messages


# ----------------------------------------------------------------------
# Headers


def _tail_for(second: int) -> bytes:
    """The rest of a frame after its first two bytes: the length the code
    in ``second`` announces (shortest form), a key if masked, a payload of
    that length (ASCII, so valid text too)."""
    code = second & 0x7F
    if code == 126:
        length, extension = 300, (300).to_bytes(2, "big")
    elif code == 127:
        length, extension = 0x10000, (0x10000).to_bytes(8, "big")
    else:
        length, extension = code, b""
    key = KEY if second & 0x80 else b""
    payload = b"a" * length
    if key:
        payload = apply_mask_bytes(payload, KEY)
    return extension + key + payload


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_every_first_two_bytes(client: bool) -> None:
    """Every first two bytes of a frame, between two plain whole frames:
    the quick path takes exactly what wsproto delivers as whole messages
    before it, and stops at it unless it is a whole FIN data frame."""
    masked = not client
    before = binary(b"before", masked) + text("avant", masked)
    after = binary(b"after", masked)
    for first, second in itertools.product(range(256), range(256)):
        head = bytes((first, second))
        middle = head + _tail_for(second)
        messages = check(client, before + middle + after)
        plain_data = first in (0x81, 0x82) and bool(second & 0x80) == masked
        # Only a whole text or binary frame, masked as the role wants, is
        # taken (with the frame after it); anything else stops the taking.
        assert len(messages) == (4 if plain_data else 2), (hex(first), hex(second))


# Every way of writing a length: (code, declared length), shortest or not.
LENGTH_FORMS = [
    (None, 0),
    (None, 1),
    (None, 125),
    (None, 126),
    (None, 127),
    (None, 0xFFFF),
    (None, 0x10000),
    (126, 0),
    (126, 125),
    (127, 0),
    (127, 125),
    (127, 126),
    (127, 0xFFFF),
]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize(("code", "length"), LENGTH_FORMS)
@pytest.mark.parametrize("opcode", [1, 2])
def test_length_forms_whole_and_cut(
    client: bool, code: int | None, length: int, opcode: int
) -> None:
    """Each length form, whole and cut at every byte of its header and
    key and a few places in its payload, the rest coming in a later read:
    a non-shortest form is never taken (wsproto refuses it with 1002)."""
    masked = not client
    first = binary(b"first", masked)
    subject = frame(opcode, b"z" * length, masked=masked, length_code=code)
    header_size = len(subject) - length
    shortest = code is None
    cuts = set(range(header_size + 1)) | {header_size + length // 2, len(subject) - 1}
    cuts.add(len(subject))
    for cut in sorted(c for c in cuts if 0 <= c <= len(subject)):
        read = first + subject[:cut]
        later = subject[cut:] + binary(b"later", masked)
        messages = check(client, read, then=[later])
        whole = cut == len(subject)
        assert len(messages) == (2 if whole and shortest else 1)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_top_bit_of_a_64_bit_length(client: bool) -> None:
    masked = not client
    subject = frame(2, b"", masked=masked, length_code=127, length=(1 << 63) | 0x10000)
    assert check(client, binary(b"x", masked) + subject + b"\x00" * 16) == [b"x"]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_reserved_bits_and_opcodes_stop_the_taking(client: bool) -> None:
    masked = not client
    for rsv, opcode in itertools.product(range(8), range(16)):
        subject = frame(opcode, b"abc", masked=masked, rsv=rsv)
        messages = check(client, binary(b"x", masked) + subject + binary(b"y", masked))
        expected = 3 if rsv == 0 and opcode in (1, 2) else 1
        assert len(messages) == expected


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_masking_the_role_does_not_want(client: bool) -> None:
    """A server refuses unmasked frames and a client masked ones (1002):
    the quick path leaves them to wsproto."""
    masked = not client
    wrong = binary(b"wrong", not masked)
    assert check(client, binary(b"ok", masked) + wrong) == [b"ok"]
    assert check(client, wrong + binary(b"ok", masked)) == []


# ----------------------------------------------------------------------
# Text

VALID_TEXT = [
    b"",
    b"plain ascii",
    "caf\u00e9".encode(),
    "\u20ac uro".encode(),
    "\U0001f600 face".encode(),
    "\uffff\U0010ffff".encode(),
]
INVALID_TEXT = [
    b"\xff",
    b"\x80",  # a continuation byte alone
    b"\xc0\xaf",  # an overlong slash
    b"\xe0\x80\xaf",  # overlong, three bytes
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"ok \xf5\x80\x80\x80",
    "caf\u00e9".encode()[:-1],  # cut at the end of the frame
    "\u20ac".encode()[:2],
    "\U0001f600".encode()[:3],
    "\U0001f600".encode()[:1],
]


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("payload", VALID_TEXT + INVALID_TEXT)
def test_text_is_taken_only_when_valid(client: bool, payload: bytes) -> None:
    """A text frame with invalid UTF-8 (cut multi-byte sequences too) is
    left to wsproto with everything after it: wsproto closes with 1007
    after delivering what came before."""
    masked = not client
    read = binary(b"before", masked) + text(payload, masked) + binary(b"after", masked)
    messages = check(client, read, then=[binary(b"later", masked)])
    valid = payload in VALID_TEXT
    assert messages == ([b"before", payload.decode(), b"after"] if valid else [b"before"])


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_multibyte_cut_across_fragments(client: bool) -> None:
    """A character split between two fragments is valid; the fragments
    are wsproto's (they are not whole messages), and the quick path takes
    again once the message is over."""
    masked = not client
    euro = "\u20ac".encode()
    read = (
        text(b"x" + euro[:2], masked, fin=False)
        + frame(0, euro[2:], masked=masked)
        + binary(b"next", masked)
    )
    assert check(client, read) == []
    # The message ended inside the read: the next read is taken again.
    plain = protocol(client)
    feed(plain, read)
    messages, rest = take_whole_messages(plain, binary(b"again", masked), BIG, TURN)
    assert (list(messages), rest) == ([b"again"], b"")


# ----------------------------------------------------------------------
# Limits


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("max_size", [0, 1, 16, 125, 126, 300, 0xFFFF, 0x10000])
def test_frames_over_the_size_limit_are_left_to_wsproto(client: bool, max_size: int) -> None:
    masked = not client
    for size in {0, max_size - 1, max_size, max_size + 1}:
        if size < 0:
            continue
        for make in (binary, text):
            read = binary(b"", masked) + make(b"s" * size, masked) + binary(b"", masked)
            messages = check(client, read, max_size=max_size, room=max_size)
            assert len(messages) == (3 if size <= max_size else 1)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_at_most_max_count(client: bool) -> None:
    masked = not client
    read = binary(b"", masked) * 2500
    for max_count in (0, 1, 7, TURN, 3000):
        messages = check(client, read, max_count=max_count)
        assert len(messages) == min(max_count, 2500)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_frames_size_says_where_the_untaken_start(client: bool) -> None:
    """A caller that delivers only the first ``k`` messages taken feeds
    wsproto the read from ``frames_size(messages[:k])`` on, and gets the
    others again, as wsproto's events."""
    masked = not client
    payloads: list[bytes | str] = [b"", "\u00e9t\u00e9", b"b" * 126, "t" * 70000, b"c" * 0x10000]
    read = (
        b"".join(binary(p, masked) if isinstance(p, bytes) else text(p, masked) for p in payloads)
        + binary(b"partial", masked)[:-1]
    )
    messages, rest = take_whole_messages(protocol(client), read, BIG, TURN)
    assert rest == binary(b"partial", masked)[:-1]
    assert list(messages) == payloads
    for count in range(len(payloads) + 1):
        offset = frames_size(messages[:count], masked=masked)
        events = feed(protocol(client, room=BIG), read[offset:])
        assert events == [taken(m) for m in payloads[count:]]


# ----------------------------------------------------------------------
# When nothing may be taken


def test_nothing_with_the_fast_paths_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_paths, "ENABLED", False)
    read = binary(b"x", True)
    messages, rest = take_whole_messages(protocol(False), read, BIG, TURN)
    assert (messages, rest) == ((), read)
    assert rest is read


def test_nothing_without_the_fast_receive() -> None:
    """wsproto's own decoder (what a connection keeps when the fast paths
    are off, or wsproto's layout is unknown)."""
    connection = Connection(ConnectionType.SERVER)
    read = binary(b"x", True)
    assert take_whole_messages(connection, read, BIG, TURN) == ((), read)
    assert feed(connection, read) == [taken(b"x")]


def test_nothing_with_an_extension() -> None:
    deflate = PerMessageDeflate()
    deflate._enabled = True
    connection = protocol(False, extensions=[deflate])
    read = binary(b"x", True)
    assert take_whole_messages(connection, read, BIG, TURN) == ((), read)
    assert feed(connection, read) == [taken(b"x")]


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param(binary(b"partial", True)[:-2], id="a frame cut short"),
        pytest.param(binary(b"abc", True)[:1], id="a header cut short"),
        # (The next read is then that ping's payload, 10 bytes that look
        # like a whole binary frame.)
        pytest.param(frame(9, b"0123456789", masked=True)[:6], id="a ping's header alone"),
        pytest.param(binary(b"frag", True, fin=False), id="a fragmented message"),
        pytest.param(text(b"frag", True, fin=False), id="a fragmented text"),
        pytest.param(frame(8, b"\x03\xe8", masked=True), id="the peer's close"),
        pytest.param(frame(0, b"x", masked=True), id="a parse error (1002)"),
        pytest.param(text(b"\xff", True), id="a UTF-8 error (1007)"),
        pytest.param(binary(b"x", False), id="an unmasked frame (1002)"),
    ],
)
def test_nothing_unless_between_messages(earlier: bytes) -> None:
    """After any of these, the next read goes to wsproto whole (and what
    wsproto does with it, if anything, is unchanged)."""
    connection = protocol(False)
    reference = protocol(False)
    feed(connection, earlier)
    feed(reference, earlier)
    read = binary(b"next", True) + binary(b"more", True)
    messages, rest = take_whole_messages(connection, read, BIG, TURN)
    assert (messages, rest) == ((), read)
    assert feed(connection, rest) == feed(reference, read)


def test_nothing_when_wsproto_is_laid_out_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wsproto whose state is not where ``frame_decoder`` looks for it
    (the check made at import) keeps all of its parsing."""
    assert _fastpath._BETWEEN_MESSAGES_KNOWN  # the pinned wsproto
    monkeypatch.setattr(_fastpath, "_BETWEEN_MESSAGES_KNOWN", False)
    read = binary(b"x", True)
    assert take_whole_messages(protocol(False), read, BIG, TURN) == ((), read)


def test_nothing_while_an_event_is_queued() -> None:
    """wsproto hands out its queued events before it parses anything
    (it queues one only when the stream ends, and is closed then; this
    guard keeps the order should that change)."""
    connection = protocol(False)
    connection._events.append(Ping(b"queued"))
    read = binary(b"x", True)
    assert take_whole_messages(connection, read, BIG, TURN) == ((), read)
    assert feed(connection, read) == [("Ping", b"queued"), taken(b"x")]


def test_nothing_after_sending_a_close() -> None:
    connection = protocol(False)
    connection.send(CloseConnection(1000))
    read = binary(b"x", True)
    assert take_whole_messages(connection, read, BIG, TURN) == ((), read)
    assert feed(connection, read) == [taken(b"x")]


def test_nothing_while_parsing_is_paused() -> None:
    """The reader stopped parsing part-way through a read (a budget): the
    bytes it left in wsproto's buffer come first."""
    connection = protocol(False)
    connection.receive_data(binary(b"one", True) + binary(b"two", True))
    events = connection.events()
    assert describe(next(events)) == taken(b"one")
    del events
    read = binary(b"three", True)
    assert take_whole_messages(connection, read, BIG, TURN) == ((), read)
    assert feed(connection, read) == [taken(b"two"), taken(b"three")]


# ----------------------------------------------------------------------
# What comes out


def test_one_read_of_pipelined_frames() -> None:
    """The request/response case and its pipelined form: every frame
    taken, nothing left for wsproto, and no copy of the read kept."""
    read = binary(b"m" * 16, True) * 32
    connection = protocol(False)
    messages, rest = take_whole_messages(connection, read, BIG, TURN)
    assert list(messages) == [b"m" * 16] * 32
    assert rest == b""
    assert all(type(message) is bytes for message in messages)
    assert len(connection._proto._frame_decoder.buffer) == 0


def test_a_bytearray_read() -> None:
    read = bytearray(binary(b"x", False) + text(b"y", False) + binary(b"cut", False)[:-1])
    messages, rest = take_whole_messages(protocol(True), read, BIG, TURN)
    assert list(messages) == [b"x", "y"]
    assert type(messages[0]) is bytes
    assert rest == binary(b"cut", False)[:-1]
    # Nothing taken: the read itself comes back, not a copy.
    untaken = bytearray(frame(9, b"ping", masked=False))
    messages, rest = take_whole_messages(protocol(True), untaken, BIG, TURN)
    assert messages == ()
    assert rest is untaken


def test_a_hostile_length_costs_nothing() -> None:
    """A header announcing 2**62 bytes, or more than the limit, is looked
    at, not believed: nothing is allocated for it."""
    huge = frame(2, b"", masked=True, length_code=127, length=1 << 62)
    connection = protocol(False)
    messages, rest = take_whole_messages(connection, huge + b"\x00" * 64, BIG, TURN)
    assert (messages, len(rest)) == ((), len(huge) + 64)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_reads_after_control_frames_and_held_frames(client: bool) -> None:
    """Whole frames taken after a read that left the decoder's leftovers
    of a control frame (its length still required) or of a frame held
    until whole: the decoder ends as wsproto's own parse leaves it."""
    masked = not client
    held = binary(b"h" * 300, masked)
    reads = [
        frame(9, b"ping payload", masked=masked),
        binary(b"one", masked) + text("two", masked),
        frame(10, b"pong", masked=masked) + binary(b"three", masked),
        held[:100],
        held[100:],
        binary(b"four", masked),
        frame(8, b"\x03\xe8", masked=masked),
        binary(b"after the close", masked),
    ]
    plain = protocol(client, room=BIG)
    quick = protocol(client, room=BIG)
    for read in reads:
        expected = feed(plain, read)
        messages, rest = take_whole_messages(quick, read, BIG, TURN)
        assert [taken(m) for m in messages] + feed(quick, rest) == expected
        assert state(quick) == state(plain)


# ----------------------------------------------------------------------
# Random mixes


@st.composite
def reads(draw: st.DrawFn) -> tuple[bool, bytes, list[bytes], int, int, int | None]:
    client = draw(st.booleans())
    masked = not client
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(
            st.sampled_from(
                ["binary", "text", "bad text", "ping", "pong", "close", "fragments", "odd"]
            )
        )
        payload = draw(st.binary(max_size=300))
        if kind == "binary":
            parts.append(binary(payload, masked))
        elif kind == "text":
            parts.append(text(draw(st.text(max_size=100)), masked))
        elif kind == "bad text":
            chars = draw(st.text(min_size=1, max_size=5)).encode()
            parts.append(text(chars[: draw(st.integers(0, len(chars)))] + payload[:3], masked))
        elif kind in ("ping", "pong"):
            parts.append(frame(9 if kind == "ping" else 10, payload[:125], masked=masked))
        elif kind == "close":
            parts.append(frame(8, b"\x03\xe8" + payload[:10], masked=masked))
        elif kind == "fragments":
            opcode = draw(st.sampled_from([1, 2]))
            parts.append(frame(opcode, b"a", masked=masked, fin=False))
            if draw(st.booleans()):
                parts.append(frame(9, b"p", masked=masked))
            parts.append(frame(0, b"b", masked=masked))
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
    stream = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=3)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    max_size = draw(st.sampled_from([0, 5, 100, 125, 126, BIG]))
    max_count = draw(st.sampled_from([0, 1, 3, TURN]))
    room = draw(st.sampled_from([None, 0, 50, BIG]))
    return client, pieces[0], pieces[1:], max_size, max_count, room


@given(reads())
def test_random_mixes_match_wsproto(
    case: tuple[bool, bytes, list[bytes], int, int, int | None],
) -> None:
    client, first, later, max_size, max_count, room = case
    check(client, first, then=later, max_size=max_size, max_count=max_count, room=room)


@given(reads())
def test_random_mixes_read_by_read(
    case: tuple[bool, bytes, list[bytes], int, int, int | None],
) -> None:
    """As a reader does it: the quick path tried on every read, wsproto
    fed the rest, against wsproto fed every read."""
    client, first, later, max_size, max_count, room = case
    plain = protocol(client, room)
    quick = protocol(client, room)
    for read in [first, *later]:
        expected = feed(plain, read)
        messages, rest = take_whole_messages(quick, read, max_size, max_count)
        got = [taken(m) for m in messages] + feed(quick, rest)
        assert got == expected
        assert state(quick) == state(plain)
