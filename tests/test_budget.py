"""The byte budget on received data (``max_buffered_bytes``): the reader
stops reading once that much waits for the application, counted in bytes
on the wire (UTF-8 bytes for text), while pings and the closing handshake
still work; every entry point takes the option."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from test_connection import GUARD, open_raw, open_sides, settle
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._core.config import ConnectionOptions
from trio_websocket._core.messages import ITEM_COST, Inbox

ROLES = ["client", "server"]


# ---------------------------------------------------------------------------
# The option


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-5, ValueError), (True, TypeError), (1.5, TypeError), ("1", TypeError)],
)
def test_bad_budget_is_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_buffered_bytes"):
        ConnectionOptions.build(max_message_size=1000, max_buffered_bytes=value)  # type: ignore[arg-type]


def test_default_budget_is_none_and_a_budget_is_kept() -> None:
    assert ConnectionOptions.build().max_buffered_bytes is None
    assert ConnectionOptions.build(max_buffered_bytes=1).max_buffered_bytes == 1


async def test_bad_budget_fails_every_entry_point_before_any_io() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError):
            await wrap_client_stream(nursery, client_stream, "h", "/", max_buffered_bytes=0)
        with pytest.raises(ValueError):
            await wrap_server_stream(nursery, server_stream, max_buffered_bytes=0)
        with pytest.raises(ValueError):
            await connect_websocket(
                nursery, "127.0.0.1", 1, "/", use_ssl=False, max_buffered_bytes=0
            )
        with pytest.raises(ValueError):
            await connect_websocket_url(nursery, "ws://127.0.0.1:1/", max_buffered_bytes=0)
        with pytest.raises(ValueError):
            async with open_websocket("127.0.0.1", 1, "/", use_ssl=False, max_buffered_bytes=0):
                pass  # pragma: no cover
        with pytest.raises(ValueError):
            async with open_websocket_url("ws://127.0.0.1:1/", max_buffered_bytes=0):
                pass  # pragma: no cover
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        try:
            with pytest.raises(ValueError):
                WebSocketServer(_never, listeners, max_buffered_bytes=0)
        finally:
            for listener in listeners:
                await listener.aclose()


async def _never(request: WebSocketRequest) -> None:  # pragma: no cover
    raise AssertionError("no connection expected")


@asynccontextmanager
async def _via_open_websocket(port: int, budget: int) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket(
        "127.0.0.1", port, "/", use_ssl=False, max_buffered_bytes=budget
    ) as ws:
        yield ws


@asynccontextmanager
async def _via_open_websocket_url(port: int, budget: int) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/", max_buffered_bytes=budget) as ws:
        yield ws


@asynccontextmanager
async def _via_connect_websocket(port: int, budget: int) -> AsyncIterator[WebSocketConnection]:
    async with trio.open_nursery() as nursery:
        ws = await connect_websocket(
            nursery, "127.0.0.1", port, "/", use_ssl=False, max_buffered_bytes=budget
        )
        yield ws
        await ws.aclose()


@asynccontextmanager
async def _via_connect_websocket_url(port: int, budget: int) -> AsyncIterator[WebSocketConnection]:
    async with trio.open_nursery() as nursery:
        ws = await connect_websocket_url(
            nursery, f"ws://127.0.0.1:{port}/", max_buffered_bytes=budget
        )
        yield ws
        await ws.aclose()


CLIENT_ENTRY_POINTS: list[Callable[[int, int], Any]] = [
    _via_open_websocket,
    _via_open_websocket_url,
    _via_connect_websocket,
    _via_connect_websocket_url,
]


@pytest.mark.parametrize("client_entry", CLIENT_ENTRY_POINTS, ids=lambda f: f.__name__[5:])
async def test_tcp_entry_points_hand_the_budget_to_the_connection(
    nursery: trio.Nursery, client_entry: Callable[[int, int], Any]
) -> None:
    seen: list[int | None] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        seen.append(ws._options.max_buffered_bytes)
        await ws.send_message("hello")
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, max_buffered_bytes=12345)
    )
    with trio.fail_after(GUARD):
        async with client_entry(server.port, 4321) as ws:
            assert ws._options.max_buffered_bytes == 4321
            assert await ws.get_message() == "hello"
    assert seen == [12345]


async def test_stream_entry_points_hand_the_budget_to_the_connection(
    nursery: trio.Nursery,
) -> None:
    client, server = await open_sides(
        nursery,
        "client",
        local_options={"max_buffered_bytes": 111},
        peer_options={"max_buffered_bytes": 222},
    )
    assert client._options.max_buffered_bytes == 111
    assert server._options.max_buffered_bytes == 222


# ---------------------------------------------------------------------------
# The reader stops at the budget


@pytest.mark.parametrize("role", ROLES)  # the receiving side
@pytest.mark.parametrize("budget", [None, 100_000])
async def test_reader_stops_once_the_budget_is_buffered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str, budget: int | None
) -> None:
    # A queue of 1000 messages would read all 400 kB ahead; the budget
    # stops it at 100 kB (give or take one 16 KiB read).
    read_size = 16 * 1024
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={
            "message_queue_size": 1000,
            "receive_buffer_size": read_size,
            "max_buffered_bytes": budget,
        },
    )
    messages = [bytes([i]) * 10_000 for i in range(40)]
    for message in messages:
        await sender.send_message(message)
    await settle()
    buffered = receiver._inbox.buffered_bytes
    if budget is None:
        assert buffered == 400_000
    else:
        assert budget <= buffered <= budget + read_size
    with trio.fail_after(GUARD):
        for message in messages:
            assert await receiver.get_message() == message
            if budget is not None:
                assert receiver._inbox.buffered_bytes <= budget + read_size
    assert receiver.closed is None


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_the_peers_send_blocks_at_the_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # A lockstep stream buffers nothing: the peer's write ends only once
    # our reader has read it, as with a TCP connection whose window is full.
    local_stream, peer_stream = trio.testing.lockstep_stream_pair()
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"message_queue_size": 1000, "max_buffered_bytes": 50_000},
        local_stream=local_stream,
        peer_stream=peer_stream,
    )
    sent = 0

    async def send_all() -> None:
        nonlocal sent
        for i in range(100):
            await sender.send_message(bytes([i]) * 10_000)
            sent += 1

    nursery.start_soon(send_all)
    await trio.sleep(10)
    assert 5 <= sent <= 7  # 50 kB buffered, one more in the read, one in flight
    with trio.fail_after(GUARD):
        for i in range(100):
            assert await receiver.get_message() == bytes([i]) * 10_000
    await settle()
    assert sent == 100


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_text_counts_utf8_bytes_not_characters(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={
            "message_queue_size": 1000,
            "receive_buffer_size": 1024,
            "max_buffered_bytes": 3000,
        },
    )
    text = "\u00e9" * 500  # 500 characters, 1000 bytes
    for _ in range(10):
        await sender.send_message(text)
    await settle()
    waiting = len(receiver._inbox)
    assert receiver._inbox.buffered_bytes == 1000 * waiting
    # Counting characters, 6 messages would fit under 3000.
    assert 3 <= waiting <= 4
    with trio.fail_after(GUARD):
        for _ in range(10):
            assert await receiver.get_message() == text
    assert receiver._inbox.buffered_bytes == 0


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_a_message_bigger_than_the_budget_still_arrives_whole(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    # The message being assembled is bounded by max_message_size, not by
    # the budget: a budget smaller than a message must not stall it.
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"max_buffered_bytes": 1000, "receive_buffer_size": 4096},
    )
    big = bytes(range(256)) * 400
    await sender.send_fragments([big[:50_000], big[50_000:]])
    await sender.send_message(big)
    with trio.fail_after(GUARD):
        assert await receiver.get_message() == big
        assert await receiver.get_message() == big


@pytest.mark.parametrize("role", ROLES)  # the receiving side
async def test_streamed_pieces_respect_a_budget_below_the_read_ahead(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    read_size = 4096
    receiver, sender = await open_sides(
        nursery,
        role,
        local_options={"max_buffered_bytes": 20_000, "receive_buffer_size": read_size},
    )
    nursery.start_soon(sender.send_fragments, [b"x" * 10_000] * 30)
    received = 0
    most = 0
    with trio.fail_after(GUARD):
        async for piece in receiver.receive_fragments():
            received += len(piece)
            await settle()
            most = max(most, receiver._inbox.buffered_bytes)
    assert received == 300_000
    assert 20_000 <= most <= 20_000 + read_size


# ---------------------------------------------------------------------------
# Control frames at the budget


@pytest.mark.parametrize("role", ROLES)
async def test_pings_are_answered_until_the_budget_then_once_data_is_taken(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    ws, peer = await open_raw(nursery, role, message_queue_size=1000, max_buffered_bytes=50_000)
    for _ in range(3):
        await peer.send(BytesMessage(b"d" * 10_000))
    await peer.send(Ping(b"within budget"))
    with trio.fail_after(GUARD):
        # Answered though the application has read nothing.
        assert (await peer.expect(Pong)).payload == b"within budget"
    for _ in range(5):
        await peer.send(BytesMessage(b"d" * 10_000))
    await settle()
    await peer.send(Ping(b"over budget"))
    with trio.move_on_after(30):
        event = await peer.next_event()
        pytest.fail(f"the reader read past its budget: {event!r}")
    # The application catches up: reading resumes and the ping is answered.
    with trio.fail_after(GUARD):
        for _ in range(8):
            assert await ws.get_message() == b"d" * 10_000
        assert (await peer.expect(Pong)).payload == b"over budget"


@pytest.mark.parametrize("role", ROLES)
async def test_local_close_completes_while_the_reader_is_stopped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    local_stream, peer_stream = trio.testing.lockstep_stream_pair()
    ws, sender = await open_sides(
        nursery,
        role,
        local_options={"message_queue_size": 1000, "max_buffered_bytes": 30_000},
        local_stream=local_stream,
        peer_stream=peer_stream,
    )

    async def flood() -> None:
        try:
            for _ in range(1000):
                await sender.send_message(b"f" * 10_000)
        except ConnectionClosed:
            pass

    nursery.start_soon(flood)
    await trio.sleep(5)
    assert ws._inbox.reader_must_wait()  # stopped at the budget
    with trio.fail_after(GUARD):
        await ws.aclose(4001, "enough")
    assert ws.closed is not None and ws.closed.code == 4001
    with trio.fail_after(GUARD), pytest.raises(ConnectionClosed):
        for _ in range(1000):
            await sender.get_message()
    assert sender.closed is not None and sender.closed.code == 4001


@pytest.mark.parametrize("role", ROLES)
async def test_peer_close_behind_unread_data_completes_once_the_data_is_read(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, role: str
) -> None:
    ws, peer = await open_raw(nursery, role, message_queue_size=1000, max_buffered_bytes=20_000)
    for i in range(10):
        await peer.send(TextMessage(str(i) * 5_000))
    await peer.send(CloseConnection(code=4002, reason="done"))
    with trio.fail_after(GUARD):
        for i in range(10):
            assert await ws.get_message() == str(i) * 5_000
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 4002
        assert (await peer.expect(CloseConnection)).code == 4002


async def test_serve_websocket_refuses_a_bad_budget_before_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[object] = []

    async def spy(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        opened.append(args)
        raise AssertionError("a listener was opened")

    monkeypatch.setattr(trio, "open_tcp_listeners", spy)
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        await serve_websocket(_never, "127.0.0.1", 0, None, max_buffered_bytes=0)
    assert opened == []


# ---------------------------------------------------------------------------
# The inbox's cap, on its own


def test_inbox_cap_stops_the_reader_whatever_the_message_count() -> None:
    # Each waiting message costs its size plus ITEM_COST.
    inbox = Inbox(max_messages=1000, read_ahead_bytes=1000, max_bytes=ITEM_COST + 50)
    assert not inbox.put(b"x" * 49)
    assert not inbox.reader_must_wait()
    inbox = Inbox(max_messages=1000, read_ahead_bytes=1000, max_bytes=ITEM_COST + 50)
    assert inbox.put(b"x" * 50)
    assert inbox.reader_must_wait()


def test_empty_messages_use_up_the_budget() -> None:
    # An empty message is not free: a flood of them stops the reader.
    inbox = Inbox(max_messages=1, read_ahead_bytes=256 * 1024, max_bytes=1024)
    puts = 0
    while not inbox.put(b""):
        puts += 1
        assert puts < 100
    assert puts == 1024 // ITEM_COST - 1
    assert len(inbox) == 1024 // ITEM_COST


def test_inbox_cap_lowers_the_read_ahead_to_itself() -> None:
    inbox = Inbox(max_messages=1, read_ahead_bytes=100, max_bytes=1000)
    inbox.put(b"x" * 100)
    assert inbox.reader_must_wait()  # the read-ahead rule still applies
    inbox = Inbox(max_messages=1, read_ahead_bytes=100, max_bytes=10)
    inbox.put(b"x" * 10)
    assert inbox.reader_must_wait()


async def test_inbox_counts_text_in_utf8_bytes_both_ways() -> None:
    inbox = Inbox(max_messages=1000, read_ahead_bytes=100, max_bytes=None)
    inbox.put("\u00e9\u2603\U0001f600")  # 2 + 3 + 4 bytes
    inbox.put("ascii")
    assert inbox.buffered_bytes == 14
    await inbox.get()
    assert inbox.buffered_bytes == 5
    await inbox.get()
    assert inbox.buffered_bytes == 0


def test_no_cap_keeps_the_old_marks() -> None:
    inbox = Inbox(max_messages=2, read_ahead_bytes=10)
    inbox.put(b"x" * 1000)
    assert not inbox.reader_must_wait()  # one message: below the count mark
    inbox.put(b"x")
    assert inbox.reader_must_wait()
