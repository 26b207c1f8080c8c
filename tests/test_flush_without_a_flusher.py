"""A close frame that no task is left to write: the connection gives up.

When a streamed message is cut short (``send_fragments``) or refused
(``receive_fragments(max_size=...)``), the connection queues a close frame
and starts a one-shot task in its nursery to write it. If that nursery no
longer takes tasks, the connection is aborted instead (``_flush_soon`` with
``or_abort``).

A nursery stops taking tasks only once all its children are done, and the
connection's reader is one of them and sets the close reason as it ends:
for a connection still open, the one way there is a nursery abandoned by
the task that opened it (it returned without leaving the ``async with``,
as an unclosed async generator does; trio fails that task with "Nursery
stack corrupted" and cancels the nursery). The reader must also not have
noticed that cancellation yet: here its read is held in a shielded wait by
a stream wrapper, which makes the order deterministic.

What the user must see: the call raises its own error (not trio's
RuntimeError, not a group), ``closed`` gives the reason, ``close_sent`` is
None (the close frame never reached the stream), the peer sees the stream
end, and no task is left behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from test_connection import (
    GUARD,
    OP_BINARY,
    RawPeer,
    build_frame,
    in_background,
    open_raw,
    settle,
)
from wsproto.events import BytesMessage, Ping, Pong

from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

ROLES = ["client", "server"]


class HeldReads(trio.abc.Stream):
    """Passes everything on, but once ``hold`` is set, a read first waits,
    shielded from cancellation, until ``released`` is set."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.hold = False
        self.released = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.hold:
            with trio.CancelScope(shield=True):
                await self.released.wait()
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Abandoned:
    """A connection whose nursery was abandoned by its owner task, its
    reader held in a read (see the module docstring)."""

    ws: WebSocketConnection
    peer: RawPeer
    stream: HeldReads
    nursery: trio.Nursery


@asynccontextmanager
async def abandoned_connection(role: str, before_hold: bytes = b"") -> AsyncIterator[Abandoned]:
    """A connection in a nursery entered by an owner task that then
    returned without leaving it. ``before_hold``: raw frames the peer sends
    that the reader takes in before its reads are held. On the way out the
    reader is let go, even if the test failed (else it would wait forever)."""
    result = Abandoned()
    connected = trio.Event()
    abandon = trio.Event()

    def wrap(stream: trio.abc.Stream) -> trio.abc.Stream:
        result.stream = HeldReads(stream)
        return result.stream

    async def owner() -> None:
        manager = trio.open_nursery()
        result.nursery = await manager.__aenter__()
        result.ws, result.peer = await open_raw(result.nursery, role, stream_wrapper=wrap)
        await settle()  # the reader is in its first read, not held
        result.stream.hold = True
        # The pong proves the reader took in everything sent with the ping
        # and went back to reading: into a held read.
        await result.peer.send_raw(before_hold + result.peer.protocol.send(Ping(b"?")))
        assert isinstance(await result.peer.next_event(), Pong)
        connected.set()
        await abandon.wait()
        # Returns inside the nursery: trio closes it to new tasks and
        # cancels it, and this task fails with "Nursery stack corrupted".

    try:
        with trio.fail_after(GUARD):
            with pytest.RaisesGroup(
                pytest.RaisesExc(RuntimeError, match="Nursery stack corrupted")
            ):
                async with trio.open_nursery() as owners:
                    owners.start_soon(owner)
                    await connected.wait()
                    await settle()
                    abandon.set()
        assert result.ws.closed is None  # the reader has not noticed yet
        yield result
    finally:
        if hasattr(result, "stream"):
            await let_the_reader_end(result)


async def let_the_reader_end(abandoned: Abandoned) -> None:
    """Release the held read and wait for the reader, also when the test
    failed: a task still running when the test ends would turn its failure
    into a TrioInternalError."""
    abandoned.stream.released.set()
    with trio.CancelScope(shield=True):
        await settle()


async def expect_stream_end_and_no_task_left(abandoned: Abandoned) -> None:
    """Let the reader see the cancellation: it closes the stream (the peer
    sees its end, and no close frame before it) and ends."""
    abandoned.stream.released.set()
    with trio.fail_after(GUARD):
        assert await abandoned.peer.next_event() == "EOF"
        await settle()
    assert abandoned.nursery.child_tasks == frozenset()


@pytest.mark.parametrize("role", ROLES)
async def test_a_message_cut_short_with_no_flusher_possible_aborts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    fail_now = trio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield b"first"
        await fail_now.wait()
        raise OSError("the file went away")

    async with abandoned_connection(role) as abandoned:
        ws, peer = abandoned.ws, abandoned.peer
        sending = in_background(nursery, ws.send_fragments, source())
        with trio.fail_after(GUARD):
            first = await peer.next_event()
        assert isinstance(first, BytesMessage) and first.data == b"first"
        assert not first.message_finished

        fail_now.set()
        await sending.wait()
        # The source's own error, not trio's "closed to new arrivals".
        assert type(sending.error) is OSError, repr(sending.error)
        assert ws.closed == CloseReason(1011, "message cut short by the sender")
        assert ws.close_sent is None
        assert ws.close_received is None
        with pytest.raises(ConnectionClosed) as caught:
            await ws.send_message(b"more")
        assert caught.value.reason == ws.closed
        await expect_stream_end_and_no_task_left(abandoned)
    with trio.fail_after(GUARD):
        await ws.aclose()  # returns at once: nothing is left to close
    assert ws.closed == CloseReason(1011, "message cut short by the sender")


@pytest.mark.parametrize("role", ROLES)
async def test_a_streamed_receive_refusing_with_no_flusher_possible_aborts(
    autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # A 100-byte message is waiting whole when a streamed receive that
    # takes at most 10 bytes claims it: refused with 1009.
    peer_is_client = role == "server"
    message = bytes(range(100))
    frame = build_frame(OP_BINARY, message, fin=True, masked=peer_is_client)
    async with abandoned_connection(role, before_hold=frame) as abandoned:
        ws = abandoned.ws
        with pytest.raises(ConnectionClosed) as caught:
            async for _ in ws.receive_fragments(max_size=10):
                pass  # pragma: no cover
        assert caught.value.reason == CloseReason(1009, "message exceeds 10 bytes")
        assert ws.closed == caught.value.reason
        assert ws.close_sent is None
        await expect_stream_end_and_no_task_left(abandoned)
