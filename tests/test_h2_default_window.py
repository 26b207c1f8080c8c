"""The default receive window of an HTTP/2 stream, as a peer sees it: what
``HTTP2Limits()`` states (512 KiB per stream, the connection's window
their sum) is what a peer may send and what a WebSocket whose reader does
not read may hold; one byte more is a flow-control error.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

pytest.importorskip("h2")

from hostile_h2_peers import data_frame, websocket_connect
from test_hostile_http2 import attacked, one_byte_more_is_a_flow_control_error

from trio_websocket import HTTP2Limits

DEFAULT_STREAM_WINDOW = 512 * 1024


def test_the_default_bounds_are_stated() -> None:
    limits = HTTP2Limits()
    assert limits.stream_window == DEFAULT_STREAM_WINDOW
    assert limits.connection_window == limits.max_concurrent_streams * DEFAULT_STREAM_WINDOW
    assert "50 MiB" in (HTTP2Limits.__doc__ or "")


async def test_a_stream_holds_its_default_window_unread_and_not_a_byte_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    frame_size = HTTP2Limits().max_frame_size
    with trio.fail_after(60):
        async with attacked("server", http2_limits=HTTP2Limits()) as server:
            peer = await server.peer()
            # (The request is held: nothing reads the stream.)
            await peer.request(1, websocket_connect("/hold"))
            for _ in range(DEFAULT_STREAM_WINDOW // frame_size):
                await peer.send(data_frame(1, b"\x01" * frame_size))
            with trio.move_on_after(1):
                await peer.read_until(
                    lambda: peer.goaway is not None or peer.stream_seen(1).reset is not None
                )
            assert peer.goaway is None
            assert peer.stream_seen(1).reset is None
            # One byte more.
            await one_byte_more_is_a_flow_control_error(peer, server)
