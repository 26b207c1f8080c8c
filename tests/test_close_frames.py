"""``_wire.close_frames`` (issue 17): a close frame taken from a read
gives exactly the event wsproto would give and leaves wsproto where its
own parse would, for every code, reasons valid and not, every frame shape
and both roles; whatever it does not take, wsproto gets unchanged. Our
close frames are the bytes wsproto would send (the same payload under a
fresh mask for a client), with the same state after and the same errors.
At connection level, both close handshakes (the peer's and ours) go the
quick way and end as before."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_connection import build_frame, close_payload, open_raw
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from trio_websocket import ConnectionClosed, WebSocketConnection
from trio_websocket._wire import fast_paths
from trio_websocket._wire.close_frames import close_frame, take_close_frame
from trio_websocket._wire.frame_decoder import use_compact_event_queue, use_fast_receive
from trio_websocket._wire.masking import apply_mask_bytes
from trio_websocket.testing import open_memory_pair

pytestmark = pytest.mark.usefixtures("fast_paths_on")

KEY = b"\x37\xfa\x21\x3d"


def protocol(client: bool) -> Connection:
    """A wsproto connection with the fast receive, as a connection has it."""
    connection = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    assert use_fast_receive(connection)
    use_compact_event_queue(connection)
    return connection


def frame(payload: bytes, *, masked: bool, first: int = 0x88, length: int | None = None) -> bytes:
    declared = len(payload) if length is None else length
    header = bytes((first, (0x80 if masked else 0) | declared))
    if masked:
        return header + KEY + apply_mask_bytes(payload, KEY)
    return header + payload


def outcome(connection: Connection, data: bytes) -> list[object]:
    """What wsproto makes of ``data``: its events, or its refusal."""
    try:
        connection.receive_data(data)
    except LocalProtocolError as exc:
        return [("refused", str(exc))]
    return [describe(event) for event in connection.events()]


def describe(event: Event) -> tuple[object, ...]:
    if isinstance(event, CloseConnection):
        # The code's type too: wsproto gives its enum member when it has one.
        return ("close", type(event.code), int(event.code), event.reason)
    return (type(event).__name__,)


def state(connection: Connection) -> tuple[object, ...]:
    return (
        connection.state,
        list(connection._events),
        connection._proto._parse_more.gi_frame is None,  # type: ignore[attr-defined]
    )


def check(client: bool, data: bytes, *, after_our_close: bool = False) -> bool:
    """Compare the quick path with wsproto on one read; returns whether the
    quick path took it."""
    plain = protocol(client)
    quick = protocol(client)
    if after_our_close:
        plain.send(CloseConnection(code=1000))
        quick.send(CloseConnection(code=1000))
    expected = outcome(plain, data)
    before = state(quick)
    event = take_close_frame(quick, data)
    if event is None:
        assert state(quick) == before  # untouched: wsproto gets it all
        assert outcome(quick, data) == expected
    else:
        assert [describe(event)] == expected
    assert state(quick) == state(plain)
    # And what comes next is treated alike (ignored, or refused).
    assert outcome(quick, b"\x81\x80" + KEY) == outcome(plain, b"\x81\x80" + KEY)
    return event is not None


CODES = [*range(990, 1020), 2999, 3000, 3999, 4000, 4999, 5000, 65535, 0, 1]


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("after_our_close", [False, True])
def test_every_code_is_taken_or_refused_as_wsproto_does(
    client: bool, after_our_close: bool
) -> None:
    taken = 0
    for code in [*CODES, *range(0, 5100, 7)]:
        payload = code.to_bytes(2, "big")
        if check(client, frame(payload, masked=not client), after_our_close=after_our_close):
            taken += 1
    assert taken > 280  # (the valid codes among them)


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize(
    "reason",
    [
        b"",
        b"bye",
        "au revoir, \u00e9t\u00e9".encode(),
        "\U0001f44b".encode(),
        b"\xff",
        b"\xc3",  # a character cut short
        b"ok\xed\xa0\x80",  # an encoded surrogate
        b"x" * 123,  # the longest a control frame allows
    ],
)
def test_reasons_are_taken_only_when_valid_utf8(client: bool, reason: bytes) -> None:
    for code in (1000, 1001, 3000, 4321):
        took = check(client, frame(code.to_bytes(2, "big") + reason, masked=not client))
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            assert not took
        else:
            assert took


@pytest.mark.parametrize("client", [False, True])
def test_payloads_of_no_and_one_byte(client: bool) -> None:
    assert check(client, frame(b"", masked=not client))  # code 1005
    assert not check(client, frame(b"\x03", masked=not client))


@pytest.mark.parametrize("client", [False, True])
def test_other_shapes_are_left_to_wsproto(client: bool) -> None:
    masked = not client
    good = (1000).to_bytes(2, "big")
    shapes = [
        frame(good, masked=not masked),  # the wrong mask bit for the role
        frame(good, masked=masked, first=0x08),  # no FIN
        *(frame(good, masked=masked, first=0x88 | rsv << 4) for rsv in (1, 2, 4)),
        frame(good, masked=masked, first=0x89),  # a ping
        frame(good, masked=masked) + b"\x00",  # something after it
        frame(good, masked=masked)[:-1],  # cut short
        frame(good + b"x" * 124, masked=masked, length=126),  # too long a form
        frame(good, masked=masked, length=3),  # a length past the read
    ]
    for data in shapes:
        assert not check(client, data)


def test_nothing_is_taken_mid_frame_mid_message_or_with_an_extension() -> None:
    close = frame((1000).to_bytes(2, "big"), masked=True)
    # Part of a frame already held by the decoder.
    partial = protocol(False)
    partial.receive_data(frame(b"abc", masked=True, first=0x82)[:3])
    assert list(partial.events()) == []
    assert take_close_frame(partial, close) is None
    # A fragmented message under way.
    fragmented = protocol(False)
    fragmented.receive_data(frame(b"abc", masked=True, first=0x02))
    assert len(list(fragmented.events())) == 1
    assert take_close_frame(fragmented, close) is None
    # An extension in use (it sees every frame header).

    class Enabled(Extension):
        name = "x-enabled"

        def enabled(self) -> bool:
            return True

        def offer(self) -> bool:
            return True

    extended = Connection(ConnectionType.SERVER, extensions=[Enabled()])
    use_fast_receive(extended)
    assert take_close_frame(extended, close) is None
    # A connection already closed by a close frame.
    closed = protocol(False)
    assert take_close_frame(closed, close) is not None
    assert take_close_frame(closed, close) is None


def test_the_fast_paths_off_take_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_paths, "ENABLED", False)
    assert take_close_frame(protocol(False), frame(b"\x03\xe8", masked=True)) is None


# ----------------------------------------------------------------------
# Sending

SEND_CASES = [
    (1000, None),
    (1000, ""),
    (1001, "going"),
    (CloseReason.NO_STATUS_RCVD, None),  # no payload, as wsproto sends it
    (1005, None),  # the number, not the member: wsproto sends 1000
    (CloseReason.ABNORMAL_CLOSURE, "x"),
    (1015, None),
    (3000, "\u00e9" * 80),  # cut at 123 bytes without half a character
    (4999, "x" * 200),
    (4000, "\U0001f44b" * 40),
    (999, None),  # not checked on sending, by wsproto either
    (None, None),
    (None, ""),
    (None, "why"),  # TypeError
    (70000, None),  # struct.error
    (-1, None),
]


def sent_by_wsproto(connection: Connection, code: int | None, reason: str | None) -> object:
    try:
        return bytes(connection.send(CloseConnection(code=code, reason=reason)))  # type: ignore[arg-type]
    except Exception as exc:
        return type(exc)


def sent_quickly(connection: Connection, code: int | None, reason: str | None) -> object:
    try:
        data = close_frame(connection, code, reason)
    except Exception as exc:
        return type(exc)
    assert data is not None
    return data


@pytest.mark.parametrize(("code", "reason"), SEND_CASES)
@pytest.mark.parametrize("peer_closed_first", [False, True])
def test_a_servers_close_frame_is_wsprotos(
    code: int | None, reason: str | None, peer_closed_first: bool
) -> None:
    plain, quick = protocol(False), protocol(False)
    if peer_closed_first:
        for connection in (plain, quick):
            outcome(connection, frame(b"\x03\xe8", masked=True))
    assert sent_quickly(quick, code, reason) == sent_by_wsproto(plain, code, reason)
    assert quick.state is plain.state


@pytest.mark.parametrize(("code", "reason"), SEND_CASES)
def test_a_clients_close_frame_is_wsprotos_under_a_fresh_mask(
    code: int | None, reason: str | None
) -> None:
    plain, quick = protocol(True), protocol(True)
    expected = sent_by_wsproto(plain, code, reason)
    got = sent_quickly(quick, code, reason)
    assert quick.state is plain.state
    if not isinstance(expected, bytes):
        assert got is expected
        return
    assert isinstance(got, bytes)
    assert got[:2] == expected[:2]  # the header, mask bit set
    assert got[1] & 0x80
    assert apply_mask_bytes(got[6:], got[2:6]) == apply_mask_bytes(expected[6:], expected[2:6])
    # And the server at the other end reads the same close.
    assert outcome(protocol(False), got) == outcome(protocol(False), expected)


def test_keys_are_fresh_for_every_close_frame() -> None:
    keys = {bytes(close_frame(protocol(True), 1000, None) or b"")[2:6] for _ in range(50)}  # type: ignore[index]
    assert len(keys) == 50


def test_no_close_frame_where_wsproto_would_refuse_one() -> None:
    connection = protocol(False)
    assert close_frame(connection, 1000, None) is not None
    assert connection.state is ConnectionState.LOCAL_CLOSING
    assert close_frame(connection, 1000, None) is None  # wsproto raises then
    assert connection.state is ConnectionState.LOCAL_CLOSING


# ----------------------------------------------------------------------
# At connection level


def without_wsproto_close_frames(*connections: WebSocketConnection) -> None:
    """Make these connections' wsproto fail if it parses or builds a close
    frame (the peer's wsproto, in the raw tests, still does both)."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("a close frame went through wsproto")

    for connection in connections:
        frame_protocol = connection._proto._proto
        frame_protocol._process_close = refuse  # type: ignore[method-assign]
        frame_protocol.close = refuse  # type: ignore[method-assign]


@pytest.mark.parametrize("closing_side", ["client", "server"])
async def test_close_handshakes_skip_wsproto(closing_side: str) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            without_wsproto_close_frames(client, server)
            closer, other = (client, server) if closing_side == "client" else (server, client)
            await closer.send_message("last")
            assert await other.get_message() == "last"
            async with trio.open_nursery() as nursery:

                async def wait_closed() -> None:
                    with pytest.raises(ConnectionClosed):
                        await other.get_message()

                nursery.start_soon(wait_closed)
                await closer.aclose(4001, "done \u2713")
            assert closer.closed is not None and other.closed is not None
            assert (closer.closed.code, closer.closed.reason) == (4001, "done \u2713")
            assert (other.closed.code, other.closed.reason) == (4001, "done \u2713")


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize(
    ("payload", "code", "reason", "echoed"),
    [
        (b"", 1005, None, b""),  # no code: the echo has none either
        (close_payload(1000), 1000, None, close_payload(1000)),
        (
            close_payload(3003, "fine \u00e9"),
            3003,
            "fine \u00e9",
            close_payload(3003, "fine \u00e9"),
        ),
    ],
)
async def test_a_message_then_the_peers_close_in_one_read(
    nursery: trio.Nursery, role: str, payload: bytes, code: int, reason: str | None, echoed: bytes
) -> None:
    """The message at the start of the read is delivered, the close frame
    after it taken: the application sees the peer's code and reason, and
    the peer gets the echo."""
    with trio.fail_after(5):
        ws, peer = await open_raw(nursery, role)
        without_wsproto_close_frames(ws)
        masked = peer.is_client
        await peer.send_raw(
            build_frame(0x1, b"last", masked=masked) + build_frame(0x8, payload, masked=masked)
        )
        assert await ws.get_message() == "last"
        with pytest.raises(ConnectionClosed) as raised:
            await ws.get_message()
        assert (raised.value.reason.code, raised.value.reason.reason) == (code, reason)
        echo = await peer.expect(CloseConnection)
        assert close_payload(int(echo.code), echo.reason or "") == (echoed or close_payload(1005))
        if role == "server":
            await peer.expect_eof()  # the server closes TCP first


@pytest.mark.parametrize("role", ["client", "server"])
async def test_a_bad_close_frame_still_gets_1002(nursery: trio.Nursery, role: str) -> None:
    """A close frame wsproto refuses (a 1-byte payload) is left to it."""
    with trio.fail_after(5):
        ws, peer = await open_raw(nursery, role)
        await peer.send_raw(build_frame(0x8, b"\x03", masked=peer.is_client))
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        close = await peer.expect(CloseConnection)
        assert close.code == 1002
