"""The largest frame a peer may send us, and what a frame may make us hold.

``HTTP2Limits()`` announces SETTINGS_MAX_FRAME_SIZE 64 KiB: a peer that
honours it sends a 64 KiB WebSocket message as one DATA frame. What a
frame can make the connection hold before it is whole stays bounded: the
DATA of an open WebSocket is handed on as it comes; a header block (HEADERS
and its CONTINUATION frames) may not grow past
``HTTP2Limits.header_block_bound``, whatever the frame size.
"""

from __future__ import annotations

import pytest
import trio

pytest.importorskip("h2")

from hostile_h2_peers import (
    CONTINUATION,
    END_HEADERS,
    ENHANCE_YOUR_CALM,
    HEADERS,
    data_frame,
    h2_frame,
    websocket_connect,
)
from hostile_peers import OP_BINARY, frame
from test_hostile_http2 import attacked, continuation_flood

from trio_websocket import HTTP2Limits
from trio_websocket._h2.frame_guard import FrameGuard, PeerFlood

SETTINGS_MAX_FRAME_SIZE = 0x5
DEFAULT_MAX_FRAME_SIZE = 64 * 1024


def test_the_default_frame_size_and_header_block_bound_are_stated() -> None:
    limits = HTTP2Limits()
    assert limits.max_frame_size == DEFAULT_MAX_FRAME_SIZE
    assert limits.header_block_bound == 2 * limits.max_header_list_size + 1024
    # A header block never lets a peer make us hold more than a frame would.
    assert limits.header_block_bound < limits.max_frame_size


async def test_a_websocket_message_of_64_kib_comes_as_one_data_frame() -> None:
    """The default is announced, and a DATA frame of that size (one whole
    WebSocket frame) is taken and echoed."""
    with trio.fail_after(10):
        async with attacked("server", http2_limits=HTTP2Limits()) as server:
            peer = await server.peer()
            assert peer.server_settings[SETTINGS_MAX_FRAME_SIZE] == DEFAULT_MAX_FRAME_SIZE
            await peer.open_ws(1)
            payload = (bytes(range(256)) * 256)[: DEFAULT_MAX_FRAME_SIZE - 8]
            message = frame(OP_BINARY, payload)
            assert len(message) == DEFAULT_MAX_FRAME_SIZE
            await peer.send(data_frame(1, message))
            echoed = await peer.ws_frame(1)
            assert (echoed.opcode, echoed.payload) == (OP_BINARY, payload)
            assert peer.goaway is None
            await peer.close_ws(1)
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


async def test_a_header_block_past_its_bound_ends_the_connection_at_once() -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames of the largest
    size: the frame that takes the block past the bound gets GOAWAY
    ENHANCE_YOUR_CALM on its header (h2 alone would hold 64 of them, 4 MiB,
    before it refused the block)."""
    limits = HTTP2Limits()
    piece = limits.max_frame_size
    with trio.fail_after(10):
        async with attacked("server", http2_limits=limits) as server:
            peer = await server.peer()
            taken = await continuation_flood(peer, piece, 100)
            assert peer.goaway is not None
            assert peer.goaway.error_code == ENHANCE_YOUR_CALM
            assert taken * piece <= limits.header_block_bound + 2 * piece
            assert not server.visits
            await server.h2_round_trip()


async def test_a_header_list_within_its_limit_in_many_continuations_is_served() -> None:
    """The bound leaves room for any header list within
    max_header_list_size, however it is cut into frames."""
    limits = HTTP2Limits()
    with trio.fail_after(10):
        async with attacked("server", http2_limits=limits) as server:
            peer = await server.peer()
            # Random-looking values, so that HPACK cannot make them small;
            # the list's size (as it is counted) just within the limit.
            values = [(b"x-filler-%03d" % index, b"%064x" % (index * 7919)) for index in range(148)]
            listed = websocket_connect("/echo", extra=values)
            size = sum(len(name) + len(value) + 32 for name, value in listed)
            assert limits.max_header_list_size - 200 < size <= limits.max_header_list_size
            block = peer.header_block(listed)
            pieces = [block[at : at + 1000] for at in range(0, len(block), 1000)]
            await peer.send(
                b"".join(
                    h2_frame(
                        HEADERS if index == 0 else CONTINUATION,
                        END_HEADERS if index == len(pieces) - 1 else 0,
                        1,
                        part,
                    )
                    for index, part in enumerate(pieces)
                )
            )
            answer = await peer.answer(1)
            assert answer.status == 200
            await peer.ws_echo(1, "a big header list, within the limit")
            await peer.close_ws(1)
            await trio.aclose_forcefully(peer.stream)
            await server.h2_round_trip()


def test_the_guard_counts_a_header_block_across_its_frames() -> None:
    guard = FrameGuard(expect_client_preface=False, max_frame_size=16384, max_header_block=100)
    # Blocks that end are counted each on its own, however many.
    for _ in range(5):
        guard.feed(
            h2_frame(HEADERS, 0, 1, b"a" * 60) + h2_frame(CONTINUATION, END_HEADERS, 1, b"b" * 40)
        )
    guard.feed(h2_frame(HEADERS, 0, 3, b"a" * 60))
    # Refused on the header of the frame that crosses the bound, before
    # its payload has come.
    with pytest.raises(PeerFlood):
        guard.feed(h2_frame(CONTINUATION, 0, 3, b"b" * 41)[:9])


def test_without_a_bound_the_guard_leaves_header_blocks_to_h2() -> None:
    guard = FrameGuard(expect_client_preface=False, max_frame_size=16384)
    data = h2_frame(HEADERS, 0, 1, b"a" * 16384) + h2_frame(CONTINUATION, 0, 1, b"b" * 16384)
    assert guard.feed(data) is data


def test_a_maximal_data_frame_sent_slowly_is_handed_on_as_it_comes() -> None:
    """A peer that sends one DATA frame of the largest size a byte run at a
    time makes the guard hold none of it: each piece reaches the stream
    when it comes (the stream's window bounds what waits there)."""
    size = DEFAULT_MAX_FRAME_SIZE

    class Sink:
        receive_window = size

        def __init__(self) -> None:
            self.received = bytearray()

        def data_received(self, data: bytes) -> None:
            self.received += data

    guard = FrameGuard(
        expect_client_preface=False, max_frame_size=size, receive_window=size, send_window=65535
    )
    sink = Sink()
    guard.routes[1] = sink
    payload = (bytes(range(251)) * (size // 251 + 1))[:size]
    data = data_frame(1, payload)
    for at in range(0, len(data), 1000):
        assert guard.feed(data[at : at + 1000]) == b""
        assert bytes(sink.received) == payload[: max(0, at + 1000 - 9)]
    assert bytes(sink.received) == payload
