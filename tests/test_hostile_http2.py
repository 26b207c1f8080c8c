"""Hostile HTTP/2 peers against our server (``http2=True``, h2c by prior
knowledge): they get the same treatment as hostile HTTP/1.1 peers.

Each case drives a raw HTTP/2 client (``hostile_h2_peers.H2Peer``: frames
built by hand) and checks (a) what the attacker receives: GOAWAY with the
error code RFC 9113 names (ENHANCE_YOUR_CALM for floods and rapid reset),
RST_STREAM, or an HTTP answer on the stream; (b) that the server stays up
(nothing leaves ``serve_websocket``); (c) that a well-behaved HTTP/2 client
(our own client with ``http2="require"``, or a second raw connection that
opens a WebSocket) is served during or after the attack; (d) that nothing
is left behind (every handler ended, ``connection_count`` back to 0, no
HTTP/2 connection still served).

Cases that depend on time run over lockstep memory streams with the
autojump clock (a write there returns once the server has read it, so a
test counts exactly what the server took in); floods, which depend only
on counts, run over TCP; a few run over TLS (ALPN h2) too.
Each case was first written against the core as it was, and nine showed
a defect, since fixed (the commits say which).
"""

from __future__ import annotations

import math
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import echo_handler

pytest.importorskip("h2")

from hostile_h2_peers import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    END_HEADERS,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    HEADERS,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    H2Peer,
    data_frame,
    encoded,
    h2_frame,
    ping_frame,
    plain_get,
    priority_frame,
    rst_stream_frame,
    settings_frame,
    websocket_connect,
    window_update_frame,
)
from hostile_peers import (
    OP_BINARY,
    OP_CLOSE,
    AttackedServer,
    Visit,
    close_payload,
    frame,
    poll_until,
)

from trio_websocket import (
    ConnectionClosed,
    HTTP2Limits,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

#: Small bounds, so that every attack reaches them quickly.
LIMITS = HTTP2Limits(
    max_concurrent_streams=8,
    control_frame_burst=300,
    control_frames_per_second=50.0,
    reset_burst=30,
    resets_per_second=5.0,
)
#: How many frames a flood sends at most, in writes of BATCH frames.
FLOOD_FRAMES = 5000
BATCH = 250
#: Streams a rapid-reset attack opens and resets (at most).
RAPID_RESETS = 3000
#: A handler run the attack may have caused beyond the bounds (the
#: stream that was being opened when the bound was reached).
SLACK_RUNS = 2


# ---------------------------------------------------------------------------
# The server under attack


class H2Server(AttackedServer):
    """``hostile_peers.AttackedServer`` serving HTTP/2 too (h2c), with more
    handler modes:

    - ``/hold``: the request waits, neither accepted nor read, until
      :attr:`release` is set (its stream is never read before that);
    - ``/big``: accept, then send one 1 MiB message, giving up after
      ``BIG_SEND_SECONDS`` (:attr:`big_sends_finished` says whether it
      finished);
    - ``/fill``: accept, send one message whose frame is 65535 bytes (a
      peer's default window), return; ``/fill-aclose`` closes the
      WebSocket itself before returning, timing how long ``aclose()`` took
      (:attr:`aclose_seconds`).
    """

    BIG_SEND_SECONDS = 5.0
    BIG_MESSAGE = 2**20

    def __init__(self, kind: str, **options: Any) -> None:
        options.setdefault("http2", True)
        options.setdefault("http2_limits", LIMITS)
        super().__init__(kind, **options)
        #: Whether each big send finished, and how long each aclose took.
        self.big_sends_finished: list[bool] = []
        self.aclose_seconds: list[float] = []

    async def start(self, nursery: trio.Nursery) -> H2Server:
        await super().start(nursery)
        return self

    async def handler(self, request: WebSocketRequest) -> None:
        if request.path == "/hold":
            await self.release.wait()
        await super().handler(request)

    async def _behave(self, mode: str, ws: WebSocketConnection) -> None:
        if mode == "big":
            finished = False
            with trio.move_on_after(self.BIG_SEND_SECONDS):
                await ws.send_message(b"\xab" * self.BIG_MESSAGE)
                finished = True
            self.big_sends_finished.append(finished)
            return
        if mode.startswith("fill"):
            # One frame of exactly 65535 bytes: a 4-byte header (a server's
            # frames are not masked) and the payload.
            await ws.send_message(b"\xab" * (65535 - 4))
            if mode == "fill-aclose":
                started = trio.current_time()
                await ws.aclose()
                self.aclose_seconds.append(trio.current_time() - started)
            return
        await super()._behave(mode, ws)

    async def peer(self, settings: dict[int, int] | None = None) -> H2Peer:
        """A raw HTTP/2 client, past its preface and SETTINGS, once the
        server's SETTINGS have come: the server then runs the HTTP/2
        connection, and what the peer sends next comes in reads of its own
        (not glued to the preface, which the server reads first)."""
        peer = H2Peer(await self.connect())
        await peer.start(settings)
        await peer.read_until(lambda: bool(peer.server_settings))
        await trio.sleep(0.05)
        return peer

    async def h2_round_trip(self, text: str = "still there?") -> None:
        """A well-behaved HTTP/2 client opens a WebSocket, has one message
        echoed and closes, within 2 s; the server must not have died."""
        assert self.crash is None, f"the server died: {self.crash!r}"
        with trio.fail_after(2):
            if self.kind == "tcp":
                url = f"ws://127.0.0.1:{self.port}/echo"
                async with open_websocket_url(url, http2="require") as ws:
                    assert ws.http_version == "2"
                    await ws.send_message(text)
                    assert await ws.get_message() == text
            else:
                peer = await self.peer()
                await peer.open_ws(1)
                await peer.ws_echo(1, text)
                await peer.close_ws(1)
                await trio.aclose_forcefully(peer.stream)
        assert self.crash is None, f"the server died: {self.crash!r}"

    async def all_clear(self) -> None:
        """Every handler ended, no connection counted, no HTTP/2
        connection still served, no group anywhere, the server alive."""
        with trio.fail_after(5):
            for visit in self.visits:
                await visit.done.wait()
            server = self.server
            assert server is not None
            await poll_until(
                lambda: not server.connection_count and not server._http2_connections, 5
            )
        self.assert_no_groups()
        assert self.crash is None, f"the server died: {self.crash!r}"

    def runs(self, mode: str) -> list[Visit]:
        return [visit for visit in self.visits if visit.mode == mode]


@asynccontextmanager
async def attacked(kind: str, **options: Any) -> AsyncIterator[H2Server]:
    """An :class:`H2Server` of ``kind`` ("tcp" or "server", see
    ``hostile_peers``), stopped when the block ends; the block ends with
    :meth:`H2Server.all_clear` checked."""
    async with trio.open_nursery() as nursery:
        server = await H2Server(kind, **options).start(nursery)
        try:
            yield server
            server.release.set()
            await server.all_clear()
        finally:
            server.release.set()
            nursery.cancel_scope.cancel()


async def read_while(peer: H2Peer, attack: Callable[[H2Peer], Awaitable[None]]) -> None:
    """Run ``attack`` while reading the server's frames, until the server
    closes the connection (the attack stops when it hangs up)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(attack, peer)
        await peer.read_to_end()
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(peer.stream)


async def send_batches(peer: H2Peer, chunk: bytes, count: int = FLOOD_FRAMES // BATCH) -> int:
    """Send ``chunk`` ``count`` times; how many went out before the server
    hung up."""
    for sent in range(count):
        if not await peer.try_send(chunk):
            return sent
    return count


# ---------------------------------------------------------------------------
# 1. Rapid reset (CVE-2023-44487), and streams the server is made to reset


@pytest.mark.parametrize("pairs_per_write", [1, 10, 100])
@pytest.mark.parametrize("connect_timeout", [math.inf, 60.0], ids=["no-idle-timer", "idle-timer"])
async def test_rapid_reset_gets_enhance_your_calm(
    connect_timeout: float, pairs_per_write: int
) -> None:
    with trio.fail_after(10):
        async with attacked("tcp", connect_timeout=connect_timeout) as server:
            # A good client's WebSocket, open across the attack.
            async with open_websocket_url(
                f"ws://127.0.0.1:{server.port}/echo", http2="require"
            ) as good:
                peer = await server.peer()

                async def rapid_reset(peer: H2Peer) -> None:
                    # Streams opened and reset at once, as fast as the
                    # server reads them.
                    for first in range(1, 2 * RAPID_RESETS, 2 * pairs_per_write):
                        pairs = b"".join(
                            peer.headers_frame(stream_id, websocket_connect("/echo"))
                            + rst_stream_frame(stream_id, CANCEL)
                            for stream_id in range(first, first + 2 * pairs_per_write, 2)
                        )
                        if not await peer.try_send(pairs):
                            return

                await read_while(peer, rapid_reset)
                assert server.crash is None, f"the server died: {server.crash!r}"
                assert peer.goaway is not None, "the server never sent GOAWAY"
                assert peer.goaway.error_code == ENHANCE_YOUR_CALM
                # Thousands of streams were sent; about reset_burst of them ran.
                assert len(server.runs("echo")) <= LIMITS.reset_burst + SLACK_RUNS + 1
                await good.send_message("during")
                assert await good.get_message() == "during"
            await server.h2_round_trip()


async def test_a_stream_cancelled_at_once_does_not_make_the_connection_idle() -> None:
    # A well-behaved client may cancel a WebSocket the moment it opens it
    # (its user went away): its connection must stay open for the next.
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            await peer.send(
                peer.headers_frame(1, websocket_connect("/echo")) + rst_stream_frame(1, CANCEL)
            )
            await trio.sleep(0.2)
            await peer.open_ws(3)
            await peer.ws_echo(3, "the next WebSocket")
            await peer.close_ws(3)
            await trio.aclose_forcefully(peer.stream)


async def test_a_stream_refused_after_its_reset_leaves_the_server_up() -> None:
    limits = HTTP2Limits(max_concurrent_streams=2)
    with trio.fail_after(10):
        async with attacked("tcp", http2_limits=limits) as server:
            peer = await server.peer()
            # Two requests whose handlers wait, reset by the peer: h2 forgets
            # the streams at once, their handlers still run.
            await peer.send(
                peer.headers_frame(1, websocket_connect("/hold"))
                + peer.headers_frame(3, websocket_connect("/hold"))
            )
            await trio.sleep(0.1)
            await peer.send(rst_stream_frame(1) + rst_stream_frame(3))
            await trio.sleep(0.1)
            # Beyond the handler limit: a stream opened and reset in one
            # write, and one more after it.
            await peer.send(
                peer.headers_frame(5, websocket_connect("/echo"))
                + rst_stream_frame(5)
                + peer.headers_frame(7, websocket_connect("/echo"))
            )
            refused = await peer.answer(7)
            assert refused.reset == REFUSED_STREAM
            assert server.crash is None, f"the server died: {server.crash!r}"
            server.release.set()
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


def _made_to_reset_after_end(peer: H2Peer, stream_id: int) -> bytes:
    # DATA after END_STREAM: the server must reset the stream (STREAM_CLOSED).
    return (
        peer.headers_frame(stream_id, websocket_connect("/echo"))
        + data_frame(stream_id, b"", end_stream=True)
        + data_frame(stream_id, b"x")
    )


def _made_to_reset_by_window(peer: H2Peer, stream_id: int) -> bytes:
    # A stream window pushed past 2**31-1: a stream FLOW_CONTROL_ERROR.
    return (
        peer.headers_frame(stream_id, websocket_connect("/echo"))
        + window_update_frame(stream_id, 2**31 - 1)
        + window_update_frame(stream_id, 2**31 - 1)
    )


@pytest.mark.parametrize(
    "provoke, per_write",
    [
        # (Paced one stream per write, so that no refusal is counted
        # either: the resets h2 and the guard make for the peer's errors
        # must count, "MadeYouReset", CVE-2025-8671.)
        pytest.param(_made_to_reset_after_end, 1, id="data-after-end-stream-1"),
        pytest.param(_made_to_reset_after_end, 100, id="data-after-end-stream-100"),
        pytest.param(_made_to_reset_by_window, 1, id="window-overflow-1"),
        pytest.param(_made_to_reset_by_window, 100, id="window-overflow-100"),
    ],
)
async def test_streams_the_server_is_made_to_reset_count_as_resets(
    provoke: Callable[[H2Peer, int], bytes], per_write: int
) -> None:
    with trio.fail_after(10):
        async with attacked("tcp", connect_timeout=math.inf) as server:
            peer = await server.peer()

            async def attack(peer: H2Peer) -> None:
                # (Many times the reset burst: enough to tell.)
                for first in range(1, 2 * 1000, 2 * per_write):
                    chunk = b"".join(
                        provoke(peer, stream_id)
                        for stream_id in range(first, first + 2 * per_write, 2)
                    )
                    if not await peer.try_send(chunk):
                        return
                # Not stopped: say so instead of waiting for an idle timer.
                await trio.sleep(0.5)
                await trio.aclose_forcefully(peer.stream)

            await read_while(peer, attack)
            assert server.crash is None, f"the server died: {server.crash!r}"
            assert peer.goaway is not None, (
                f"no GOAWAY after {len(server.runs('echo'))} streams were reset"
            )
            assert peer.goaway.error_code == ENHANCE_YOUR_CALM
            assert len(server.runs("echo")) <= LIMITS.reset_burst + SLACK_RUNS + 1
            await server.h2_round_trip()


# ---------------------------------------------------------------------------
# 2. More streams than SETTINGS_MAX_CONCURRENT_STREAMS


async def test_streams_beyond_the_limit_never_run_a_handler() -> None:
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            limit = LIMITS.max_concurrent_streams
            for index in range(limit):
                await peer.open_ws(2 * index + 1)
            assert peer.server_settings[SETTINGS_MAX_CONCURRENT_STREAMS] == limit
            # A closed WebSocket frees its slot for a new one.
            await peer.close_ws(1)
            await peer.whole_answer(1)
            await peer.open_ws(2 * limit + 1)
            # Streams beyond the limit, thousands of them: never served,
            # and the flood is ended.
            first_extra = 2 * limit + 3

            async def flood(peer: H2Peer) -> None:
                for batch in range(20):
                    start = first_extra + batch * 200
                    extra = b"".join(
                        peer.headers_frame(stream_id, websocket_connect("/echo"))
                        for stream_id in range(start, start + 200, 2)
                    )
                    if not await peer.try_send(extra):
                        return
                await trio.sleep(1)
                await trio.aclose_forcefully(peer.stream)

            await read_while(peer, flood)
            refused = peer.stream_seen(first_extra)
            assert refused.headers is None
            assert refused.reset in (None, PROTOCOL_ERROR, REFUSED_STREAM)
            assert peer.goaway is not None, "the flood of refused streams went on"
            assert peer.goaway.error_code in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM)
            await poll_until(lambda: len(server.visits) >= limit + 1)
            await trio.sleep(0.1)
            assert len(server.visits) == limit + 1  # the first `limit`, and the one after
            await server.h2_round_trip()


async def test_a_stream_beyond_the_limit_is_refused_alone() -> None:
    # RFC 9113 section 5.1.2: a stream error, PROTOCOL_ERROR or
    # REFUSED_STREAM (REFUSED_STREAM lets the client retry it).
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            limit = LIMITS.max_concurrent_streams
            for index in range(limit):
                await peer.open_ws(2 * index + 1)
            await peer.request(2 * limit + 1, websocket_connect("/echo"))
            refused = await peer.answer(2 * limit + 1)
            assert refused.reset == REFUSED_STREAM
            await peer.ws_echo(1, "the others go on")
            for index in range(limit):
                await peer.close_ws(2 * index + 1)
            await trio.aclose_forcefully(peer.stream)


async def test_streams_a_peer_never_ends_are_reset_the_oldest_at_once_past_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A clean close leaves the peer a second to end its side of the stream
    # (a proxy must not lose the last frame to a reset); a peer that never
    # does cannot make the server keep more such streams than its stream
    # limit: past it, the oldest is reset at once.
    limit = LIMITS.max_concurrent_streams
    extra = 3
    with trio.fail_after(60):
        async with attacked("server") as server:
            peer = await server.peer()
            started = trio.current_time()
            ids = [2 * index + 1 for index in range(limit + extra)]
            for stream_id in ids:
                await peer.open_ws(stream_id)
                await peer.close_ws(stream_id)  # and never END_STREAM
            oldest = [peer.stream_seen(stream_id) for stream_id in ids[:extra]]
            assert await peer.read_until(lambda: all(s.reset is not None for s in oldest))
            assert trio.current_time() - started < 0.5
            assert [s.reset for s in oldest] == [NO_ERROR] * extra
            assert all(peer.stream_seen(i).reset is None for i in ids[extra:])
            # The others are reset after their second, and the server
            # serves on.
            assert await peer.read_until(
                lambda: all(peer.stream_seen(i).reset is not None for i in ids)
            )
            assert 1.0 <= trio.current_time() - started < 3.0
            assert {peer.stream_seen(i).reset for i in ids} == {NO_ERROR}
            next_id = ids[-1] + 2
            await peer.open_ws(next_id)
            await peer.ws_echo(next_id, "still serving")
            await peer.close_ws(next_id)
            await trio.aclose_forcefully(peer.stream)


# ---------------------------------------------------------------------------
# 3. Header blocks: too big, and CONTINUATION floods


def header_frames(peer: H2Peer, stream_id: int, block: bytes, piece: int = 16384) -> bytes:
    """``block`` as HEADERS and as many CONTINUATION frames as it takes."""
    pieces = [block[at : at + piece] for at in range(0, len(block), piece)]
    frames = []
    for index, part in enumerate(pieces):
        last = index == len(pieces) - 1
        kind = HEADERS if index == 0 else CONTINUATION
        frames.append(h2_frame(kind, END_HEADERS if last else 0, stream_id, part))
    return b"".join(frames)


@pytest.mark.parametrize("acknowledged", [True, False], ids=["settings-acked", "never-acked"])
@pytest.mark.parametrize(
    "size", [2 * 1024, 8 * 1024, 96 * 1024], ids=["within", "over", "over-64-KiB"]
)
async def test_a_header_list_over_max_header_list_size_is_refused(
    size: int, acknowledged: bool
) -> None:
    """The limit holds from the first byte, whether or not the peer has
    acknowledged the SETTINGS that announce it; a list within it is served."""
    limit = 4096
    with trio.fail_after(10):
        async with attacked("tcp", http2_limits=HTTP2Limits(max_header_list_size=limit)) as server:
            peer = await server.peer()
            assert peer.server_settings[SETTINGS_MAX_HEADER_LIST_SIZE] == limit
            if acknowledged:
                await peer.send(settings_frame(ack=True))
            # Random-looking values, so that HPACK cannot make them small.
            values = [
                (b"x-filler-%d" % index, b"%064x" % (index * 7919)) for index in range(size // 80)
            ]
            block = peer.header_block(websocket_connect("/echo", extra=values))
            assert len(block) > size // 2
            await peer.send(header_frames(peer, 1, block))
            with trio.move_on_after(2):
                await peer.read_until(
                    lambda: peer.goaway is not None or peer.stream_seen(1).headers is not None
                )
            answer = peer.stream_seen(1)
            if size < limit:
                assert answer.status == 200
                await peer.ws_echo(1, "big headers, within the limit")
                await peer.close_ws(1)
            elif answer.headers is not None:
                assert answer.status == 431, "a header list over the limit was taken"
            else:
                assert peer.goaway is not None
                assert peer.goaway.error_code == ENHANCE_YOUR_CALM
                assert not server.visits
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


async def continuation_flood(peer: H2Peer, piece: int, most: int) -> int:
    """HEADERS without END_HEADERS for a WebSocket request on stream 1,
    then up to ``most`` CONTINUATION frames of ``piece`` bytes that never
    end the block, in lockstep (a write returns once the server has read
    it); reads what the server answers meanwhile. Returns how many
    CONTINUATION frames the server took."""
    taken = 0

    async def flood(peer: H2Peer) -> None:
        nonlocal taken
        opening = h2_frame(HEADERS, 0, 1, peer.header_block(websocket_connect("/echo")))
        if not await peer.try_send(opening):
            return
        continuation = h2_frame(CONTINUATION, 0, 1, b"\x00" * piece)
        for _ in range(most):
            if not await peer.try_send(continuation):
                return
            taken += 1

    await read_while(peer, flood)
    return taken


@pytest.mark.parametrize("piece", [16384, 0], ids=["full-frames", "empty-frames"])
async def test_endless_continuation_frames_end_the_connection(piece: int) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end
    the block (CVE-2024-27316): the server stops them after a bounded
    number of frames and bytes, however fast they come."""
    with trio.fail_after(10):
        async with attacked("server") as server:
            peer = await server.peer()
            taken = await continuation_flood(peer, piece, 2000)
            assert peer.goaway is not None
            assert peer.goaway.error_code in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM)
            # h2 keeps at most 64 CONTINUATION frames of one block (a
            # lockstep read takes one write: one frame).
            assert taken <= 64 + 2
            assert not server.visits
            await server.h2_round_trip()


# ---------------------------------------------------------------------------
# 4. Floods of frames that carry no data


def _opened(stream_id: int = 1) -> Callable[[H2Peer], bytes]:
    return lambda peer: peer.headers_frame(stream_id, websocket_connect("/echo"))


FLOODS: dict[str, tuple[bytes, Callable[[H2Peer], bytes] | None]] = {
    "settings": (settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 65535}), None),
    "ping": (ping_frame(), None),
    "priority": (priority_frame(1, 0, 16), _opened()),
    "priority-idle-streams": (
        b"".join(priority_frame(stream_id, 0, 16) for stream_id in range(3, 3 + 2 * 50, 2)),
        _opened(),
    ),
    "empty-data": (data_frame(1, b""), _opened()),
    "window-update-1-connection": (window_update_frame(0, 1), _opened()),
    "window-update-1-stream": (window_update_frame(1, 1), _opened()),
    "unknown-frame-type": (h2_frame(0xFA, 0, 0, b"unknown"), _opened()),
    "unknown-frame-type-on-stream": (h2_frame(0xFA, 0, 1, b""), _opened()),
    "rst-stream-on-closed-stream": (rst_stream_frame(1, CANCEL), _opened()),
}

#: Floods of ACKs nobody asked for (we send one SETTINGS and no PING).
UNSOLICITED_ACK_FLOODS: dict[str, bytes] = {
    "ping-ack": ping_frame(ack=True),
    "settings-ack": settings_frame(ack=True),
}


async def _flood_case(frame_bytes: bytes, opening: Callable[[H2Peer], bytes] | None) -> None:
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            if opening is not None:
                await peer.send(opening(peer))
                await peer.answer(1)

            async def flood(peer: H2Peer) -> None:
                count = max(1, BATCH * len(ping_frame()) // len(frame_bytes))
                await send_batches(peer, frame_bytes * count)
                # Not stopped: say so instead of waiting for an idle timer.
                await trio.sleep(1)
                await trio.aclose_forcefully(peer.stream)

            async with trio.open_nursery() as nursery:
                # A good client, served while the flood runs.
                nursery.start_soon(server.h2_round_trip, "during the flood")
                await read_while(peer, flood)
            assert peer.goaway is not None, "no GOAWAY: the flood was never stopped"
            assert peer.goaway.error_code == ENHANCE_YOUR_CALM
            await server.h2_round_trip("after the flood")


@pytest.mark.parametrize("name", FLOODS.keys())
async def test_a_flood_of_frames_without_data_gets_enhance_your_calm(name: str) -> None:
    frame_bytes, opening = FLOODS[name]
    await _flood_case(frame_bytes, opening)


@pytest.mark.parametrize("name", UNSOLICITED_ACK_FLOODS.keys())
async def test_a_flood_of_unsolicited_acks_gets_enhance_your_calm(name: str) -> None:
    await _flood_case(UNSOLICITED_ACK_FLOODS[name], _opened())


async def test_a_ping_flood_from_a_peer_that_never_reads_stays_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The answers a peer never reads do not pile up: past a bound, the
    server stops reading it. The bound grows with what the streams may
    queue (sends wait past 256 KiB unwritten, and a stream queues one
    64 KiB frame at most beyond it), so with one stream it is under 1 MiB,
    whatever the flood."""
    # A large burst, so that the flood bucket is not what stops it: what
    # must stop it is that the answers cannot be delivered.
    limits = HTTP2Limits(
        max_concurrent_streams=1, control_frame_burst=10**6, control_frames_per_second=10**6
    )
    pings = 120_000  # 2 MiB of PING ACKs
    with trio.fail_after(30):
        async with attacked("server", http2_limits=limits, connect_timeout=math.inf) as server:
            peer = await server.peer()
            await peer.send(_opened()(peer))
            batch = ping_frame() * 1000
            taken = 0
            for _ in range(pings // 1000):
                # Lockstep: a write returns only once the server has read
                # it; a server that stops reading stops the flood here.
                with trio.move_on_after(5) as stalled:
                    if not await peer.try_send(batch):
                        break
                if stalled.cancelled_caught:
                    break
                taken += 1000
            # Each PING taken is a 17-byte PING ACK queued for a peer that
            # reads nothing.
            assert taken * 17 <= 1024 * 1024, f"the server took {taken} PINGs it cannot answer"
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_a_ping_or_settings_mid_connection_is_answered_at_once(kind: str) -> None:
    # RFC 9113: a PING MUST be answered (6.7), a SETTINGS acknowledged
    # (6.5.3; a peer may end the connection with SETTINGS_TIMEOUT).
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            await peer.open_ws(1)
            seen = len(peer.frames)
            if kind == "ping":
                await peer.send(ping_frame(b"opaque!!"))
                expected = ping_frame(b"opaque!!", ack=True)
            else:
                await peer.send(settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 70_000}))
                expected = settings_frame(ack=True)
            with trio.move_on_after(1):
                await peer.read_until(lambda: len(peer.frames) > seen)
            answers = [
                h2_frame(found.kind, found.flags, found.stream_id, found.payload)
                for found in peer.frames[seen:]
            ]
            assert answers == [expected]
            await peer.ws_echo(1, "answered")
            await peer.close_ws(1)
            await trio.aclose_forcefully(peer.stream)


# ---------------------------------------------------------------------------
# 5. A peer that never opens its window


async def _stalled_stream_and_a_free_one(server: H2Server, mode: str) -> H2Peer:
    """A raw client with a WebSocket in ``mode`` on stream 1, whose window
    it never opens (the default 65535 bytes), and one echoing on stream 3,
    whose windows it opens as it reads; the connection's window is wide
    open, so only stream 1's blocks."""
    peer = await server.peer()
    await peer.send(window_update_frame(0, 2**30))
    await peer.open_ws(1, f"/{mode}")
    await peer.open_ws(3, "/echo")
    return peer


async def test_a_send_into_a_window_that_never_opens_blocks_only_its_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with attacked("server") as server:
            started = trio.current_time()
            peer = await _stalled_stream_and_a_free_one(server, "big")
            # While the 1 MiB send waits, the other WebSocket goes on.
            for round_trip in range(3):
                await peer.ws_echo(3, f"not stalled {round_trip}")
            stalled = peer.stream_seen(1)
            await peer.read_until(lambda: stalled.reset is not None)
            # The handler gave its send up: the message was cut short, so
            # the stream is reset at once (a close frame cannot follow).
            assert trio.current_time() - started == pytest.approx(
                H2Server.BIG_SEND_SECONDS, abs=0.1
            )
            assert server.big_sends_finished == [False]
            assert stalled.reset == CANCEL
            # Never more than the window the peer gave.
            assert len(stalled.data) <= 65535
            await peer.ws_echo(3, "after the reset")
            await peer.close_ws(3)
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


@pytest.mark.parametrize("mode", ["fill", "fill-aclose"])
async def test_a_close_into_a_window_that_never_opens_ends_after_disconnect_timeout(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    """A message that fills the peer's window exactly: sent; the close
    frame after it can never be: the WebSocket ends after
    ``disconnect_timeout``, whether the server closes it (the handler
    returned) or the handler does (``aclose()``), and its stream is reset."""
    disconnect_timeout = 2.0
    with trio.fail_after(60):
        async with attacked("server", disconnect_timeout=disconnect_timeout) as server:
            started = trio.current_time()
            peer = await _stalled_stream_and_a_free_one(server, mode)
            await peer.ws_echo(3, "not stalled")
            stalled = peer.stream_seen(1)
            await peer.read_until(lambda: stalled.reset is not None)
            assert trio.current_time() - started == pytest.approx(disconnect_timeout, abs=0.1)
            assert stalled.reset == CANCEL
            assert len(stalled.data) == 65535  # the whole message, no close frame
            await server.visit_done(mode)
            if mode == "fill-aclose":
                assert server.aclose_seconds == [pytest.approx(disconnect_timeout, abs=0.1)]
            await peer.ws_echo(3, "after the reset")
            await peer.close_ws(3)
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


async def test_a_shutdown_ends_a_stream_whose_window_never_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await H2Server("server").start(nursery)
            peer = await server.peer(settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
            await peer.open_ws(1, "/blast")
            assert server.server is not None
            async with trio.open_nursery() as reading:
                reading.start_soon(peer.read_to_end)
                started = trio.current_time()
                report = await server.server.aclose(timeout=3)
                assert trio.current_time() - started <= 3.5
            assert report.forced + report.closed_cleanly == 1
            assert peer.goaway is not None and peer.goaway.error_code == NO_ERROR
            assert peer.stream_seen(1).data == bytearray()  # window 0: nothing sent
            assert server.crash is None
            await server.all_clear()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("opening", ["one-stream", "reset-in-the-same-write"])
async def test_streams_opened_after_a_shutdown_goaway_are_refused(opening: str) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await H2Server("tcp").start(nursery)
            peer = await server.peer()
            await peer.open_ws(1, "/echo")
            assert server.server is not None
            nursery.start_soon(partial(server.server.aclose, timeout=5))
            # The GOAWAY, then the WebSocket served before it gets its close.
            closing = await peer.ws_frame(1)
            assert closing.close_code == 1001
            assert peer.goaway is not None
            assert (peer.goaway.error_code, peer.goaway.last_stream_id) == (NO_ERROR, 1)
            # Whatever else the server writes now, before the new streams.
            with trio.move_on_after(0.2):
                await peer.read_to_end()
            if opening == "one-stream":
                await peer.request(3, websocket_connect("/echo"))
                refused = peer.stream_seen(3)
            else:
                await peer.send(
                    peer.headers_frame(3, websocket_connect("/echo"))
                    + rst_stream_frame(3)
                    + peer.headers_frame(5, websocket_connect("/echo"))
                )
                refused = peer.stream_seen(5)
            with trio.move_on_after(1):
                await peer.read_until(lambda: refused.reset is not None)
            assert refused.reset == REFUSED_STREAM
            await peer.try_send(data_frame(1, frame(OP_CLOSE, close_payload(1001))))
            await peer.read_to_end()
            await trio.aclose_forcefully(peer.stream)
            assert server.crash is None, f"the server died: {server.crash!r}"
            assert [visit.mode for visit in server.visits] == ["echo"]


# ---------------------------------------------------------------------------
# 6. More DATA than the window


async def one_byte_more_is_a_flow_control_error(peer: H2Peer, server: H2Server) -> None:
    """With stream 1's window full (its request held, nothing reading it),
    one byte more ends the stream or the connection with
    FLOW_CONTROL_ERROR; then the held handler is let go and the server
    still answers."""
    await peer.try_send(data_frame(1, b"\x02"))
    with trio.move_on_after(5):
        await peer.read_until(
            lambda: peer.goaway is not None or peer.stream_seen(1).reset is not None
        )
    if peer.goaway is not None:
        assert peer.goaway.error_code == FLOW_CONTROL_ERROR
    else:
        assert peer.stream_seen(1).reset == FLOW_CONTROL_ERROR
    await trio.aclose_forcefully(peer.stream)
    server.release.set()
    await server.h2_round_trip()


async def test_data_beyond_the_stream_window_is_a_flow_control_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = HTTP2Limits(stream_window=16384)
    with trio.fail_after(30):
        async with attacked("server", http2_limits=limits) as server:
            peer = await server.peer()
            await peer.request(1, websocket_connect("/hold"))
            # Up to the window: taken (the request is held, nothing reads it).
            message = frame(OP_BINARY, b"\x01" * (16384 - 8))
            assert len(message) == 16384
            await peer.send(data_frame(1, message))
            with trio.move_on_after(1):
                await peer.read_until(lambda: peer.goaway is not None)
            assert peer.goaway is None
            await one_byte_more_is_a_flow_control_error(peer, server)


# ---------------------------------------------------------------------------
# 7. Idle connections


CONNECT_TIMEOUT = 10.0

#: What an idle peer sends, and whether the server had started HTTP/2 by
#: then (it then says GOAWAY; before that, the peer is dropped without a
#: word, as a slow HTTP/1.1 request is).
IDLE_OPENINGS = {
    "nothing": (b"", False),
    "half-a-preface": (PREFACE[:10], False),
    "only-the-preface": (PREFACE, True),
    "preface-and-settings": (PREFACE + settings_frame(), True),
    # A header block that never ends (":method GET, :path /", no
    # END_HEADERS): no stream is open until it does.
    "headers-never-ended": (
        PREFACE + settings_frame() + h2_frame(HEADERS, 0, 1, b"\x82\x84"),
        True,
    ),
}


@pytest.mark.parametrize("name", IDLE_OPENINGS.keys())
async def test_an_idle_connection_is_closed_after_connect_timeout(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    opening, speaks_http2 = IDLE_OPENINGS[name]
    with trio.fail_after(60):
        async with attacked("server", connect_timeout=CONNECT_TIMEOUT) as server:
            peer = H2Peer(await server.connect())
            if opening:
                await peer.send(opening)
            started = trio.current_time()
            await peer.read_to_end()
            idle = trio.current_time() - started
            assert CONNECT_TIMEOUT - 0.1 <= idle <= CONNECT_TIMEOUT + 1.5
            if speaks_http2:
                assert peer.goaway is not None
                assert (peer.goaway.error_code, peer.goaway.last_stream_id) == (NO_ERROR, 0)
            else:
                assert peer.frames == [] and not peer._buffer
            assert not server.visits
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


async def test_a_connection_is_idle_again_once_its_last_websocket_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with attacked("server", connect_timeout=CONNECT_TIMEOUT) as server:
            peer = await server.peer()
            await peer.open_ws(1)
            # An open WebSocket keeps the connection, however long.
            await trio.sleep(5 * CONNECT_TIMEOUT)
            await peer.ws_echo(1, "still open")
            await peer.close_ws(1)
            await peer.whole_answer(1)
            ended = trio.current_time()
            await peer.read_to_end()
            assert CONNECT_TIMEOUT - 0.1 <= trio.current_time() - ended <= CONNECT_TIMEOUT + 1.5
            assert peer.goaway is not None
            assert (peer.goaway.error_code, peer.goaway.last_stream_id) == (NO_ERROR, 1)
            await trio.aclose_forcefully(peer.stream)


# ---------------------------------------------------------------------------
# 8. Requests that are not WebSockets


NOT_WEBSOCKET = {
    "get": plain_get(),
    "head": [(b":method", b"HEAD"), *plain_get()[1:]],
    "post": [(b":method", b"POST"), *plain_get()[1:]],
    "classic-connect": [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
    "other-protocol": websocket_connect(protocol=b"webtransport"),
    "no-version": websocket_connect(version=None),
    "version-8": websocket_connect(version=b"8"),
}


@pytest.mark.parametrize("name", NOT_WEBSOCKET.keys())
async def test_a_request_that_is_not_a_websocket_gets_400_on_its_stream(name: str) -> None:
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            await peer.request(1, NOT_WEBSOCKET[name])
            answer = await peer.whole_answer(1)
            assert answer.status == 400
            assert answer.reset in (None, NO_ERROR)
            if name != "head":
                assert b"400" in answer.data
            else:
                assert answer.data == bytearray()
            # The connection goes on: a WebSocket on the next stream.
            await peer.open_ws(3)
            await peer.ws_echo(3, "after the 400")
            await peer.close_ws(3)
            assert peer.goaway is None
            await trio.aclose_forcefully(peer.stream)
            assert [visit.mode for visit in server.visits] == ["echo"]


MALFORMED = {
    # RFC 9113 section 8.1.1: a malformed request is a stream error
    # PROTOCOL_ERROR (which a server may make a connection error).
    "protocol-on-get": websocket_connect(method=b"GET"),
    "connect-with-path-no-protocol": websocket_connect(protocol=None),
    "uppercase-name": websocket_connect(extra=[(b"X-Upper", b"1")]),
    "connection-header": websocket_connect(extra=[(b"connection", b"upgrade")]),
    "no-authority": [pair for pair in websocket_connect() if pair[0] != b":authority"],
}


@pytest.mark.parametrize("name", MALFORMED.keys())
async def test_a_malformed_request_is_a_protocol_error(name: str) -> None:
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            await peer.request(1, MALFORMED[name])
            with trio.move_on_after(2):
                await peer.read_until(
                    lambda: (
                        peer.goaway is not None
                        or peer.stream_seen(1).reset is not None
                        or peer.stream_seen(1).headers is not None
                    )
                )
            seen = peer.stream_seen(1)
            assert seen.headers is None, f"a malformed request was answered: {seen}"
            code = peer.goaway.error_code if peer.goaway is not None else seen.reset
            assert code == PROTOCOL_ERROR
            assert not server.visits
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


# ---------------------------------------------------------------------------
# 9. Garbage and bad frames


@pytest.mark.parametrize(
    "name, data, codes",
    [
        ("data-before-settings", data_frame(1, b"xx"), (PROTOCOL_ERROR,)),
        (
            "push-promise-from-a-client",
            h2_frame(0x5, END_HEADERS, 1, b"\0\0\0\2\x82"),
            (PROTOCOL_ERROR,),
        ),
        (
            "headers-on-an-even-stream",
            h2_frame(HEADERS, END_HEADERS, 2, b"\x82"),
            (PROTOCOL_ERROR,),
        ),
        (
            "oversized-whole-frame",
            h2_frame(0xFA, 0, 0, b"x" * (HTTP2Limits().max_frame_size + 1)),
            (FRAME_SIZE_ERROR,),
        ),
        ("ping-of-7-bytes", h2_frame(0x6, 0, 0, b"1234567"), (FRAME_SIZE_ERROR,)),
        ("data-on-stream-0", data_frame(0, b"xx"), (PROTOCOL_ERROR,)),
    ],
)
async def test_a_bad_frame_after_the_preface_is_a_connection_error(
    name: str, data: bytes, codes: tuple[int, ...]
) -> None:
    settings = settings_frame() if name != "data-before-settings" else b""
    with trio.fail_after(10):
        async with attacked("tcp", connect_timeout=5) as server:
            peer = H2Peer(await server.connect())
            await peer.send(PREFACE + settings + data)
            with trio.fail_after(2):
                await peer.read_to_end()
            assert peer.goaway is not None
            assert peer.goaway.error_code in codes
            await server.h2_round_trip()


#: Openings whose last frame header declares more than max_frame_size.
OVERSIZED_HEADERS = {
    # Text read as a frame header: a length of 0x746869 (7.6 MB).
    "text-garbage": PREFACE + b"this is not HTTP/2 at all\r\n\r\n",
    # An unknown frame type (ignored if it were small) of 16 MiB - 1.
    "frame-declaring-16-MiB": PREFACE
    + settings_frame()
    + (2**24 - 1).to_bytes(3, "big")
    + bytes([0xFA, 0])
    + (0).to_bytes(4, "big"),
}


@pytest.mark.parametrize("name", OVERSIZED_HEADERS.keys())
async def test_a_frame_header_over_max_frame_size_is_refused_at_once(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    opening = OVERSIZED_HEADERS[name]
    with trio.fail_after(60):
        async with attacked("server", connect_timeout=30) as server:
            peer = H2Peer(await server.connect())
            taken = 0

            async def attack(peer: H2Peer) -> None:
                nonlocal taken
                if not await peer.try_send(opening):
                    return
                for _ in range(256):
                    # Lockstep: a write returns once the server has read it.
                    if not await peer.try_send(b"\0" * 65536):
                        return
                    taken += 65536

            with trio.fail_after(5):
                await read_while(peer, attack)
            assert peer.goaway is not None
            assert peer.goaway.error_code in (FRAME_SIZE_ERROR, PROTOCOL_ERROR)
            assert taken <= 128 * 1024, f"the server read {taken} bytes of one frame"
            await server.h2_round_trip()


async def test_an_undecodable_header_block_is_a_compression_error() -> None:
    # (h2 reports it as PROTOCOL_ERROR; RFC 9113 section 4.3 says this.)
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            peer = await server.peer()
            # An indexed field far beyond the tables.
            await peer.send(h2_frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"))
            assert await peer.goaway_code() == COMPRESSION_ERROR
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


@pytest.mark.parametrize(
    "opening",
    [b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\n"],
    ids=["bad-preface", "preface-cut-at-the-blank-line"],
)
async def test_a_bad_preface_is_an_http1_request_and_gets_400(opening: bytes) -> None:
    with trio.fail_after(10):
        async with attacked("tcp") as server:
            stream = await server.connect()
            await stream.send_all(opening + b"more garbage\r\n\r\n")
            answer = b""
            with trio.fail_after(2):
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    answer += data
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
            await trio.aclose_forcefully(stream)
            await server.h2_round_trip()


# ---------------------------------------------------------------------------
# The same over TLS (ALPN h2)


CA = trustme.CA()
CERT = CA.issue_cert("127.0.0.1")


@pytest.mark.parametrize("attack", ["rapid-reset", "ping-flood", "frame-too-large"])
async def test_attacks_over_tls_get_the_same_answers(attack: str) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(server_context)
    client_context = ssl.create_default_context()
    CA.configure_trust(client_context)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    echo_handler,
                    "127.0.0.1",
                    0,
                    server_context,
                    http2=True,
                    http2_limits=LIMITS,
                )
            )
            client_context.set_alpn_protocols(["h2"])
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", server.port, ssl_context=client_context
            )
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "h2"
            peer = H2Peer(stream)
            await peer.start()
            if attack == "rapid-reset":
                data = b"".join(
                    peer.headers_frame(stream_id, websocket_connect("/echo"))
                    + rst_stream_frame(stream_id)
                    for stream_id in range(1, 400, 2)
                )
                expected = ENHANCE_YOUR_CALM
            elif attack == "ping-flood":
                data = ping_frame() * (2 * LIMITS.control_frame_burst)
                expected = ENHANCE_YOUR_CALM
            else:
                data = h2_frame(0xFA, 0, 0, b"x" * (LIMITS.max_frame_size + 1))
                expected = FRAME_SIZE_ERROR
            await peer.try_send(data)
            assert await peer.goaway_code() == expected
            await trio.aclose_forcefully(stream)
            client_context.set_alpn_protocols(["h2", "http/1.1"])
            url = f"wss://127.0.0.1:{server.port}/"
            async with open_websocket_url(url, client_context, http2="require") as ws:
                await ws.send_message("over TLS")
                assert await ws.get_message() == "over TLS"
            await poll_until(lambda: not server.connection_count)
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# Nothing leaves the server


async def test_no_attack_leaves_a_group_or_an_error_in_serve_websocket() -> None:
    """All of the above at once, on one server, over one second: the
    server keeps running and its handlers see only ``ConnectionClosed``."""
    with trio.fail_after(10):
        async with attacked("tcp", connect_timeout=1) as server:

            async def one(data: bytes) -> None:
                peer = await server.peer()
                await peer.try_send(data)
                with trio.move_on_after(2):
                    await peer.read_to_end()
                await trio.aclose_forcefully(peer.stream)

            attacks = [
                h2_frame(HEADERS, END_HEADERS, 1, encoded(websocket_connect("/echo")))
                + rst_stream_frame(1) * 500,
                ping_frame() * 2000,
                h2_frame(HEADERS, 0, 1, b"\x82") + h2_frame(CONTINUATION, 0, 1, b"") * 200,
                h2_frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"),
                data_frame(0, b"x"),
                b"\0" * 100,
            ]
            async with trio.open_nursery() as nursery:
                for data in attacks:
                    nursery.start_soon(one, data)
                nursery.start_soon(server.h2_round_trip)
            for visit in server.visits:
                assert visit.error is None or isinstance(visit.error, ConnectionClosed)
            assert not isinstance(server.crash, BaseExceptionGroup)
