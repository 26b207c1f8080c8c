"""``WebSocketConnection.statistics()``: a frozen snapshot of messages and
bytes in and out, what waits in the buffers, pings in flight and latency."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from conftest import open_pair
from test_keepalive import client_with_hand_peer

from trio_websocket import ConnectionStatistics, WebSocketConnection

Pair = tuple[WebSocketConnection, WebSocketConnection]


async def test_a_new_connection_has_counted_nothing(pair: Pair) -> None:
    for ws in pair:
        stats = ws.statistics()
        assert isinstance(stats, ConnectionStatistics)
        assert stats == ConnectionStatistics(
            messages_sent=0,
            messages_received=0,
            bytes_sent=0,
            bytes_received=0,
            messages_buffered=0,
            buffered_bytes=0,
            unsent_bytes=0,
            pings_in_flight=0,
            latency=None,
            compression_ratio=None,
        )


async def test_the_snapshot_is_frozen_and_does_not_follow_the_connection(pair: Pair) -> None:
    client, _ = pair
    before = client.statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.messages_sent = 5  # type: ignore[misc]
    await client.send_message("hello")
    assert before.messages_sent == 0
    assert client.statistics().messages_sent == 1


async def test_messages_and_wire_bytes_both_ways(pair: Pair) -> None:
    client, server = pair
    await client.send_message("hi")  # client frames: 2 header + 4 mask + payload
    await client.send_message(b"x" * 200)  # 2 + 2 (16-bit length) + 4 + 200
    await trio.testing.wait_all_tasks_blocked()
    sent = client.statistics()
    assert sent.messages_sent == 2
    assert sent.bytes_sent == (2 + 4 + 2) + (4 + 4 + 200)
    received = server.statistics()
    assert received.messages_received == 2
    assert received.bytes_received == sent.bytes_sent
    # Unread so far: both wait in the buffer (text counted in characters).
    assert received.messages_buffered == 2
    assert received.buffered_bytes == 2 + 200
    assert await server.get_message() == "hi"
    assert server.statistics().messages_buffered == 1
    assert await server.get_message() == b"x" * 200
    after = server.statistics()
    assert (after.messages_buffered, after.buffered_bytes, after.messages_received) == (0, 0, 2)

    await server.send_message("back")  # server frames are not masked: 2 + 4
    assert await client.get_message() == "back"
    assert server.statistics().bytes_sent == 6
    assert client.statistics().bytes_received == 6
    assert client.statistics().messages_received == 1


async def test_a_rejected_message_type_is_not_counted(pair: Pair) -> None:
    client, _ = pair
    with pytest.raises(ValueError):
        await client.send_message(3.5)  # type: ignore[arg-type]
    assert client.statistics().messages_sent == 0


async def test_control_frames_count_as_bytes_not_messages(pair: Pair) -> None:
    client, server = pair
    await client.ping(b"abcd")
    stats = client.statistics()
    assert stats.messages_sent == 0
    assert stats.bytes_sent == 2 + 4 + 4  # the ping frame
    assert stats.bytes_received == 2 + 4  # the pong frame
    assert stats.latency is not None and stats.latency >= 0
    assert server.statistics().messages_received == 0


async def test_pings_in_flight_and_unsent_bytes_behind_a_stuck_write(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, _ = await client_with_hand_peer(
        nursery,
        stream_pair=trio.testing.lockstep_stream_pair,
        run_peer=False,  # the peer never reads
        ping_interval=1,
        ping_timeout=100,
    )
    nursery.start_soon(ws.send_message, b"z" * 1000)
    await trio.sleep(1.5)
    stats = ws.statistics()
    assert stats.messages_sent == 0  # its send_message has not returned
    assert stats.pings_in_flight == 1
    # The keepalive's ping (2 + 4 mask + 4 payload) waits behind the write.
    assert stats.unsent_bytes == 10
    assert stats.latency is None


async def test_compression_ratio_counts_the_compressed_messages_both_ways(
    nursery: trio.Nursery,
) -> None:
    client, server = await open_pair(
        nursery,
        client_options={"compression": "deflate"},
        server_options={"compression": "deflate"},
    )
    assert client.statistics().compression_ratio is None  # nothing compressed yet
    text = "the same words again and again " * 200
    await client.send_message(text)
    assert await server.get_message() == text
    await server.send_message(b"tiny", compress=False)  # uncompressed: not counted
    assert await client.get_message() == b"tiny"
    for ws in (client, server):
        ratio = ws.statistics().compression_ratio
        assert ratio is not None and ratio > 10, ratio
    deflate = client._deflate
    assert deflate is not None
    assert client.statistics().compression_ratio == pytest.approx(
        deflate.bytes_sent_uncompressed / deflate.bytes_sent_compressed
    )


async def test_no_compression_ratio_without_compression(pair: Pair) -> None:
    client, server = pair
    await client.send_message("the same words again and again " * 200)
    await server.get_message()
    assert client.statistics().compression_ratio is None
    assert server.statistics().compression_ratio is None


async def test_a_message_received_in_pieces_is_counted_once(pair: Pair) -> None:
    """messages_received counts a message handed over in pieces
    (receive_fragments) at its last piece, as it counts a whole one. It
    used to count only whole ones: whether a message counted depended on
    whether it had arrived whole before the receive claimed it (found by
    test_fuzz_fast_paths: the fast decoder, holding a frame until whole,
    changes that)."""
    client, server = pair
    pieces: list[str | bytes] = []

    async def receive() -> None:
        async for piece in server.receive_fragments():
            pieces.append(piece)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()  # the receive waits
        await client.send_fragments(["one ", "message"])
    assert "".join(pieces) == "one message"  # type: ignore[arg-type]
    assert len(pieces) == 2
    assert server.statistics().messages_received == 1
