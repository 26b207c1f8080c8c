"""Every buffer a connection holds stays within its bound when a hostile
peer pushes past it, both roles (issue 13's defects 3, 4 and 5, and the
fragments of one message).

Each case checks the connection's own accounting (``statistics()``) and,
with tracemalloc, what the process really holds: the memory the library and
wsproto allocated during the attack, leaving out the in-memory "network"
(trio.testing's stream buffers, which stand for the kernel's socket buffers)
and the peer's own bytes built in this file.
"""

from __future__ import annotations

import itertools
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from test_connection import FaultyStream, RawPeer, build_frame, open_raw, settle
from test_deflate import TEXT, deflate, frame, server_with_raw_client

from trio_websocket import ConnectionClosed, WebSocketConnection
from trio_websocket._core.config import OUTBOX_LIMIT
from trio_websocket._core.messages import ITEM_COST, MAX_PARTS, MessageAssembler

ROLES = ["client", "server"]
OP_CONT, OP_TEXT, OP_BINARY, OP_PING = 0x0, 0x1, 0x2, 0x9

#: What a connection may allocate beyond its stated bounds: one read, the
#: parser's state, a few objects per task.
SLACK = 256 * 1024


class MemoryProbe:
    """The peak of what was allocated inside the ``probe`` block, outside
    the memory streams and this test file."""

    peak = 0


_OUTSIDE = [
    tracemalloc.Filter(False, "*/trio/testing/*"),
    tracemalloc.Filter(False, __file__),
    tracemalloc.Filter(False, tracemalloc.__file__),
]


@contextmanager
def probe() -> Iterator[MemoryProbe]:
    result = MemoryProbe()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot().filter_traces(_OUTSIDE)
        yield result
        after = tracemalloc.take_snapshot().filter_traces(_OUTSIDE)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    result.peak = max(grown, 0)


def pings(count: int, *, masked: bool) -> bytes:
    return build_frame(OP_PING, b"", masked=masked) * count


# ---------------------------------------------------------------------------
# Defect 5: empty messages cost something, so a flood of them is bounded


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
async def test_a_flood_of_empty_messages_stops_at_the_budget(
    nursery: trio.Nursery, role: str, opcode: int, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role, max_buffered_bytes=1024, message_queue_size=1)
    flood = build_frame(opcode, b"", masked=peer.is_client) * 200_000  # 1.2 MB or less
    with probe() as memory:
        await peer.send_raw(flood)
        await settle()
        waiting = ws.statistics().messages_buffered
    # The budget is 1024 bytes; each empty message costs ITEM_COST.
    assert waiting <= 1024 // ITEM_COST + 1
    assert ws.statistics().bytes_received <= len(flood) // 2
    assert memory.peak < SLACK
    # The connection still works: what waits is delivered, in order.
    for _ in range(waiting):
        assert await ws.get_message() in ("", b"")


# ---------------------------------------------------------------------------
# Defect 3: inflated bytes count against the budget within one read


async def _bomb_server(nursery: trio.Nursery, **options: object) -> tuple[object, object]:
    ws, peer, _head = await server_with_raw_client(nursery, b"permessage-deflate", **options)
    return ws, peer


@pytest.mark.parametrize("budget", [None, 16 * 1024])
async def test_compressed_messages_in_one_read_stop_at_the_budget(
    nursery: trio.Nursery, budget: int | None, autojump_clock: trio.testing.MockClock
) -> None:
    size = 64 * 1024
    ws, peer = await _bomb_server(nursery, max_message_size=size, max_buffered_bytes=budget)
    bomb = frame(TEXT, deflate(b"a" * (size - 1)), rsv1=True, mask=True)
    assert len(bomb) < 200
    read_ahead = 256 * 1024 if budget is None else budget
    with probe() as memory:
        await peer.stream.send_all(bomb * 300)  # ~19 MiB once inflated, in one read
        await settle()
        buffered = ws.statistics().buffered_bytes  # type: ignore[attr-defined]
    assert buffered <= read_ahead + size
    assert memory.peak < read_ahead + size + SLACK
    # Nothing is lost: every message comes out whole as the application reads.
    for _ in range(300):
        assert await ws.get_message() == "a" * (size - 1)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Defect 4: pongs for a peer that does not read are capped


async def open_with_a_stuck_send(
    nursery: trio.Nursery, role: str
) -> tuple[WebSocketConnection, RawPeer]:
    """A connection playing ``role`` whose peer has stopped reading, with a
    send stuck on it (holding the write turn) in a task of ``nursery``."""
    faulty: list[FaultyStream] = []

    def wrap(stream: trio.abc.Stream) -> trio.abc.Stream:
        faulty.append(FaultyStream(stream))
        return faulty[0]

    ws, peer = await open_raw(nursery, role, stream_wrapper=wrap)
    faulty[0].stall_after = 0  # every write hangs
    nursery.start_soon(ws.send_message, b"x" * 100)
    await settle()
    return ws, peer


@pytest.mark.parametrize("role", ROLES)
async def test_pongs_stop_the_reader_while_a_send_is_stuck(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_with_a_stuck_send(nursery, role)
    flood = pings(100_000, masked=peer.is_client)  # 200-600 KB, each wants a pong
    with probe() as memory:
        await peer.send_raw(flood)
        await settle()
        unsent = ws.statistics().unsent_bytes
    assert unsent <= OUTBOX_LIMIT
    assert ws.statistics().bytes_received < len(flood)
    assert memory.peak < OUTBOX_LIMIT + SLACK
    # The reader is waiting for the stuck write, not gone: closing still ends.
    with trio.fail_after(120):
        await ws.aclose()
    assert ws.closed is not None


@pytest.mark.parametrize("role", ROLES)
async def test_pongs_within_one_read_are_capped_and_all_answered(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Nothing stuck: a read full of pings is answered in rounds of at most
    # OUTBOX_LIMIT, and every ping gets its pong.
    ws, peer = await open_raw(nursery, role)
    count = 20_000
    await peer.send_raw(pings(count, masked=peer.is_client))
    pongs = 0
    with trio.fail_after(60):
        while pongs < count:
            event = await peer.next_event()
            assert type(event).__name__ == "Pong", event
            pongs += 1
    assert ws.closed is None


# ---------------------------------------------------------------------------
# The fragments of one message


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
async def test_a_message_in_tiny_fragments_costs_about_its_size(
    nursery: trio.Nursery, role: str, opcode: int, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role, max_message_size=2**20)
    masked = peer.is_client
    count = 20_000
    piece = "\u00e9\u00e9".encode() if opcode == OP_TEXT else b"wxyz"  # 4 bytes
    body = build_frame(OP_CONT, piece, fin=False, masked=masked)
    with probe() as memory:
        await peer.send_raw(build_frame(opcode, b"", fin=False, masked=masked) + body * count)
        await settle()
    # 80 KB of payload: kept as one growing buffer, not 20,000 objects
    # (~1 MB as a list of small pieces).
    assert memory.peak < 2 * 4 * count + SLACK
    await peer.send_raw(build_frame(OP_CONT, b"", masked=masked))
    message = await ws.get_message()
    assert message == ("\u00e9\u00e9" * count if opcode == OP_TEXT else b"wxyz" * count)


@pytest.mark.parametrize("text", [True, False])
def test_the_assembler_joins_many_pieces_without_changing_the_message(text: bool) -> None:
    assembler = MessageAssembler(10**6)
    pieces: list[str] | list[bytes] = (
        [chr(0x41 + i % 26) + "\u2603" for i in range(MAX_PARTS * 3)]
        if text
        else [bytes([i % 256]) * 3 for i in range(MAX_PARTS * 3)]
    )
    for piece in pieces[:-1]:
        assert assembler.feed(piece, False) is None
    assert len(assembler._parts) < MAX_PARTS
    joined = "".join(pieces) if text else b"".join(pieces)  # type: ignore[arg-type]
    assert assembler.feed(pieces[-1], True) == joined
    assert not assembler.in_progress
    assert assembler.room == 10**6


def test_the_assembler_hands_joined_pieces_to_a_streamed_receive() -> None:
    assembler = MessageAssembler(10**6)
    for _ in range(MAX_PARTS + 5):
        assembler.feed("\u00e9", False)
    assert assembler.take_parts() == ["\u00e9" * (MAX_PARTS + 5)]
    assert not assembler.in_progress


async def test_a_compression_bomb_in_one_message_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await _bomb_server(nursery, max_message_size=64 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(b"\0" * 50 * 2**20) + compressor.flush(zlib.Z_SYNC_FLUSH)
    with probe() as memory:
        await peer.stream.send_all(frame(TEXT, payload[:-4], rsv1=True, mask=True))  # type: ignore[attr-defined]
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()  # type: ignore[attr-defined]
    assert caught.value.reason.code == 1009
    assert memory.peak < 64 * 1024 + SLACK


# ---------------------------------------------------------------------------
# CPU: no peer holds the reader (and so the event loop) for long


@pytest.mark.parametrize("role", ROLES)
async def test_a_read_of_many_tiny_messages_is_parsed_in_turns(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await open_raw(nursery, role, message_queue_size=100_000)
    count = 5000
    seen: list[int] = []
    done = trio.Event()

    async def watch() -> None:
        # Runs between the reader's turns: what it sees is how far the
        # reader got each time it let other tasks run.
        while not done.is_set():
            seen.append(ws.statistics().messages_received)
            await trio.lowlevel.checkpoint()

    nursery.start_soon(watch)
    await peer.send_raw(build_frame(OP_BINARY, b"x", masked=peer.is_client) * count)
    with trio.fail_after(10):
        while ws.statistics().messages_received < count:
            await trio.lowlevel.checkpoint()
    done.set()
    steps = sorted(set(seen) - {0, count})
    assert steps, "all 5000 messages were parsed without letting another task run"
    # (trio runs the tasks of a batch in random order: between two looks,
    # the reader may have had two turns.)
    assert all(later - earlier <= 2 * 1024 for earlier, later in itertools.pairwise([0, *steps]))
    for _ in range(count):
        assert await ws.get_message() == b"x"
