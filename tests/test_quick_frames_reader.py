"""A connection's reader given reads that start with whole messages (the
case ``_wire.quick_frames`` speeds up, issue 17): every message arrives,
in order, with the control frames and errors after them handled as
before; one read of thousands of messages still lets other tasks run
between turns; both roles (a server's frames are masked)."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from test_connection import build_frame, open_raw, settle
from wsproto.events import Pong

from trio_websocket import ConnectionClosed

ROLES = ["client", "server"]
OP_CONT, OP_TEXT, OP_BINARY, OP_PING = 0x0, 0x1, 0x2, 0x9


def message_frame(message: bytes | str, *, masked: bool, fin: bool = True) -> bytes:
    if isinstance(message, str):
        return build_frame(OP_TEXT, message.encode(), masked=masked, fin=fin)
    return build_frame(OP_BINARY, message, masked=masked, fin=fin)


def numbered(count: int) -> list[bytes | str]:
    return [f"text {i} \u00e9" if i % 3 == 0 else b"bin %d" % i for i in range(count)]


@pytest.mark.parametrize("role", ROLES)
async def test_thousands_of_messages_in_one_read_then_a_ping(
    nursery: trio.Nursery, role: str
) -> None:
    """One read of 3,000 small messages and a ping: the reader hands the
    messages over in turns of at most 1,024 events (another task runs
    between them), all of them in order, then answers the ping."""
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role, message_queue_size=10_000)
        masked = peer.is_client
        messages = numbered(3000)
        read = b"".join(message_frame(m, masked=masked) for m in messages)
        read += build_frame(OP_PING, b"after", masked=masked)
        assert len(read) < 128 * 1024  # one read (the default receive_buffer_size)
        await settle()
        # What the inbox holds after each step of the reader task.
        after_steps: list[int] = []

        class ReaderSteps(trio.abc.Instrument):
            def after_task_step(self, task: trio.lowlevel.Task) -> None:
                if task.name.endswith(" reader"):
                    after_steps.append(ws.statistics().messages_buffered)

        instrument = ReaderSteps()
        trio.lowlevel.add_instrument(instrument)
        try:
            await peer.send_raw(read)
            await settle()
        finally:
            trio.lowlevel.remove_instrument(instrument)
        # A turn's worth of events (1,024) at most per step: the other
        # tasks ran between them.
        steps = [0, *after_steps]
        assert all(0 <= b - a <= 1024 for a, b in itertools.pairwise(steps)), steps
        assert steps[-1] == 3000
        for message in messages:
            assert await ws.get_message() == message
        pong = await peer.expect(Pong)
        assert pong.payload == b"after"


@pytest.mark.parametrize("role", ROLES)
async def test_whole_messages_around_fragments_and_pings(nursery: trio.Nursery, role: str) -> None:
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role)
        masked = peer.is_client
        read = (
            message_frame(b"one", masked=masked)
            + message_frame("two", masked=masked)
            + build_frame(OP_PING, b"p", masked=masked)
            + message_frame(b"three", masked=masked)
            + message_frame(b"fo", masked=masked, fin=False)
            + build_frame(OP_CONT, b"ur", masked=masked)
            + message_frame("five", masked=masked)
        )
        # Cut everywhere: each cut is a read boundary the reader must join.
        for cut in (len(read), 1, 7, len(read) - 3):
            await peer.send_raw(read[:cut])
            await settle()
            await peer.send_raw(read[cut:])
            for expected in (b"one", "two", b"three", b"four", "five"):
                assert await ws.get_message() == expected
            assert (await peer.expect(Pong)).payload == b"p"


@pytest.mark.parametrize("role", ROLES)
async def test_whole_messages_before_one_too_big(nursery: trio.Nursery, role: str) -> None:
    """The messages before a message over ``max_message_size`` are
    delivered; that one closes the connection with 1009."""
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role, max_message_size=100)
        masked = peer.is_client
        read = b"".join(message_frame(b"m%d" % i, masked=masked) for i in range(5))
        read += message_frame(b"x" * 100, masked=masked)  # at the limit: fine
        read += message_frame(b"x" * 101, masked=masked)
        await peer.send_raw(read)
        for i in range(5):
            assert await ws.get_message() == b"m%d" % i
        assert await ws.get_message() == b"x" * 100
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 1009


@pytest.mark.parametrize("role", ROLES)
async def test_whole_messages_before_invalid_utf8(nursery: trio.Nursery, role: str) -> None:
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role)
        masked = peer.is_client
        read = message_frame("ok", masked=masked)
        read += build_frame(OP_TEXT, "\u20ac".encode()[:2], masked=masked)
        read += message_frame("never", masked=masked)
        await peer.send_raw(read)
        assert await ws.get_message() == "ok"
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 1007


@pytest.mark.parametrize("role", ROLES)
async def test_a_streamed_receive_after_whole_messages(nursery: trio.Nursery, role: str) -> None:
    """Whole messages waiting come whole to ``receive_fragments``; the
    next message, arriving in pieces, comes in pieces."""
    with trio.fail_after(10):
        ws, peer = await open_raw(nursery, role)
        masked = peer.is_client
        await peer.send_raw(message_frame(b"a", masked=masked) + message_frame(b"b", masked=masked))
        await settle()
        assert [piece async for piece in ws.receive_fragments()] == [b"a"]
        assert [piece async for piece in ws.receive_fragments()] == [b"b"]
        streamed = ws.receive_fragments()
        await peer.send_raw(message_frame(b"c1", masked=masked, fin=False))
        assert await streamed.__anext__() == b"c1"
        await peer.send_raw(
            build_frame(OP_CONT, b"c2", masked=masked) + message_frame(b"d", masked=masked)
        )
        assert await streamed.__anext__() == b"c2"
        with pytest.raises(StopAsyncIteration):
            await streamed.__anext__()
        assert await ws.get_message() == b"d"
