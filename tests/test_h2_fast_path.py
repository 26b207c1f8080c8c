"""Our HTTP/2 server against a strict sans-I/O peer (the ``h2`` library as
the client), with the fast path (DATA and flow control kept out of h2) on
and off: what a peer that pads its DATA, cuts it anywhere, or keeps our
send window small sees is the same either way, and always within the
rules (h2 refuses any flow-control violation of ours).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from trio_websocket import WebSocketRequest, serve_websocket
from trio_websocket._h2.connection import HTTP2Connection
from trio_websocket._h2.stream import HTTP2Stream
from trio_websocket._wire import fast_paths


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send_message(message)


@pytest.fixture(params=[True, False], ids=["fast-path", "h2-only"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(fast_paths, "ENABLED", request.param)
    return bool(request.param)


class StrictPeer:
    """An h2 client speaking WebSocket frames (wsproto) on one stream."""

    def __init__(self, stream: trio.SocketStream, *, initial_window: int) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.ws = Connection(ConnectionType.CLIENT)
        self.stream_id = 0
        self.received: list[str | bytes] = []
        self.partial: list[str | bytes] = []
        self.closed: CloseConnection | None = None
        self.answer: list[tuple[bytes, bytes]] | None = None
        self.ended = False
        # Window we hand back only when told to (a slow reader).
        self.hold_window = False
        self.unacked = 0

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def open(self, port: int) -> None:
        self.stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            self.stream_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"sec-websocket-version", b"13"),
            ],
        )
        await self.flush()
        while self.answer is None:
            await self.read_once()

    async def send_frames(self, data: bytes, rng: random.Random, *, pad: bool) -> None:
        """``data`` in DATA frames of random sizes (and random padding)."""
        position = 0
        while position < len(data):
            window = self.h2.local_flow_control_window(self.stream_id)
            while window <= 0:
                await self.read_once()
                window = self.h2.local_flow_control_window(self.stream_id)
            size = min(rng.randint(1, 3000), len(data) - position, window)
            padding = rng.randint(0, 40) if pad else 0
            size = max(1, min(size, window - padding - 1)) if pad else size
            if pad and size + padding + 1 > window:
                padding = 0
            self.h2.send_data(
                self.stream_id,
                data[position : position + size],
                pad_length=padding if pad else None,
            )
            position += size
            await self.flush()

    async def read_once(self) -> None:
        data = await self.stream.receive_some(65536)
        assert data, "the server closed the connection"
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.answer = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.ws.receive_data(event.data)
                if self.hold_window:
                    self.unacked += event.flow_controlled_length
                else:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, self.stream_id)
                for ws_event in self.ws.events():
                    if isinstance(ws_event, (TextMessage, BytesMessage)):
                        # (wsproto hands a message over in pieces.)
                        self.partial.append(ws_event.data)
                        if ws_event.message_finished:
                            self.received.append(
                                b"".join(self.partial)  # type: ignore[arg-type]
                                if isinstance(ws_event, BytesMessage)
                                else "".join(self.partial)  # type: ignore[arg-type]
                            )
                            self.partial = []
                    elif isinstance(ws_event, CloseConnection):
                        self.closed = ws_event
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
        await self.flush()

    def release_window(self) -> None:
        self.hold_window = False
        if self.unacked:
            self.h2.acknowledge_received_data(self.unacked, self.stream_id)
            self.unacked = 0


@asynccontextmanager
async def strict_peer(initial_window: int = 65535) -> AsyncIterator[StrictPeer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, echo, "127.0.0.1", 0, None, http2=True)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        peer = StrictPeer(stream, initial_window=initial_window)
        await peer.flush()
        await peer.open(server.port)
        assert (b":status", b"200") in (peer.answer or [])
        yield peer
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("pad", [False, True], ids=["plain", "padded"])
async def test_data_cut_anywhere_and_padded_is_echoed_whole(fast_path: bool, pad: bool) -> None:
    rng = random.Random(7 + pad)
    messages: list[bytes] = [
        rng.randbytes(rng.choice([0, 1, 125, 126, 4000, 70_000])) for _ in range(12)
    ]
    with trio.fail_after(20):
        async with strict_peer() as peer:
            for message in messages:
                await peer.send_frames(peer.ws.send(BytesMessage(data=message)), rng, pad=pad)
            while len(peer.received) < len(messages):
                await peer.read_once()
            assert peer.received == messages
            await peer.send_frames(peer.ws.send(CloseConnection(code=1000)), rng, pad=pad)
            while peer.closed is None or not peer.ended:
                await peer.read_once()
            assert peer.closed.code == 1000


async def test_a_small_send_window_is_respected_and_reopened(fast_path: bool) -> None:
    # h2 on the peer's side raises at once on any DATA beyond the window it
    # gave: the server must wait, in pieces, for every WINDOW_UPDATE.
    rng = random.Random(11)
    message = rng.randbytes(300_000)
    with trio.fail_after(20):
        async with strict_peer(initial_window=1000) as peer:
            peer.hold_window = True
            await peer.send_frames(peer.ws.send(BytesMessage(data=message)), rng, pad=False)
            for _ in range(20):
                with trio.move_on_after(0.05):
                    await peer.read_once()
            # Only the window's worth came while the peer held it back.
            assert peer.unacked <= 1000
            peer.release_window()
            await peer.flush()
            while not peer.received:
                await peer.read_once()
            assert peer.received == [message]


async def test_a_settings_change_moves_every_send_window(fast_path: bool) -> None:
    rng = random.Random(13)
    message = rng.randbytes(200_000)
    with trio.fail_after(20):
        async with strict_peer(initial_window=5000) as peer:
            peer.hold_window = True
            await peer.send_frames(peer.ws.send(BytesMessage(data=message)), rng, pad=False)
            for _ in range(10):
                with trio.move_on_after(0.05):
                    await peer.read_once()
            assert peer.unacked <= 5000
            # A smaller initial window (the stream's window goes negative:
            # nothing more may come), then a larger one.
            peer.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
            await peer.flush()
            for _ in range(10):
                with trio.move_on_after(0.05):
                    await peer.read_once()
            held = peer.unacked
            peer.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
            await peer.flush()
            peer.release_window()
            await peer.flush()
            while not peer.received:
                await peer.read_once()
            assert held <= 5000
            assert peer.received == [message]


async def test_large_messages_in_full_frames_are_echoed_within_the_peers_limits(
    fast_path: bool,
) -> None:
    # The peer sends frames of the largest size, many to a read, and lets
    # the server send as much: the server's large sends go out as batches
    # of frames (no larger than the peer's frame size, within its windows:
    # the peer's h2 refuses anything else), ending exactly on a frame's end
    # or not.
    rng = random.Random(17)
    sizes = [1 << 20, 3 * 16384 - 2, 16384 - 2, 5, 200_000]  # (+ 2 to 10 bytes of header)
    messages = [rng.randbytes(size) for size in sizes]
    with trio.fail_after(15):
        async with strict_peer(initial_window=1 << 20) as peer:
            peer.h2.increment_flow_control_window(1 << 22)
            for message in messages:
                data = peer.ws.send(BytesMessage(data=message))
                for start in range(0, len(data), 16384):
                    while peer.h2.local_flow_control_window(peer.stream_id) < 16384:
                        await peer.flush()  # (what is queued, in one write)
                        await peer.read_once()
                    peer.h2.send_data(peer.stream_id, data[start : start + 16384])
                await peer.flush()
            while len(peer.received) < len(messages):
                await peer.read_once()
            assert peer.received == messages


class ServerConnection:
    """Our server's HTTP2Connection over lockstep memory streams (a write
    waits until the other side reads it), with an h2 client on the other
    end that reads only when told to."""

    def __init__(self) -> None:
        self.ours, self.theirs = trio.testing.lockstep_stream_pair()
        self.requests: list[HTTP2Stream] = []
        self.connection = HTTP2Connection(
            self.ours,
            is_client=False,
            on_request=lambda stream, headers: self.requests.append(stream),
        )
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20},
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 22)
        self.events: list[h2.events.Event] = []

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.theirs.send_all(data)

    async def read_until(self, done: Callable[[], object]) -> None:
        """Read (answering what h2 answers) until ``done()`` is true."""
        while not done():
            data = await self.theirs.receive_some(1 << 20)
            assert data, "the server closed the connection"
            self.events.extend(self.h2.receive_data(data))
            await self.flush()

    async def open_stream(self) -> tuple[int, HTTP2Stream]:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"example.test"),
                (b"sec-websocket-version", b"13"),
            ],
        )
        await self.flush()
        await self.read_until(lambda: self.requests)
        stream = self.requests[0]
        # Answered, its HEADERS taken by the client before the test goes on.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_response_headers, 200, [])
            await self.read_until(
                lambda: any(isinstance(e, h2.events.ResponseReceived) for e in self.events)
            )
        return stream_id, stream

    def data(self, stream_id: int) -> bytes:
        return b"".join(
            e.data
            for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
        )


async def test_a_buffer_changed_after_send_all_returned_is_sent_as_it_was(
    fast_path: bool,
) -> None:
    # send_all returns once the data is queued (not written): what goes out
    # must not be a view of the caller's buffer, which it may reuse.
    peer = ServerConnection()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.connection.run)
            await peer.flush()
            stream_id, stream = await peer.open_stream()
            await stream.send_all(b"a" * 1000)
            # The writer is now stuck writing that until the client reads.
            await trio.testing.wait_all_tasks_blocked()
            buffer = bytearray(b"b" * 1000)
            await stream.send_all(buffer)
            buffer[:] = b"c" * 1000
            await peer.read_until(lambda: len(peer.data(stream_id)) >= 2000)
            assert peer.data(stream_id) == b"a" * 1000 + b"b" * 1000
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("frames", [1, 4])
async def test_a_send_that_ends_on_a_frame_boundary_ends_with_its_last_frame(
    fast_path: bool, frames: int
) -> None:
    # END_STREAM rides on the DATA frame that carries the end of the data,
    # a full-size one included (no empty frame after it).
    peer = ServerConnection()
    payload = random.Random(19).randbytes(frames * 16384)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.connection.run)
            await peer.flush()
            stream_id, stream = await peer.open_stream()
            nursery.start_soon(stream.send_all_and_end, payload)
            await peer.read_until(
                lambda: any(isinstance(e, h2.events.StreamEnded) for e in peer.events)
            )
            received = [
                e
                for e in peer.events
                if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
            ]
            assert b"".join(e.data for e in received) == payload
            assert [len(e.data) for e in received] == [16384] * frames
            assert received[-1].stream_ended is not None
            nursery.cancel_scope.cancel()
