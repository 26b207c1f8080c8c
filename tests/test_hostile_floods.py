"""Floods: a peer that sends one kind of frame as fast as it can.

For each frame kind (ping, pong, empty text, empty binary, the tiny
fragments of one endless message, close frames after the close), against
our server (serve_websocket over TCP, a WebSocketServer and
wrap_server_stream over memory streams) and our client (wrap_client_stream
over memory streams, open_websocket_url over TCP), each case checks that
the close code the flooder sees is the right one, that memory stays within
what the limits allow, that no ExceptionGroup reaches the application, and
(server role) that a well-behaved client is served right afterwards.

Then the inbox bounds: a peer flooding messages the application does not
read must be stopped by ``message_queue_size``/``max_buffered_bytes``,
empty messages included.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hostile_peers import (
    CLIENT_KINDS,
    MEMORY_SERVER_KINDS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SERVER_KINDS,
    AttackedServer,
    MemoryProbe,
    RawPeer,
    clock_for,
    close_payload,
    raw_client,
    raw_server,
    run_client,
)

from trio_websocket import ConnectionClosed, WebSocketConnection

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

#: Frames per flood: enough to go through many reads, few enough that the
#: whole suite stays quick (tracemalloc slows every allocation down).
FLOOD_FRAMES = 4000
BATCH = 500
#: What the library may hold besides the stated bounds (the interpreter's
#: own objects for a connection, trio's tasks, a read being parsed).
SLACK = 1024 * 1024
#: The stated bounds these floods may reach: one read, and the outbox cap
#: (queued pongs and the close frame) the library keeps.
READ = 128 * 1024
OUTBOX_CAP = 256 * 1024 + 64 * 1024
#: The limit on one message in the endless-message flood.
SMALL_MESSAGE = 16 * 1024


@pytest.fixture
def clock(kind: str) -> trio.testing.MockClock | None:
    return clock_for(kind)


@dataclass(frozen=True)
class Flood:
    """One flood: ``count`` copies of a frame, after an optional opening
    frame, and the close code the flooder must then read."""

    opening: tuple[int, bytes, bool] | None
    opcode: int
    payload: bytes
    fin: bool
    expected_code: int
    # Whether the flooder closes normally after the flood (the close-after-
    # close flood starts with its close).
    closes_after: bool = True


FLOODS = {
    "ping": Flood(None, OP_PING, b"", True, 1000),
    "pong": Flood(None, OP_PONG, b"", True, 1000),
    "empty-text": Flood(None, OP_TEXT, b"", True, 1000),
    "empty-binary": Flood(None, OP_BINARY, b"", True, 1000),
    # One message that never ends, 8 bytes at a time: 1009 once it passes
    # max_message_size (SMALL_MESSAGE).
    "endless-fragments": Flood((OP_TEXT, b"start", False), OP_CONT, b"12345678", False, 1009),
    # The close, then more closes: ignored, the echo is 1000.
    "close-after-close": Flood(
        (OP_CLOSE, close_payload(1000), True),
        OP_CLOSE,
        close_payload(1000),
        True,
        1000,
        closes_after=False,
    ),
}


async def flood(peer: RawPeer, attack: Flood) -> None:
    """Send the flood, stopping quietly when the other side hangs up."""
    try:
        if attack.opening is not None:
            opcode, payload, fin = attack.opening
            await peer.send_frame(opcode, payload, fin=fin)
        chunk = peer.frame(attack.opcode, attack.payload, fin=attack.fin) * BATCH
        for _ in range(FLOOD_FRAMES // BATCH):
            await peer.send(chunk)
        if attack.closes_after:
            await peer.send_frame(OP_CLOSE, close_payload(1000))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def flood_and_read_close(peer: RawPeer, attack: Flood) -> int | None:
    """Flood while reading (the flooder reads everything it is sent, so
    only the flood itself is hostile); the close code read."""
    code: int | None = None

    async def read() -> None:
        nonlocal code
        code = await peer.read_close_code()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await flood(peer, attack)
    return code


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("name", list(FLOODS))
async def test_server_survives_flood(kind: str, name: str, clock: object) -> None:
    attack = FLOODS[name]
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, max_message_size=SMALL_MESSAGE).start(nursery)
        peer = await raw_client(await target.connect(), "/echo")
        with trio.fail_after(20), MemoryProbe() as probe:
            code = await flood_and_read_close(peer, attack)
        await peer.reset()
        assert code == attack.expected_code
        assert probe.peak < READ + OUTBOX_CAP + SMALL_MESSAGE + SLACK
        visit = target.visit("echo")
        with trio.fail_after(5):
            await visit.done.wait()
        assert isinstance(visit.error, ConnectionClosed)
        assert visit.closed is not None and visit.closed.code == attack.expected_code
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


async def echo_app(ws: WebSocketConnection) -> None:
    for _ in range(FLOOD_FRAMES * 2):
        await ws.send_message(await ws.get_message())


@pytest.mark.parametrize("kind", CLIENT_KINDS)
@pytest.mark.parametrize("name", list(FLOODS))
async def test_client_survives_flood(kind: str, name: str, clock: object) -> None:
    attack = FLOODS[name]
    codes: list[int | None] = []

    async def hostile(stream: trio.abc.Stream) -> None:
        peer = await raw_server(stream)
        codes.append(await flood_and_read_close(peer, attack))

    with trio.fail_after(20), MemoryProbe() as probe:
        run = await run_client(kind, hostile, echo_app, max_message_size=SMALL_MESSAGE)
    assert codes == [attack.expected_code]
    assert probe.peak < READ + OUTBOX_CAP + SMALL_MESSAGE + SLACK
    assert not isinstance(run.error, BaseExceptionGroup), repr(run.error)
    assert isinstance(run.error, ConnectionClosed), repr(run.error)
    assert run.connection is not None and run.connection.closed is not None
    assert run.connection.closed.code == attack.expected_code


# ---------------------------------------------------------------------------
# Messages nobody reads

#: A small budget, so that a flood past it is quick to send.
BUDGET = 4096
QUEUE = 4


@pytest.mark.parametrize("kind", MEMORY_SERVER_KINDS)
@pytest.mark.parametrize(
    ("opcode", "payload"),
    [
        pytest.param(OP_TEXT, b"x", id="one-byte-text"),
        pytest.param(OP_TEXT, b"", id="empty-text"),
        pytest.param(OP_BINARY, b"", id="empty-binary"),
    ],
)
async def test_unread_messages_stop_the_reader(
    kind: str, payload: bytes, opcode: int, clock: object
) -> None:
    """The application reads nothing: the server must stop reading once
    ``message_queue_size`` messages and ``max_buffered_bytes`` wait (plus
    one read), so the flooder's writes stall; its pings are still
    answered until then, and the messages are all there once the
    application reads."""
    options = {
        "message_queue_size": QUEUE,
        "max_buffered_bytes": BUDGET,
        "receive_buffer_size": BUDGET,
    }
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, **options).start(nursery)
        peer = await raw_client(await target.connect(), "/idle")
        frames = 10_000
        chunk = peer.frame(opcode, payload) * BATCH
        sent = 0
        with MemoryProbe() as probe:
            # The flood stalls, or ends: 10 s of (autojump) time either way.
            with trio.move_on_after(10):
                for _ in range(frames // BATCH):
                    await peer.send(chunk)
                    sent += BATCH
        connection = target.visit("idle").connection
        assert connection is not None
        stats = connection.statistics()
        # However a message is counted (at least one byte each), the budget
        # holds no more than BUDGET of them, plus those parsed from the read
        # that crossed it (6-byte frames).
        most = QUEUE + BUDGET + BUDGET // 6 + 1
        assert stats.messages_buffered <= most
        assert sent < frames
        assert probe.peak < 2 * BUDGET + SLACK
        await peer.reset()
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", MEMORY_SERVER_KINDS)
@pytest.mark.parametrize(
    "size",
    [1, 1000],
    ids=lambda size: f"{size}-byte",
)
async def test_unread_tiny_messages_stay_within_the_budget_in_memory(
    kind: str, size: int, clock: object
) -> None:
    """What the inbox holds in memory, not only in payload bytes, stays
    within the budget (and one read) times a small factor: tiny messages
    must not get past it on their per-message overhead."""
    budget = 16 * 1024
    options = {"max_buffered_bytes": budget, "receive_buffer_size": budget}
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, **options).start(nursery)
        peer = await raw_client(await target.connect(), "/idle")
        chunk = peer.frame(OP_BINARY, b"x" * size) * max(1, 5000 // size)
        with MemoryProbe() as probe:
            with trio.move_on_after(10):
                for _ in range(60):  # 300 KB of payload, 18 times the budget
                    await peer.send(chunk)
        await peer.reset()
        assert probe.peak < 2 * (budget + budget) + 256 * 1024
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()
