"""Write-through on an HTTP/2 connection over a lean socket stream (plain
TCP): the task that queues frames writes them itself while the socket
takes them, and the writer task sends only what is left, once the socket
has room (``_h2.connection``'s module rules).

What a user relies on, checked over a real socket pair whose buffers are
kept small (so sends are partial) against a strict ``h2`` peer, which
refuses any malformed or out-of-window frame: frames of streams sent at
once stay whole and in order, h2's own frames (SETTINGS and PING ACKs)
go out among them, and a peer that stops reading stops the senders with
no more than the high water queued.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio

from trio_websocket._h2 import connection as connection_module
from trio_websocket._h2.connection import HTTP2Connection
from trio_websocket._h2.stream import HTTP2Stream
from trio_websocket._wire.socket_stream import LeanSocketStream

#: The fast paths (the lean socket stream, DATA kept out of h2) are what
#: is tested here: on, also in CI's run with TRIO_WEBSOCKET_FAST_PATHS=0.
pytestmark = pytest.mark.usefixtures("fast_paths_on")

CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"example.test"),
    (b"sec-websocket-version", b"13"),
]


class Peer:
    """An h2 client on the far end of the socket pair; reads when told."""

    def __init__(self, sock: socket.socket, *, stream_window: int) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window},
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 26)
        self.data: dict[int, bytearray] = {}
        self.pings_answered = 0

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def read_once(self, size: int = 65536, *, wait: float = 5.0) -> None:
        """Read once, if anything comes within ``wait`` seconds."""
        data: bytes | None = None
        with trio.move_on_after(wait):
            data = await self.stream.receive_some(size)
        if data is None:
            return
        assert data, "the server closed the connection"
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.PingAckReceived):
                self.pings_answered += 1
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise AssertionError(f"the server ended something: {event}")
        await self.flush()


class Server:
    def __init__(self, sock: socket.socket) -> None:
        self.transport = LeanSocketStream(sock)
        self.streams: list[HTTP2Stream] = []
        self.connection = HTTP2Connection(
            self.transport,
            is_client=False,
            on_request=lambda stream, headers: self.streams.append(stream),
        )


def small_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@asynccontextmanager
async def connected(
    *, stream_window: int, streams: int
) -> AsyncIterator[tuple[Server, Peer, list[int], trio.Nursery]]:
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        small_buffers(sock)
        sock.setblocking(False)
    server = Server(ours)
    peer = Peer(theirs, stream_window=stream_window)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.connection.run)
        stream_ids = []
        for _ in range(streams):
            stream_id = peer.h2.get_next_available_stream_id()
            peer.h2.send_headers(stream_id, CONNECT)
            stream_ids.append(stream_id)
        await peer.flush()
        while len(server.streams) < streams:
            await peer.read_once()
        for stream in server.streams:
            await stream.send_response_headers(200, [])
        yield server, peer, stream_ids, nursery
        nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        await peer.stream.aclose()


@pytest.fixture
def send_now_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every ``send_now`` of the lean stream: the calling task's name,
    the bytes offered and the bytes taken."""
    calls: list[tuple[str, int, int]] = []
    real = LeanSocketStream.send_now

    def counting(self: LeanSocketStream, buffers: list[bytes | memoryview]) -> int:
        offered = sum(map(len, buffers))
        taken = real(self, buffers)
        calls.append((trio.lowlevel.current_task().name, offered, taken))
        return taken

    monkeypatch.setattr(LeanSocketStream, "send_now", counting)
    return calls


def _writer_task(name: str) -> bool:
    return name.endswith("._writer")


async def test_streams_sending_at_once_keep_their_frames_whole_and_in_order(
    send_now_calls: list[tuple[str, int, int]],
) -> None:
    # Four streams send pieces of all sizes at once, while the peer reads
    # in small bites with pauses and sends PINGs (h2 answers them: its
    # frames go out among the DATA). The peer's h2 refuses any frame that
    # is cut, interleaved with another or beyond a window it gave.
    rng = random.Random(23)
    with trio.fail_after(30):
        async with connected(stream_window=100_000, streams=4) as (server, peer, ids, nursery):
            sent: dict[int, list[bytes]] = {stream_id: [] for stream_id in ids}

            async def send_pieces(stream: HTTP2Stream, seed: int) -> None:
                pieces = random.Random(seed)
                for _ in range(12):
                    size = pieces.choice([1, 100, 16_383, 16_385, 70_000, 300_000])
                    data = pieces.randbytes(size)
                    sent[stream.stream_id].append(data)
                    await stream.send_all(data)

            senders_done = trio.Event()

            async def send_all_pieces() -> None:
                async with trio.open_nursery() as senders:
                    for number, stream in enumerate(server.streams):
                        senders.start_soon(send_pieces, stream, number)
                senders_done.set()

            def all_read() -> bool:
                return senders_done.is_set() and all(
                    len(peer.data.get(i, b"")) == sum(map(len, sent[i])) for i in ids
                )

            nursery.start_soon(send_all_pieces)
            while not all_read():
                # (The last send may return after its data came.)
                await peer.read_once(rng.choice([100, 5000, 65536]), wait=0.05)
                if rng.random() < 0.05:
                    peer.h2.ping(rng.randbytes(8))
                    await peer.flush()
                if rng.random() < 0.1:
                    await trio.sleep(0.001)
            for stream_id in ids:
                assert bytes(peer.data[stream_id]) == b"".join(sent[stream_id])
            assert server.connection._unwritten == 0
    # The path under test was taken: the sending tasks wrote (write-through),
    # the kernel took only part of some writes, and the writer sent the rest.
    assert any(not _writer_task(name) for name, _, taken in send_now_calls if taken)
    assert any(0 < taken < offered for _, offered, taken in send_now_calls)
    assert any(_writer_task(name) and taken for name, _, taken in send_now_calls)


async def test_a_peer_that_stops_reading_stops_the_senders_at_the_high_water(
    send_now_calls: list[tuple[str, int, int]],
) -> None:
    # The peer's windows allow 8 MiB, but it reads nothing: the socket
    # fills, and each send waits with no more than the high water (and a
    # frame per stream) queued in the connection.
    high_water = connection_module._WRITE_HIGH_WATER
    frame = connection_module._MAX_DATA_FRAME + 9
    with trio.fail_after(20):
        async with connected(stream_window=8 << 20, streams=3) as (server, peer, ids, nursery):
            finished: list[int] = []

            async def send_big(stream: HTTP2Stream) -> None:
                await stream.send_all(b"x" * (4 << 20))
                finished.append(stream.stream_id)

            for stream in server.streams:
                nursery.start_soon(send_big, stream)
            await trio.sleep(0.5)
            assert not finished
            queued = server.connection._unwritten
            assert queued == sum(map(len, server.connection._output))
            assert high_water < queued <= high_water + 3 * frame
            # Then it reads: everything arrives, whole.
            while len(finished) < 3 or any(
                len(peer.data.get(i, b"")) < 4 << 20 for i in ids
            ):
                await peer.read_once(wait=0.01)
            for stream_id in ids:
                assert peer.data[stream_id] == b"x" * (4 << 20)
    assert any(not _writer_task(name) for name, _, taken in send_now_calls if taken)


async def test_h2s_own_answers_are_written_through(
    send_now_calls: list[tuple[str, int, int]],
) -> None:
    # PING ACKs (h2's frames, queued by the connection's reader) leave at
    # once, from the reader task: no wait for the writer.
    with trio.fail_after(20):
        async with connected(stream_window=65535, streams=1) as (server, peer, _, _):
            send_now_calls.clear()
            for _ in range(200):
                peer.h2.ping(b"12345678")
            await peer.flush()
            while peer.pings_answered < 200:
                await peer.read_once()
            assert server.connection._unwritten == 0
    # (The reader is the task of HTTP2Connection.run.)
    assert any(name.endswith(".run") for name, _, taken in send_now_calls if taken)


async def test_a_stream_that_only_reads_still_hands_its_window_back() -> None:
    # The reader leaves WINDOW_UPDATEs queued while it takes its turns after
    # a bulk read, for the handlers' answers to carry; a stream that never
    # answers must still get them out (else the peer stops at the window).
    received = bytearray()
    total = 2 << 20
    with trio.fail_after(10):
        async with connected(stream_window=65535, streams=1) as (server, peer, ids, nursery):
            (stream,) = server.streams

            all_read = trio.Event()

            async def read_all() -> None:
                while len(received) < total:
                    received.extend(await stream.receive_some(1 << 17))
                all_read.set()

            nursery.start_soon(read_all)
            data = random.Random(31).randbytes(total)
            sent = 0
            while sent < total:
                room = min(
                    peer.h2.local_flow_control_window(ids[0]),
                    peer.h2.max_outbound_frame_size,
                    total - sent,
                )
                if room <= 0:
                    await peer.flush()  # (what is queued, in one write: bulk reads)
                    await peer.read_once()
                    continue
                peer.h2.send_data(ids[0], data[sent : sent + room])
                sent += room
            await peer.flush()
            await all_read.wait()
            assert received == data
