"""A send that must wait for the socket's room on an HTTP/2 connection
over a lean socket stream waits and writes itself, as a send over
HTTP/1.1 does, instead of handing the queue to the connection's writer
task and waiting for it (``HTTP2Connection.flush``).

What a user relies on: a large message gets out with its frames whole and
in order while the sending task does the writing; a send cancelled while
it waits for room loses nothing already queued (the writer task takes
over, and the frames arrive whole); another stream sending meanwhile is
not held up.
"""

from __future__ import annotations

import itertools
import random

import pytest
import trio
from test_h2_write_through import connected, send_now_calls  # noqa: F401 (a fixture)

from trio_websocket._h2 import connection as connection_module
from trio_websocket._h2.stream import HTTP2Stream

pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _writer_task(name: str) -> bool:
    return name.endswith("._writer")


def _senders_wrote_after_a_full_socket(calls: list[tuple[str, int, int]]) -> bool:
    """Whether a write that the socket took only part of was followed by
    one of a sending task: the send waited for room and wrote (before,
    only the writer task wrote until the socket had taken everything)."""
    return any(
        0 <= taken < offered and not _writer_task(following[0])
        for (_, offered, taken), following in itertools.pairwise(calls)
    )


async def test_a_large_send_waits_for_room_and_writes_itself(
    send_now_calls: list[tuple[str, int, int]],  # noqa: F811
) -> None:
    # The socket's buffers are small and the peer reads in bites: a 4 MiB
    # send meets a full socket again and again. Its own task writes each
    # time the socket has room; the writer task writes at most what the
    # send leaves once it has queued its last frame.
    data = random.Random(5).randbytes(4 << 20)
    with trio.fail_after(30):
        async with connected(stream_window=8 << 20, streams=1) as (server, peer, ids, nursery):
            (stream,) = server.streams
            send_now_calls.clear()
            done = trio.Event()

            async def send() -> None:
                await stream.send_all(data)
                done.set()

            nursery.start_soon(send, name="the-sender")
            while not done.is_set() or len(peer.data.get(ids[0], b"")) < len(data):
                await peer.read_once(32768, wait=0.01)
            assert bytes(peer.data[ids[0]]) == data
            assert server.connection._unwritten == 0
    by_sender = [taken for name, _, taken in send_now_calls if name.endswith("the-sender")]
    by_writer = [taken for name, _, taken in send_now_calls if _writer_task(name) and taken]
    # Many partial writes, all but the tail the sender's.
    assert len(by_sender) > 20
    assert sum(by_writer) < sum(by_sender) // 10


async def test_a_send_cancelled_while_it_waits_for_room_loses_nothing_queued(
    send_now_calls: list[tuple[str, int, int]],  # noqa: F811
) -> None:
    # The peer reads nothing at first: the send waits for room with the
    # high water queued, and is cancelled there. What it queued is the
    # writer's now: once the peer reads, it all arrives, frames whole (the
    # peer's h2 refuses a cut frame), and the stream's next send works.
    data = b"a" * (2 << 20)
    with trio.fail_after(30):
        async with connected(stream_window=8 << 20, streams=2) as (server, peer, ids, nursery):
            first, second = server.streams
            sending = trio.CancelScope()

            async def send_first() -> None:
                with sending:
                    await first.send_all(data)

            nursery.start_soon(send_first)
            await trio.sleep(0.3)
            # The send itself waits for the socket's room, not the writer.
            sender_waits = getattr(connection_module, "_SENDER", "the sender")
            assert getattr(server.connection, "_room_waiter", None) == sender_waits
            sending.cancel()
            await trio.sleep(0.05)
            assert server.connection._unwritten > 0
            send_now_calls.clear()
            # Another stream sends meanwhile; then the peer reads all.
            other_done = trio.Event()

            async def send_other() -> None:
                await second.send_all(b"b" * 100_000)
                other_done.set()

            nursery.start_soon(send_other)
            while (
                not other_done.is_set()
                or server.connection._unwritten
                or len(peer.data.get(ids[1], b"")) < 100_000
            ):
                await peer.read_once(65536, wait=0.01)
            for _ in range(5):  # (what the kernel still holds)
                await peer.read_once(65536, wait=0.01)
            got = bytes(peer.data.get(ids[0], b""))
            assert got == data[: len(got)] and len(got) > 0
            assert bytes(peer.data[ids[1]]) == b"b" * 100_000
            # The first stream still sends (its cancelled message was cut
            # short at a frame's end, which the WebSocket above handles).
            await first.send_all(b"c" * 1000)
            while not bytes(peer.data[ids[0]]).endswith(b"c" * 1000):
                await peer.read_once(65536, wait=0.01)
    # The writer took over what the cancelled send left.
    assert any(_writer_task(name) and taken for name, _, taken in send_now_calls)


async def test_streams_sending_while_one_drains_all_get_through(
    send_now_calls: list[tuple[str, int, int]],  # noqa: F811
) -> None:
    # Three streams send large messages at once through a slow reader: one
    # drains at a time, the others wait for the queue to go down, and every
    # stream's data arrives whole.
    rng = random.Random(11)
    payloads = [rng.randbytes(1 << 20) for _ in range(3)]
    with trio.fail_after(30):
        async with connected(stream_window=8 << 20, streams=3) as (server, peer, ids, nursery):
            done = 0

            async def send(stream: HTTP2Stream, payload: bytes) -> None:
                nonlocal done
                for at in range(0, len(payload), 300_000):
                    await stream.send_all(payload[at : at + 300_000])
                done += 1

            for stream, payload in zip(server.streams, payloads, strict=True):
                nursery.start_soon(send, stream, payload)
            while done < 3 or any(
                len(peer.data.get(i, b"")) < len(p) for i, p in zip(ids, payloads, strict=True)
            ):
                await peer.read_once(rng.choice([4096, 65536]), wait=0.01)
            for stream_id, payload in zip(ids, payloads, strict=True):
                assert bytes(peer.data[stream_id]) == payload
    assert _senders_wrote_after_a_full_socket(send_now_calls)


async def test_a_send_waiting_for_room_ends_when_the_connection_is_aborted() -> None:
    # The peer reads nothing; the send waits for room itself when the
    # connection is aborted (its transport closed under the wait): the
    # send fails at once rather than waiting for a writer that is gone.
    with trio.fail_after(10):
        async with connected(stream_window=8 << 20, streams=1) as (server, _peer, _, nursery):
            (stream,) = server.streams
            failures: list[BaseException] = []
            ended = trio.Event()

            async def send() -> None:
                try:
                    await stream.send_all(b"x" * (4 << 20))
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    failures.append(exc)
                ended.set()

            nursery.start_soon(send)
            await trio.sleep(0.3)
            assert server.connection._room_waiter == connection_module._SENDER
            server.connection.abort()
            with trio.fail_after(2):
                await ended.wait()
            assert len(failures) == 1
