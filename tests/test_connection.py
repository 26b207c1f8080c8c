"""Behaviour of ``WebSocketConnection`` over in-memory streams, from both
sides.

Two kinds of peer are used: another ``WebSocketConnection`` (``pair`` /
``open_pair``), and a hand-driven peer (:class:`RawPeer`) that runs the
opening handshake with wsproto and then writes frames built by hand, so that
bad frames, unanswered pings and dropped streams can be produced at will.
Faults in the transport are injected by wrapping the stream.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import open_pair
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._core.config import READ_AHEAD_BYTES

ROLES = ["client", "server"]
Pair = tuple[WebSocketConnection, WebSocketConnection]

#: Wall-clock-free guard for anything that could hang (tests use the
#: autojump clock, so this costs nothing when the test passes).
GUARD = 60

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------
# Helpers


def oriented(pair: Pair, role: str) -> Pair:
    """(the side playing ``role``, the other side)."""
    client, server = pair
    return (client, server) if role == "client" else (server, client)


async def open_sides(
    nursery: trio.Nursery,
    role: str,
    *,
    local_options: dict[str, object] | None = None,
    peer_options: dict[str, object] | None = None,
    local_stream: trio.abc.Stream | None = None,
    peer_stream: trio.abc.Stream | None = None,
) -> Pair:
    """A connected pair as (local, peer), ``local`` playing ``role``."""
    if role == "client":
        client, server = await open_pair(
            nursery,
            local_stream,
            peer_stream,
            client_options=local_options,
            server_options=peer_options,
        )
        return client, server
    client, server = await open_pair(
        nursery,
        peer_stream,
        local_stream,
        client_options=peer_options,
        server_options=local_options,
    )
    return server, client


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
) -> bytes:
    """One WebSocket frame, built per RFC 6455 section 5.2."""
    header = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        header.append(mask_bit | length)
    elif length < 2**16:
        header.append(mask_bit | 126)
        header += struct.pack("!H", length)
    else:
        header.append(mask_bit | 127)
        header += struct.pack("!Q", length)
    if masked:
        key = b"\x37\xfa\x21\x3d"
        header += key
        payload = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes(header) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


EOF = "EOF"


class RawPeer:
    """The far end of a connection, driven by hand: wsproto parses what the
    library sends; frames to send are built by wsproto or by hand."""

    def __init__(self, stream: trio.abc.Stream, protocol: Connection, is_client: bool) -> None:
        self.stream = stream
        self.protocol = protocol
        self.is_client = is_client
        self._events: deque[Event | str] = deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.protocol.send(event))

    async def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool | None = None,
    ) -> None:
        """A hand-built frame, masked as RFC 6455 requires unless told."""
        masked = self.is_client if masked is None else masked
        await self.stream.send_all(build_frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> Event | str:
        """The next event the library caused, or ``EOF`` when it closed the
        stream."""
        while not self._events:
            data = await self.stream.receive_some(1 << 20)
            if not data:
                self._events.append(EOF)
                break
            assert self.protocol.state is not ConnectionState.CLOSED, (
                "the library sent data after the closing handshake"
            )
            self.protocol.receive_data(bytes(data))
            self._events.extend(self.protocol.events())
        event = self._events.popleft()
        if event == EOF:
            self._events.appendleft(EOF)  # EOF stays EOF
        return event

    async def expect(self, kind: type[Any]) -> Any:
        event = await self.next_event()
        assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
        return event

    async def expect_close(self) -> CloseConnection:
        """Skip messages and pings up to the library's close frame."""
        for _ in range(1000):
            event = await self.next_event()
            assert event != EOF, "stream closed without a close frame"
            if isinstance(event, CloseConnection):
                return event
        raise AssertionError("no close frame")

    async def expect_eof(self) -> None:
        for _ in range(1000):
            if await self.next_event() == EOF:
                return
        raise AssertionError("no end of stream")


async def open_raw(
    nursery: trio.Nursery,
    role: str,
    *,
    stream_wrapper: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
    **options: Any,
) -> tuple[WebSocketConnection, RawPeer]:
    """A library connection playing ``role`` and a :class:`RawPeer` playing
    the other role, over a memory stream pair (the library's end wrapped by
    ``stream_wrapper`` if given)."""
    library_stream: trio.abc.Stream
    library_stream, peer_stream = trio.testing.memory_stream_pair()
    if stream_wrapper is not None:
        library_stream = stream_wrapper(library_stream)
    result: dict[str, Any] = {}

    async def library_side() -> None:
        if role == "client":
            result["conn"] = await wrap_client_stream(
                nursery, library_stream, "example.com", "/raw", **options
            )
        else:
            request = await wrap_server_stream(nursery, library_stream, **options)
            result["conn"] = await request.accept()

    async def handshake_events(handshake: H11Handshake) -> list[Event]:
        data = await peer_stream.receive_some(1 << 16)
        assert data
        handshake.receive_data(bytes(data))
        return list(handshake.events())

    async def peer_side() -> None:
        if role == "client":
            handshake = H11Handshake(ConnectionType.SERVER)
            while not any(isinstance(e, Request) for e in await handshake_events(handshake)):
                pass
            await peer_stream.send_all(handshake.send(AcceptConnection()))
        else:
            handshake = H11Handshake(ConnectionType.CLIENT)
            await peer_stream.send_all(handshake.send(Request(host="example.com", target="/raw")))
            while not any(
                isinstance(e, AcceptConnection) for e in await handshake_events(handshake)
            ):
                pass
        assert handshake.connection is not None
        result["peer"] = RawPeer(peer_stream, handshake.connection, is_client=role == "server")

    async with trio.open_nursery() as both:
        both.start_soon(library_side)
        both.start_soon(peer_side)
    return result["conn"], result["peer"]


class Background:
    """The outcome of a call run in a background task."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    async def wait(self) -> None:
        with trio.fail_after(GUARD):
            await self.done.wait()


def in_background(
    nursery: trio.Nursery, fn: Callable[..., Awaitable[Any]], *args: Any
) -> Background:
    outcome = Background()

    async def run() -> None:
        try:
            outcome.value = await fn(*args)
        except Exception as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    nursery.start_soon(run)
    return outcome


async def settle() -> None:
    """Let every task run until all are blocked (memory streams only)."""
    await trio.testing.wait_all_tasks_blocked()


class FaultyStream(trio.abc.Stream):
    """A stream wrapper whose faults are switched on by the test:
    ``stall_after``: the next send writes that many bytes, then blocks;
    ``break_send`` / ``break_receive``: raise ``BrokenResourceError``;
    ``trickle``: sends go out in pieces of that size, with a checkpoint
    between pieces (so concurrent writers could interleave);
    ``send_gate``: sends wait for this event first;
    ``split_next_read_at``: the next read is returned in two parts, the
    second from the wrapper's buffer by the following ``receive_some``
    (without waiting, as a buffering stream would)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stall_after: int | None = None
        self.trickle: int | None = None
        self.send_gate: trio.Event | None = None
        self.split_next_read_at: int | None = None
        self._read_buffer = b""
        self.break_send = False
        self.break_receive = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.break_send:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("injected send failure")
        if self.stall_after is not None:
            await self.inner.send_all(bytes(data)[: self.stall_after])
            await trio.sleep_forever()
        if self.send_gate is not None:
            await self.send_gate.wait()
        if self.trickle is not None:
            data = bytes(data)
            for start in range(0, len(data), self.trickle):
                await self.inner.send_all(data[start : start + self.trickle])
                await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._read_buffer:
            data, self._read_buffer = self._read_buffer, b""
            return data
        data = await self.inner.receive_some(max_bytes)
        if self.break_receive:
            raise trio.BrokenResourceError("injected receive failure")
        split = self.split_next_read_at
        if split is not None and len(data) > split:
            self.split_next_read_at = None
            data, self._read_buffer = data[:split], bytes(data[split:])
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---------------------------------------------------------------------------
# Sending and receiving

MESSAGES = [
    pytest.param("hello", id="text"),
    pytest.param(b"\x00\x01\xfe\xff", id="binary"),
    pytest.param("", id="empty-text"),
    pytest.param(b"", id="empty-binary"),
    pytest.param("héllo ☃ 😀 日本語", id="non-ascii-text"),
    pytest.param("a" * 2**20, id="1MiB-text"),
    pytest.param(b"\xab" * 2**20, id="1MiB-binary"),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("message", MESSAGES)
async def test_message_round_trip_keeps_content_and_type(
    pair: Pair, role: str, message: str | bytes, autojump_clock: trio.testing.MockClock
) -> None:
    sender, receiver = oriented(pair, role)
    await sender.send_message(message)
    received = await receiver.get_message()
    assert received == message
    assert type(received) is type(message)


@pytest.mark.parametrize("role", ROLES)
async def test_messages_arrive_in_order_while_both_sides_send(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    count = 50

    def message(side: str, i: int) -> str | bytes:
        return f"{side}-{i}" if i % 2 else f"{side}-{i}".encode()

    async def send(conn: WebSocketConnection, side: str) -> None:
        for i in range(count):
            await conn.send_message(message(side, i))

    async def receive(conn: WebSocketConnection, side: str) -> None:
        for i in range(count):
            assert await conn.get_message() == message(side, i)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, local, "local")
            nursery.start_soon(send, peer, "peer")
            nursery.start_soon(receive, peer, "local")
            nursery.start_soon(receive, local, "peer")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad", [bytearray(b"x"), memoryview(b"x"), 42, None, ["x"]], ids=type)
async def test_send_message_of_another_type_is_value_error(
    pair: Pair, role: str, bad: object, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    with pytest.raises(ValueError):
        await local.send_message(bad)  # type: ignore[arg-type]
    # Nothing reached the wire: the connection still works.
    assert local.closed is None
    await local.send_message("after")
    assert await peer.get_message() == "after"


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_messages_read_in_small_pieces_are_reassembled(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Small reads split frames, and multi-byte characters, across reads.
    text = "aé☃😀" * 10_000  # 100,000 UTF-8 bytes
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"receive_buffer_size": 1000, "max_message_size": 100_000},
    )
    await sender.send_message(text)
    await sender.send_message(text.encode())
    with trio.fail_after(GUARD):
        assert await receiver.get_message() == text
        assert await receiver.get_message() == text.encode()
    assert receiver.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_concurrent_senders_never_interleave_frames(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The transport takes each write in small pieces with a checkpoint in
    # between; frames from concurrent senders (and the automatic pongs)
    # must still go out whole.
    local_stream, peer_stream = trio.testing.memory_stream_pair()
    trickling = FaultyStream(local_stream)
    trickling.trickle = 100
    local, peer = await open_sides(nursery, role, local_stream=trickling, peer_stream=peer_stream)

    async def send(tag: int) -> None:
        for i in range(5):
            await local.send_message(bytes([tag, i]) * 2000)

    async def ping() -> None:
        for i in range(5):
            await local.ping(b"ping %d" % i)

    async def ping_from_peer() -> None:
        for i in range(5):
            await peer.ping(b"peer %d" % i)  # answered by local's reader

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as writers:
            for tag in range(3):
                writers.start_soon(send, tag)
            writers.start_soon(ping)
            writers.start_soon(ping_from_peer)
            received = [await peer.get_message() for _ in range(15)]
    for tag in range(3):
        assert [m for m in received if m[0] == tag] == [  # type: ignore[index]
            bytes([tag, i]) * 2000 for i in range(5)
        ]
    assert local.closed is None
    assert peer.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_concurrent_receivers_each_get_different_messages(
    pair: Pair, role: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    receivers = [in_background(nursery, local.get_message) for _ in range(3)]
    await settle()
    for i in range(3):
        await peer.send_message(f"m{i}")
    for receiving in receivers:
        await receiving.wait()
        assert receiving.error is None
    assert sorted(r.value for r in receivers) == ["m0", "m1", "m2"]


@pytest.mark.parametrize("role", ROLES)
async def test_reply_sent_while_messages_wait_unread_reaches_the_peer(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = await open_sides(nursery, role, local_options={"message_queue_size": 10})
    for i in range(3):
        await peer.send_message(f"request {i}")
    await settle()
    assert await local.get_message() == "request 0"  # two more wait unread
    await local.send_message("reply")
    # The application does nothing more with the connection.
    with trio.fail_after(GUARD):
        assert await peer.get_message() == "reply"


@pytest.mark.parametrize("role", ROLES)
async def test_replies_keep_their_order_whatever_their_size(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = await open_sides(nursery, role, local_options={"message_queue_size": 100})
    count = 30

    def reply(i: int) -> bytes:
        size = 100_000 if i % 7 == 3 else 10  # some replies are big
        return bytes([i]) * size

    for i in range(count):
        await peer.send_message(f"{i}")
    await settle()
    with trio.fail_after(GUARD):
        for i in range(count):
            assert await local.get_message() == f"{i}"
            await local.send_message(reply(i))
        for i in range(count):
            assert await peer.get_message() == reply(i)


@pytest.mark.parametrize("role", ROLES)
async def test_reply_sent_while_messages_wait_goes_out_before_the_close(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = await open_sides(nursery, role, local_options={"message_queue_size": 10})
    for i in range(3):
        await peer.send_message(f"request {i}")
    await settle()
    await local.get_message()
    await local.send_message("last reply")
    with trio.fail_after(GUARD):
        await local.aclose(4000)
        assert await peer.get_message() == "last reply"
        with pytest.raises(ConnectionClosed) as exc_info:
            await peer.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 4000


@pytest.mark.parametrize("role", ROLES)
async def test_get_message_timing_out_while_replies_wait_to_be_written_keeps_the_connection(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # A common loop: read with a timeout, reply. Here the peer's application
    # is slow: its reader has stopped at the read-ahead bound, so our writes
    # block (lockstep stream: nothing is buffered). A read timing out must
    # not break the connection.
    local_stream, peer_stream = trio.testing.lockstep_stream_pair()
    local, peer = await open_sides(
        nursery,
        role,
        local_options={"message_queue_size": 10},
        local_stream=local_stream,
        peer_stream=peer_stream,
    )
    chunk = 64 * 1024
    for i in range(READ_AHEAD_BYTES // chunk):  # exactly fills the peer's bound
        await local.send_message(bytes([i]) * chunk)
    await peer.send_message("request 0")
    await peer.send_message("request 1")
    await settle()
    assert await local.get_message() == "request 0"
    await local.send_message("reply")
    assert await local.get_message() == "request 1"
    with trio.move_on_after(5) as scope:
        await local.get_message()  # nothing more comes
    assert scope.cancelled_caught
    assert local.closed is None
    with trio.fail_after(GUARD):
        for i in range(READ_AHEAD_BYTES // chunk):
            assert await peer.get_message() == bytes([i]) * chunk
        assert await peer.get_message() == "reply"


# ---------------------------------------------------------------------------
# Message size limit


@pytest.mark.parametrize("role", ROLES)  # the side that receives, with the limit
@pytest.mark.parametrize(
    ("exact", "over"),
    [
        # "é" is 2 UTF-8 bytes: 5 of them fill the limit of 10 exactly, and
        # one more ASCII character makes 11 bytes in only 6 characters.
        pytest.param("é" * 5, "é" * 5 + "a", id="text-multibyte"),
        pytest.param(b"x" * 10, b"x" * 11, id="binary"),
    ],
)
async def test_message_over_max_message_size_closes_with_1009(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    role: str,
    exact: str | bytes,
    over: str | bytes,
) -> None:
    receiver, sender = await open_sides(nursery, role, local_options={"max_message_size": 10})
    await sender.send_message("first")
    await sender.send_message(exact)
    await sender.send_message(over)
    try:
        await sender.send_message("after the big one")
    except ConnectionClosed:
        pass  # the close may already be back

    with trio.fail_after(GUARD):
        # What arrived before the oversized message is still readable...
        assert await receiver.get_message() == "first"
        assert await receiver.get_message() == exact
        # ...and nothing after it.
        with pytest.raises(ConnectionClosed) as at_receiver:
            await receiver.get_message()
        with pytest.raises(ConnectionClosed) as at_sender:
            await sender.get_message()
    assert at_receiver.value.reason is not None
    assert at_receiver.value.reason.code == 1009
    assert receiver.closed is not None and receiver.closed.code == 1009
    assert receiver.closed.name == "MESSAGE_TOO_BIG"
    assert at_sender.value.reason is not None
    assert at_sender.value.reason.code == 1009
    assert sender.closed is not None and sender.closed.code == 1009
    with pytest.raises(ConnectionClosed):
        await sender.send_message("more")


@pytest.mark.parametrize("role", ROLES)
async def test_message_of_exactly_max_message_size_keeps_the_connection_open(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver, sender = await open_sides(nursery, role, local_options={"max_message_size": 12})
    await sender.send_message("☃☃☃☃")  # 12 UTF-8 bytes
    await sender.send_message(b"b" * 12)
    assert await receiver.get_message() == "☃☃☃☃"
    assert await receiver.get_message() == b"b" * 12
    assert receiver.closed is None
    assert sender.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_default_max_message_size_is_one_mebibyte(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    sender, receiver = oriented(pair, role)
    await sender.send_message(b"x" * (2**20 + 1))
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed) as exc_info:
        await receiver.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 1009


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
async def test_endless_fragmented_message_closes_with_1009(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str, opcode: int
) -> None:
    conn, peer = await open_raw(nursery, role, max_message_size=1000)
    await peer.send_frame(opcode, b"x" * 100, fin=False)
    for _ in range(30):  # 3,100 bytes and still not finished
        await peer.send_frame(OP_CONT, b"x" * 100, fin=False)
    with trio.fail_after(GUARD):
        close = await peer.expect_close()
    assert close.code == 1009
    assert conn.closed is not None and conn.closed.code == 1009


# ---------------------------------------------------------------------------
# Bad data from the peer


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(OP_TEXT, b"\xff\xfe", True)], id="invalid-bytes"),
        pytest.param([(OP_TEXT, b"abc\xc3", True)], id="truncated-sequence"),
        pytest.param([(OP_TEXT, b"\xed\xa0\x80", True)], id="surrogate"),
        pytest.param(
            [(OP_TEXT, b"fine", False), (OP_CONT, b"\xc3\x28", True)],
            id="invalid-in-continuation",
        ),
        pytest.param([(OP_CLOSE, close_payload(1000) + b"\xff", True)], id="close-reason"),
    ],
)
async def test_invalid_utf8_text_closes_with_1007(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    role: str,
    frames: list[tuple[int, bytes, bool]],
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send(TextMessage("before"))
    for opcode, payload, fin in frames:
        await peer.send_frame(opcode, payload, fin=fin)
    with trio.fail_after(GUARD):
        close = await peer.expect_close()
        assert close.code == 1007
        assert await conn.get_message() == "before"
        with pytest.raises(ConnectionClosed) as exc_info:
            await conn.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 1007
    assert conn.closed is not None and conn.closed.code == 1007


@pytest.mark.parametrize("role", ROLES)
async def test_character_split_across_fragments_is_valid_text(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    snowman = "☃".encode()
    await peer.send_frame(OP_TEXT, b"a" + snowman[:1], fin=False)
    await peer.send_frame(OP_CONT, snowman[1:2], fin=False)
    await peer.send_frame(OP_CONT, snowman[2:] + b"b", fin=True)
    assert await conn.get_message() == "a☃b"
    assert conn.closed is None


def _protocol_faults() -> list[Any]:
    """(id, frame bytes given whether the peer should mask)."""
    faults: dict[str, Callable[[bool], bytes]] = {
        "reserved-bit": lambda m: build_frame(OP_TEXT, b"hi", rsv=0b100, masked=m),
        "unknown-opcode": lambda m: build_frame(0x3, b"", masked=m),
        "fragmented-ping": lambda m: build_frame(OP_PING, b"p", fin=False, masked=m),
        "control-payload-126-bytes": lambda m: build_frame(OP_PING, b"p" * 126, masked=m),
        "continuation-without-start": lambda m: build_frame(OP_CONT, b"x", masked=m),
        "new-message-inside-fragmented-one": lambda m: (
            build_frame(OP_TEXT, b"a", fin=False, masked=m) + build_frame(OP_TEXT, b"b", masked=m)
        ),
        "close-with-one-byte-payload": lambda m: build_frame(OP_CLOSE, b"\x03", masked=m),
        "close-with-local-only-code": lambda m: build_frame(
            OP_CLOSE, close_payload(1006), masked=m
        ),
        "close-with-out-of-range-code": lambda m: build_frame(
            OP_CLOSE, close_payload(999), masked=m
        ),
        # Clients must mask, servers must not (RFC 6455 section 5.1).
        "wrong-masking": lambda m: build_frame(OP_TEXT, b"hi", masked=not m),
    }
    return [pytest.param(build, id=name) for name, build in faults.items()]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("build", _protocol_faults())
async def test_protocol_error_closes_with_1002(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    role: str,
    build: Callable[[bool], bytes],
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send(TextMessage("before"))
    await peer.send_raw(build(peer.is_client))
    await peer.send(TextMessage("after"))  # never delivered
    with trio.fail_after(GUARD):
        close = await peer.expect_close()
        assert close.code == 1002
        assert await conn.get_message() == "before"
        with pytest.raises(ConnectionClosed) as exc_info:
            await conn.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 1002
    assert conn.closed is not None and conn.closed.code == 1002
    with pytest.raises(ConnectionClosed):
        await conn.send_message("x")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("build", _protocol_faults())
async def test_reply_to_a_message_read_together_with_a_fault_goes_out_before_the_close(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    role: str,
    build: Callable[[bool], bytes],
) -> None:
    # Autobahn 3.2, 4.1.3, 5.15...: a valid message and a bad frame in one
    # write. The echo of the valid one must still precede our close frame.
    conn, peer = await open_raw(nursery, role)
    good = build_frame(OP_TEXT, b"Hello, world!", masked=peer.is_client)
    await peer.send_raw(good + build(peer.is_client))
    with trio.fail_after(GUARD):
        message = await conn.get_message()
        assert message == "Hello, world!"
        assert conn.closed is None
        await conn.send_message(message)
        with pytest.raises(ConnectionClosed) as exc_info:
            await conn.get_message()
        echo = await peer.expect(TextMessage)
        assert echo.data == "Hello, world!"
        close = await peer.expect(CloseConnection)
    assert close.code == 1002
    assert exc_info.value.reason is not None and exc_info.value.reason.code == 1002


@pytest.mark.parametrize("role", ROLES)
async def test_close_echo_carries_the_peers_code_and_reason(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # As 0.12.2 did; a browser shows the echoed reason in CloseEvent.reason.
    conn, peer = await open_raw(nursery, role)
    await peer.send(CloseConnection(code=4003, reason="fin — ✓ 😀"))
    with trio.fail_after(GUARD):
        echo = await peer.expect(CloseConnection)
    assert (echo.code, echo.reason) == (4003, "fin — ✓ 😀")
    assert conn.closed is not None
    assert (conn.closed.code, conn.closed.reason) == (4003, "fin — ✓ 😀")


@pytest.mark.parametrize("role", ROLES)
async def test_fault_closes_after_a_grace_when_the_application_never_reads(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    bad = build_frame(OP_TEXT, b"hi", rsv=0b100, masked=peer.is_client)
    await peer.send_raw(build_frame(OP_TEXT, b"unread", masked=peer.is_client) + bad)
    start = trio.current_time()
    with trio.fail_after(GUARD):
        close = await peer.expect_close()
    assert close.code == 1002
    assert 0.5 <= trio.current_time() - start <= 5
    assert conn.closed is not None and conn.closed.code == 1002


@pytest.mark.parametrize("role", ROLES)
async def test_aclose_during_a_pending_fault_sends_the_fault_code(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    bad = build_frame(OP_TEXT, b"hi", rsv=0b100, masked=peer.is_client)
    await peer.send_raw(build_frame(OP_TEXT, b"unread", masked=peer.is_client) + bad)
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(GUARD):
        nursery.start_soon(conn.aclose)
        close = await peer.expect_close()
    assert close.code == 1002


# ---------------------------------------------------------------------------
# Ping and pong


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("payload", [None, b"", b"hello", b"x" * 125], ids=repr)
async def test_ping_is_answered_automatically_by_the_peer(
    pair: Pair, role: str, payload: bytes | None, autojump_clock: trio.testing.MockClock
) -> None:
    local, _peer = oriented(pair, role)
    # The peer's application never reads; its connection answers anyway.
    with trio.fail_after(GUARD):
        await local.ping(payload)
        await local.ping(payload)  # the payload is free again once answered


@pytest.mark.parametrize("role", ROLES)
async def test_ping_without_payload_sends_four_random_bytes(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    payloads = []
    for _ in range(2):
        pinging = in_background(nursery, conn.ping)
        ping = await peer.expect(Ping)
        payloads.append(ping.payload)
        await peer.send(ping.response())
        await pinging.wait()
        assert pinging.error is None
    assert all(len(p) == 4 for p in payloads)
    assert payloads[0] != payloads[1]


@pytest.mark.parametrize("role", ROLES)
async def test_ping_waits_for_the_matching_pong(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    pinging = in_background(nursery, conn.ping, b"abc")
    ping = await peer.expect(Ping)
    assert ping.payload == b"abc"
    await settle()
    assert not pinging.done.is_set()
    await peer.send(Pong(b"something else"))  # unsolicited: ignored
    await settle()
    assert not pinging.done.is_set()
    await peer.send(Pong(b"abc"))
    await pinging.wait()
    assert pinging.error is None
    assert conn.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_ping_with_a_payload_already_in_flight_is_value_error(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    first = in_background(nursery, conn.ping, b"dup")
    await peer.expect(Ping)
    with pytest.raises(ValueError):
        await conn.ping(b"dup")
    # The first ping is unaffected, and the second was never sent.
    await peer.send(Pong(b"dup"))
    await first.wait()
    assert first.error is None
    await conn.send_message("marker")
    assert await peer.expect(TextMessage) == TextMessage("marker")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", ["ping", "pong"])
async def test_control_payload_over_125_bytes_is_value_error(
    pair: Pair, role: str, method: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    with pytest.raises(ValueError):
        await getattr(local, method)(b"x" * 126)
    assert local.closed is None
    await local.send_message("still open")
    assert await peer.get_message() == "still open"


@pytest.mark.parametrize("role", ROLES)
async def test_pong_wakes_earlier_pings_but_not_later_ones(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    pings = {}
    for payload in (b"1", b"2", b"3"):
        pings[payload] = in_background(nursery, conn.ping, payload)
        await peer.expect(Ping)  # sent in this order
    await peer.send(Pong(b"2"))
    await pings[b"1"].wait()
    await pings[b"2"].wait()
    assert pings[b"1"].error is None
    assert pings[b"2"].error is None
    await settle()
    assert not pings[b"3"].done.is_set()
    await peer.send(Pong(b"3"))
    await pings[b"3"].wait()
    assert pings[b"3"].error is None


@pytest.mark.parametrize("role", ROLES)
async def test_pong_sends_an_unsolicited_pong(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    await conn.pong(b"heartbeat")
    await conn.pong()
    assert (await peer.expect(Pong)).payload == b"heartbeat"
    assert (await peer.expect(Pong)).payload == b""


@pytest.mark.parametrize("role", ROLES)
async def test_unsolicited_pong_from_the_peer_is_ignored(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send(Pong(b"nobody asked"))
    await peer.send(TextMessage("hello"))
    assert await conn.get_message() == "hello"
    assert conn.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_pings_from_the_peer_are_answered_with_their_payload(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    _conn, peer = await open_raw(nursery, role)
    for payload in (b"", b"a", b"z" * 125):
        await peer.send(Ping(payload))
        assert (await peer.expect(Pong)).payload == payload


@pytest.mark.parametrize("role", ROLES)
async def test_pending_ping_gets_connection_closed_when_the_peer_closes(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    pinging = in_background(nursery, conn.ping, b"never answered")
    await peer.expect(Ping)
    await peer.send(CloseConnection(4000, "bye"))
    await pinging.wait()
    assert isinstance(pinging.error, ConnectionClosed)
    assert pinging.error.reason == CloseReason(4000, "bye")


@pytest.mark.parametrize("role", ROLES)
async def test_pending_ping_gets_connection_closed_when_closing_locally(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    pinging = in_background(nursery, conn.ping, b"never answered")
    await peer.expect(Ping)
    closing = in_background(nursery, conn.aclose)
    # Woken as soon as the close starts, before the peer answers it.
    await pinging.wait()
    assert isinstance(pinging.error, ConnectionClosed)
    close = await peer.expect_close()
    await peer.send(close.response())
    await closing.wait()
    assert closing.error is None


@pytest.mark.parametrize("role", ROLES)
async def test_cancelled_ping_frees_its_payload(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    with trio.move_on_after(5) as scope:
        await conn.ping(b"again")
    assert scope.cancelled_caught
    assert (await peer.expect(Ping)).payload == b"again"
    # The payload is no longer in flight: it can be pinged again.
    pinging = in_background(nursery, conn.ping, b"again")
    assert (await peer.expect(Ping)).payload == b"again"
    await peer.send(Pong(b"again"))
    await pinging.wait()
    assert pinging.error is None
    assert conn.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_ping_after_close_is_connection_closed(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, _peer = oriented(pair, role)
    await local.aclose()
    with pytest.raises(ConnectionClosed):
        await local.ping()
    with pytest.raises(ConnectionClosed):
        await local.pong()


# ---------------------------------------------------------------------------
# A slow application and flow control


@pytest.mark.parametrize("role", ROLES)  # the slow side
async def test_pings_are_answered_while_the_application_is_not_reading(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    slow, peer = await open_sides(nursery, role, local_options={"message_queue_size": 1})
    messages = [f"message {i} " + "x" * 1000 for i in range(10)]
    for message in messages:
        await peer.send_message(message)
    with trio.fail_after(GUARD):
        for i in range(3):
            await peer.ping(b"p%d" % i)
    # Nothing was lost or reordered while the application was away.
    for message in messages:
        assert await slow.get_message() == message


@pytest.mark.parametrize("role", ROLES)  # the slow side
async def test_pongs_go_out_while_the_inbox_is_full(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    slow, peer = await open_raw(nursery, role, message_queue_size=1)
    for i in range(5):
        await peer.send(BytesMessage(b"%d" % i * 1000))
    for i in range(3):
        await peer.send(Ping(b"ping %d" % i))
    with trio.fail_after(GUARD):
        for i in range(3):
            assert (await peer.expect(Pong)).payload == b"ping %d" % i
    for i in range(5):
        assert await slow.get_message() == b"%d" % i * 1000


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_unread_messages_stop_the_reader_at_a_byte_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    chunk = 64 * 1024
    count = 20  # 1.25 MiB, far more than the read-ahead bound
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"message_queue_size": 1, "receive_buffer_size": 16 * 1024},
    )
    for i in range(count):
        await sender.send_message(bytes([i]) * chunk)
    await settle()
    buffered = receiver._inbox.buffered_bytes
    # It read ahead (so control frames get answered) but only up to the bound.
    assert READ_AHEAD_BYTES <= buffered <= READ_AHEAD_BYTES + chunk
    with trio.fail_after(GUARD):
        for i in range(count):
            assert await receiver.get_message() == bytes([i]) * chunk
            assert receiver._inbox.buffered_bytes <= READ_AHEAD_BYTES + chunk
    assert receiver.closed is None


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_sender_is_pushed_back_when_the_receiver_does_not_read(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # A lockstep stream buffers nothing: a write only ends once it is read,
    # as with a TCP connection whose window is full.
    local_stream, peer_stream = trio.testing.lockstep_stream_pair()
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"message_queue_size": 1},
        local_stream=local_stream,
        peer_stream=peer_stream,
    )
    chunk = 64 * 1024
    count = 20
    sent = 0

    async def send_all() -> None:
        nonlocal sent
        for i in range(count):
            await sender.send_message(bytes([i]) * chunk)
            sent += 1

    nursery.start_soon(send_all)
    await settle()
    assert 1 <= sent < count
    assert sent * chunk <= READ_AHEAD_BYTES + chunk
    with trio.fail_after(GUARD):
        for i in range(count):
            assert await receiver.get_message() == bytes([i]) * chunk
    await settle()
    assert sent == count


# ---------------------------------------------------------------------------
# Closing


@pytest.mark.parametrize("role", ROLES)
async def test_closed_is_none_while_open(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    assert local.closed is None
    await local.send_message("x")
    await peer.get_message()
    await local.ping()
    assert local.closed is None
    assert peer.closed is None


@pytest.mark.parametrize("role", ROLES)  # the side that closes
@pytest.mark.parametrize(
    ("code", "reason"), [(1000, None), (1001, "going away"), (4321, "custom ☃")]
)
async def test_close_code_and_reason_reach_the_other_side(
    pair: Pair,
    role: str,
    code: int,
    reason: str | None,
    autojump_clock: trio.testing.MockClock,
) -> None:
    closer, other = oriented(pair, role)
    with trio.fail_after(GUARD):
        await closer.aclose(code, reason)
        with pytest.raises(ConnectionClosed) as exc_info:
            await other.get_message()
    assert exc_info.value.reason == CloseReason(code, reason)
    assert other.closed == CloseReason(code, reason)
    assert closer.closed is not None and closer.closed.code == code
    with pytest.raises(ConnectionClosed):
        await other.send_message("too late")
    with pytest.raises(ConnectionClosed):
        await closer.send_message("too late")


@pytest.mark.parametrize("role", ROLES)
async def test_default_close_is_normal_closure(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    closer, other = oriented(pair, role)
    with trio.fail_after(GUARD):
        await closer.aclose()
        with pytest.raises(ConnectionClosed):
            await other.get_message()
    for conn in (closer, other):
        assert conn.closed is not None
        assert conn.closed.code == 1000
        assert conn.closed.name == "NORMAL_CLOSURE"
        assert conn.closed.reason is None


@pytest.mark.parametrize("role", ROLES)  # the side that closes
async def test_messages_sent_before_close_can_still_be_read(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    closer, other = oriented(pair, role)
    await closer.send_message("one")
    await closer.send_message(b"two")
    with trio.fail_after(GUARD):
        await closer.aclose(4000, "done")
        assert await other.get_message() == "one"
        assert await other.get_message() == b"two"
        for _ in range(2):  # and it keeps saying so
            with pytest.raises(ConnectionClosed) as exc_info:
                await other.get_message()
            assert exc_info.value.reason == CloseReason(4000, "done")


@pytest.mark.parametrize("role", ROLES)
async def test_get_message_raises_at_once_after_local_close_despite_queued_messages(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    for i in range(3):
        await peer.send(TextMessage(f"queued {i}"))
    await settle()
    closing = in_background(nursery, conn.aclose)
    await peer.expect_close()
    # The close handshake is not finished yet; queued messages are dropped.
    assert not closing.done.is_set()
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed):
        await conn.get_message()
    await peer.send(CloseConnection(1000))
    await closing.wait()
    assert closing.error is None
    with pytest.raises(ConnectionClosed):
        await conn.get_message()


@pytest.mark.parametrize("role", ROLES)
async def test_local_close_wakes_a_waiting_get_message(
    pair: Pair, role: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    local, _peer = oriented(pair, role)
    receiving = in_background(nursery, local.get_message)
    await settle()
    with trio.fail_after(GUARD):
        await local.aclose()
    await receiving.wait()
    assert isinstance(receiving.error, ConnectionClosed)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("code", [999, 5000, 0, -1, 1_000_000])
async def test_aclose_with_an_invalid_code_is_value_error(
    pair: Pair, role: str, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    with pytest.raises(ValueError):
        await local.aclose(code)
    assert local.closed is None
    await local.send_message("still open")
    assert await peer.get_message() == "still open"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("code", [1005, 1006, 1015])
async def test_local_only_close_code_is_never_sent(
    pair: Pair, role: str, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    closer, other = oriented(pair, role)
    with trio.fail_after(GUARD):
        await closer.aclose(code)
        with pytest.raises(ConnectionClosed):
            await other.get_message()
    # A frame carrying it would be a protocol error (1002) at the peer.
    assert other.closed is not None
    assert other.closed.code == 1000


@pytest.mark.parametrize("role", ROLES)
async def test_aclose_is_idempotent(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, peer = oriented(pair, role)
    with trio.fail_after(GUARD):
        await local.aclose(4001, "first")
        await local.aclose(4002, "second")
        await local.aclose()
    assert local.closed == CloseReason(4001, "first")
    assert peer.closed == CloseReason(4001, "first")


@pytest.mark.parametrize("role", ROLES)
async def test_concurrent_aclose_callers_all_finish_with_one_close(
    role: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            local, peer = await open_sides(nursery, role)
            async with trio.open_nursery() as closers:
                for code in (4001, 4002, 4003):
                    closers.start_soon(local.aclose, code)
            assert local.closed is not None
            assert local.closed.code in (4001, 4002, 4003)
            with pytest.raises(ConnectionClosed) as exc_info:
                await peer.get_message()
            assert exc_info.value.reason is not None
            assert exc_info.value.reason.code == local.closed.code
            await peer.aclose()
        # Both readers ended on their own: the nursery exited.


async def test_both_sides_closing_at_once_both_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            client, server = await open_pair(nursery)
            async with trio.open_nursery() as closers:
                closers.start_soon(client.aclose, 4001, "client")
                closers.start_soon(server.aclose, 4002, "server")
    # Each side reports one of the two codes, never an abnormal closure.
    for conn in (client, server):
        assert conn.closed is not None
        assert conn.closed.code in (4001, 4002)
        with pytest.raises(ConnectionClosed):
            await conn.get_message()


@pytest.mark.parametrize("role", ROLES)  # the side that keeps sending
async def test_peer_closing_while_we_send_raises_connection_closed(
    role: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            sender, closer = await open_sides(nursery, role)
            stopped: list[ConnectionClosed] = []

            async def keep_sending() -> None:
                for i in range(100_000):
                    try:
                        await sender.send_message(b"%d" % i * 100)
                    except ConnectionClosed as exc:
                        stopped.append(exc)
                        return
                raise AssertionError("send_message never noticed the close")

            nursery.start_soon(keep_sending)
            await closer.aclose(4000, "stop")
        assert len(stopped) == 1
        assert stopped[0].reason == CloseReason(4000, "stop")
        assert sender.closed == CloseReason(4000, "stop")


@pytest.mark.parametrize("role", ROLES)  # the side that keeps sending
async def test_peer_closing_while_we_are_blocked_sending_raises_connection_closed(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The peer's application stopped reading and its reader stopped at the
    # read-ahead bound, so our writes block (lockstep: no buffering). Then
    # the peer closes: our blocked sender must get ConnectionClosed.
    local_stream, peer_stream = trio.testing.lockstep_stream_pair()
    sender, closer = await open_sides(
        nursery, role, local_stream=local_stream, peer_stream=peer_stream
    )
    outcome: list[object] = []

    async def keep_sending() -> None:
        for i in range(100):
            try:
                await sender.send_message(bytes([i]) * 64 * 1024)
            except ConnectionClosed as exc:
                outcome.append(exc)
                return
        outcome.append("sent everything")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as tasks:
            tasks.start_soon(keep_sending)
            await settle()
            assert outcome == []  # blocked
            await closer.aclose(4000, "enough")
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConnectionClosed)
    assert sender.closed == CloseReason(4000, "enough")


@pytest.mark.parametrize("role", ROLES)  # the side that does not read, then closes
async def test_aclose_finishes_while_the_reader_is_paused(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    closer, sender = await open_sides(nursery, role)
    for i in range(20):
        await sender.send_message(bytes([i]) * 64 * 1024)
    await settle()  # closer's reader has stopped at the read-ahead bound
    with trio.fail_after(GUARD):
        await closer.aclose(4000)
        with pytest.raises(ConnectionClosed) as exc_info:
            await sender.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 4000


@pytest.mark.parametrize("role", ROLES)
async def test_data_after_the_peers_close_frame_is_ignored(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send_frame(OP_TEXT, b"before")
    await peer.send_frame(OP_CLOSE, close_payload(4000, "bye"))
    await peer.send_frame(OP_TEXT, b"after")
    with trio.fail_after(GUARD):
        assert await conn.get_message() == "before"
        with pytest.raises(ConnectionClosed) as exc_info:
            await conn.get_message()
    assert exc_info.value.reason == CloseReason(4000, "bye")


@pytest.mark.parametrize("role", ROLES)
async def test_close_frame_without_a_code_is_1005(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send_frame(OP_CLOSE, b"")
    with trio.fail_after(GUARD):
        echo = await peer.expect_close()
        with pytest.raises(ConnectionClosed):
            await conn.get_message()
    assert conn.closed is not None
    assert conn.closed.code == 1005
    assert conn.closed.name == "NO_STATUS_RCVD"
    # The echo carries no code either (1005 must never be sent).
    assert echo.code == 1005


async def test_client_aclose_finishes_when_the_server_keeps_tcp_open(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 6455 7.1.1: the server closes TCP first; a client waits for that,
    # but not forever.
    conn, peer = await open_raw(nursery, "client")
    closing = in_background(nursery, conn.aclose)
    close = await peer.expect_close()
    await peer.send(close.response())  # and the server never closes TCP
    await closing.wait()
    assert closing.error is None
    with trio.fail_after(GUARD):
        await peer.expect_eof()


async def test_close_echo_is_sent_when_a_waiting_sender_gets_the_write_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The client's reader is writing a pong (holding the write turn) while
    # the application's send_message waits for the turn. The server's close
    # frame is parsed right after the pong is written, just as the turn
    # passes to the waiting sender. The echo must still go out.
    wrapped: list[FaultyStream] = []

    def wrap(stream: trio.abc.Stream) -> trio.abc.Stream:
        wrapped.append(FaultyStream(stream))
        return wrapped[0]

    async with trio.open_nursery() as nursery:
        client, peer = await open_raw(nursery, "client", stream_wrapper=wrap)
        faulty = wrapped[0]
        ping = build_frame(OP_PING, b"p")
        faulty.split_next_read_at = len(ping)
        faulty.send_gate = gate = trio.Event()
        await peer.send_raw(ping + build_frame(OP_CLOSE, close_payload(4000, "bye")))
        await settle()  # the reader is writing the pong, holding the turn
        sending = in_background(nursery, client.send_message, "from the app")
        await settle()  # the application waits for the turn
        faulty.send_gate = None
        gate.set()
        with trio.fail_after(GUARD):
            assert (await peer.expect(Pong)).payload == b"p"
            event = await peer.next_event()
            if isinstance(event, TextMessage):  # the app's message may go first
                event = await peer.next_event()
        await sending.wait()
        assert isinstance(event, CloseConnection), f"no close echo, got {event!r}"
        assert event.code == 4000
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("role", ROLES)
async def test_peer_dropping_the_stream_closes_with_1006(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send(TextMessage("last words"))
    pinging = in_background(nursery, conn.ping, b"never answered")
    await peer.expect(Ping)
    await peer.stream.aclose()  # no close frame
    await pinging.wait()
    assert isinstance(pinging.error, ConnectionClosed)
    assert conn.closed is not None
    assert conn.closed.code == 1006
    assert conn.closed.name == "ABNORMAL_CLOSURE"
    with trio.fail_after(GUARD):
        assert await conn.get_message() == "last words"
        with pytest.raises(ConnectionClosed) as exc_info:
            await conn.get_message()
    assert exc_info.value.reason is not None
    assert exc_info.value.reason.code == 1006
    with pytest.raises(ConnectionClosed):
        await conn.send_message("anyone there?")
    with trio.fail_after(GUARD):
        await conn.aclose()  # nothing left to do, and no hang


@pytest.mark.parametrize("role", ROLES)
async def test_receive_error_closes_with_1006(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    local_stream, peer_stream = trio.testing.memory_stream_pair()
    faulty = FaultyStream(local_stream)
    local, peer = await open_sides(nursery, role, local_stream=faulty, peer_stream=peer_stream)
    waiting = in_background(nursery, local.get_message)
    await settle()
    faulty.break_receive = True
    # The pong (and the message) arrive, but reading them fails.
    pinging = in_background(nursery, local.ping, b"p")
    await peer.send_message("lost")
    await waiting.wait()
    await pinging.wait()
    assert isinstance(waiting.error, ConnectionClosed)
    assert isinstance(pinging.error, ConnectionClosed)
    assert local.closed is not None and local.closed.code == 1006


@pytest.mark.parametrize("role", ROLES)
async def test_send_error_is_connection_closed_with_1006(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    local_stream, peer_stream = trio.testing.memory_stream_pair()
    faulty = FaultyStream(local_stream)
    local, peer = await open_sides(nursery, role, local_stream=faulty, peer_stream=peer_stream)
    faulty.break_send = True
    with pytest.raises(ConnectionClosed) as exc_info:
        await local.send_message("x")
    assert isinstance(exc_info.value.__cause__, trio.BrokenResourceError)
    assert local.closed is not None and local.closed.code == 1006
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed):
        await peer.get_message()
    assert peer.closed is not None and peer.closed.code == 1006


@pytest.mark.parametrize("role", ROLES)
async def test_send_cancelled_mid_write_aborts_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    local_stream, peer_stream = trio.testing.memory_stream_pair()
    faulty = FaultyStream(local_stream)
    local, peer = await open_sides(nursery, role, local_stream=faulty, peer_stream=peer_stream)
    await local.send_message("whole")
    faulty.stall_after = 10  # half a frame goes out, then the write blocks
    with trio.move_on_after(5) as scope:
        await local.send_message(b"y" * 1000)
    assert scope.cancelled_caught
    # The stream now holds half a frame: the connection is closed, not reused.
    assert local.closed is not None and local.closed.code == 1006
    with pytest.raises(ConnectionClosed):
        await local.send_message("after")
    # The peer gets what was whole, then an abnormal closure, never garbage.
    with trio.fail_after(GUARD):
        assert await peer.get_message() == "whole"
        with pytest.raises(ConnectionClosed):
            await peer.get_message()
    assert peer.closed is not None and peer.closed.code == 1006


@pytest.mark.parametrize("role", ROLES)
async def test_cancelled_aclose_aborts_without_leaking_tasks(
    role: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            conn, peer = await open_raw(nursery, role)
            with trio.move_on_after(5) as scope:
                await conn.aclose()  # the peer never answers
            assert scope.cancelled_caught
            assert conn.closed is not None
            # The peer saw the close frame, then the stream was closed.
            await peer.expect_close()
            await peer.expect_eof()
            with pytest.raises(ConnectionClosed):
                await conn.send_message("x")
            with pytest.raises(ConnectionClosed):
                await conn.get_message()
        # The nursery exited on its own: the reader task is gone.


@pytest.mark.parametrize("role", ROLES)
async def test_aclose_finishes_when_the_peer_drops_instead_of_answering(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    closing = in_background(nursery, conn.aclose, 4000)
    await peer.expect_close()
    await peer.stream.aclose()
    await closing.wait()
    assert closing.error is None
    assert conn.closed is not None


@pytest.mark.parametrize("role", ROLES)
async def test_peer_close_is_echoed_with_its_code(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    conn, peer = await open_raw(nursery, role)
    await peer.send(CloseConnection(4444, "why"))
    with trio.fail_after(GUARD):
        echo = await peer.expect_close()
        await peer.expect_eof()
    assert echo.code == 4444
    assert conn.closed == CloseReason(4444, "why")


# ---------------------------------------------------------------------------
# Properties


async def test_roles(pair: Pair, autojump_clock: trio.testing.MockClock) -> None:
    client, server = pair
    assert client.is_client and not client.is_server
    assert server.is_server and not server.is_client


async def test_path_is_the_requested_resource(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = pair
    assert client.path == "/path?q=1"
    assert server.path == "/path?q=1"


async def test_subprotocol_chosen_by_the_server_is_seen_by_both(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await open_pair(
        nursery, subprotocols=["chat", "superchat"], accept_subprotocol="superchat"
    )
    assert client.subprotocol == "superchat"
    assert server.subprotocol == "superchat"


async def test_subprotocol_is_none_when_the_server_chooses_none(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await open_pair(nursery, subprotocols=["chat"])
    assert client.subprotocol is None
    assert server.subprotocol is None


async def test_subprotocol_is_none_by_default(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = pair
    assert client.subprotocol is None
    assert server.subprotocol is None


async def test_handshake_headers_are_the_other_sides(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    result: dict[str, WebSocketConnection] = {}

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        result["server"] = await request.accept(extra_headers=[(b"x-from-server", b"s")])

    async def connect() -> None:
        result["client"] = await wrap_client_stream(
            nursery,
            client_stream,
            "example.com",
            "/",
            extra_headers=[(b"x-from-client", b"c")],
        )

    async with trio.open_nursery() as both:
        both.start_soon(serve)
        both.start_soon(connect)
    request_headers = dict(result["server"].handshake_headers)
    response_headers = dict(result["client"].handshake_headers)
    assert request_headers[b"x-from-client"] == b"c"
    assert b"sec-websocket-key" in request_headers
    assert response_headers[b"x-from-server"] == b"s"
    assert b"x-from-client" not in response_headers
    assert b"x-from-server" not in request_headers


@pytest.mark.parametrize("role", ROLES)
async def test_endpoints_of_memory_streams_are_strings(
    pair: Pair, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    local, _peer = oriented(pair, role)
    assert isinstance(local.local, str)
    assert isinstance(local.remote, str)


async def test_str_shows_the_role_and_endpoints(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = pair
    assert "client" in str(client) and "server" not in str(client)
    assert "server" in str(server) and "client" not in str(server)
    assert str(client.local) in str(client)
    assert "client" in repr(client)
