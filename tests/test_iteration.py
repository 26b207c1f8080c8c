"""``async for message in ws`` and the ``trio.abc.Channel`` interface:
iteration ends quietly on a normal close and raises otherwise; ``send``,
``receive`` and ``aclose`` work where a Channel is expected."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import open_pair
from test_keepalive import server_with_hand_peer
from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import CloseReason as WsprotoCode

from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

Pair = tuple[WebSocketConnection, WebSocketConnection]
ROLES = ["client", "server"]


def sides(pair: Pair, role: str) -> Pair:
    """(this side, the other side) for ``role``."""
    client, server = pair
    return (client, server) if role == "client" else (server, client)


async def collect(ws: WebSocketConnection) -> list[str | bytes]:
    return [message async for message in ws]


def test_a_connection_is_a_trio_channel() -> None:
    assert issubclass(WebSocketConnection, trio.abc.Channel)
    assert issubclass(WebSocketConnection, trio.abc.SendChannel)
    assert issubclass(WebSocketConnection, trio.abc.ReceiveChannel)
    assert issubclass(WebSocketConnection, trio.abc.AsyncResource)


async def test_the_connection_still_has_no_instance_dict(pair: Pair) -> None:
    # __slots__ survives the new base classes: idle connections stay small.
    for ws in pair:
        assert not hasattr(ws, "__dict__")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (1001, "going away"), (1000, None)])
async def test_iteration_ends_when_the_peer_closes_normally(
    pair: Pair, role: str, code: int, reason: str | None
) -> None:
    ws, peer = sides(pair, role)
    await peer.send_message("a")
    await peer.send_message(b"b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.aclose, code, reason)
        assert await collect(ws) == ["a", b"b"]
    assert ws.closed == CloseReason(code, reason)


async def test_iteration_ends_on_an_empty_close_frame(nursery: trio.Nursery) -> None:
    """Browsers close with an empty frame by default (reported as 1005)."""
    ws, peer = await server_with_hand_peer(nursery)
    await peer.send(TextMessage(data="last"))
    await peer.send(CloseConnection(code=WsprotoCode.NO_STATUS_RCVD))  # an empty frame
    assert await collect(ws) == ["last"]
    assert ws.closed == CloseReason(1005, None)


@pytest.mark.parametrize("role", ROLES)
async def test_iteration_ends_when_we_close_normally_from_another_task(
    pair: Pair, role: str
) -> None:
    ws, _ = sides(pair, role)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.aclose)
        assert await collect(ws) == []
    assert ws.closed == CloseReason(1000, None)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("code", [1002, 1008, 1011, 3000, 4000])
async def test_iteration_raises_on_an_abnormal_close(pair: Pair, role: str, code: int) -> None:
    ws, peer = sides(pair, role)
    await peer.send_message("kept")
    received: list[str | bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.aclose, code, "bad")
        with pytest.raises(ConnectionClosed) as info:
            async for message in ws:
                received.append(message)
    assert received == ["kept"]
    assert info.value.reason == CloseReason(code, "bad")


async def test_iteration_raises_when_the_connection_is_lost(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client, server = await open_pair(nursery, client_stream, server_stream)
    await server.send_message("before")
    await trio.testing.wait_all_tasks_blocked()
    await trio.aclose_forcefully(server_stream)  # no close frame
    with pytest.raises(ConnectionClosed) as info:
        await collect(client)
    assert info.value.reason is not None and info.value.reason.code == 1006


@pytest.mark.parametrize("role", ROLES)
async def test_receive_raises_end_of_channel_but_get_message_keeps_0_12_2(
    pair: Pair, role: str
) -> None:
    ws, peer = sides(pair, role)
    await peer.aclose()
    with pytest.raises(trio.EndOfChannel):
        await ws.receive()
    # get_message keeps raising ConnectionClosed, as code written for 0.12.2
    # expects.
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == CloseReason(1000, None)


@pytest.mark.parametrize("role", ROLES)
async def test_send_and_receive_carry_messages(pair: Pair, role: str) -> None:
    ws, peer = sides(pair, role)
    await ws.send("text")
    await ws.send(b"bytes")
    assert await peer.receive() == "text"
    assert await peer.receive() == b"bytes"


async def test_send_on_a_closed_connection_raises_connection_closed(pair: Pair) -> None:
    client, _ = pair
    await client.aclose()
    with pytest.raises(ConnectionClosed):
        await client.send("late")


async def test_send_rejects_other_types(pair: Pair) -> None:
    with pytest.raises(ValueError):
        await pair[0].send(42)  # type: ignore[arg-type]


async def relay(
    source: trio.abc.ReceiveChannel[str | bytes], sink: trio.abc.SendChannel[str | bytes]
) -> int:
    """Generic Channel code: knows nothing about WebSockets."""
    count = 0
    async with source:
        async for message in source:
            await sink.send(message)
            count += 1
    return count


async def test_works_with_code_written_for_trio_channels(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    send, receive = trio.open_memory_channel[str | bytes](10)
    for message in ["one", b"two", "three"]:
        await client.send_message(message)
    async with trio.open_nursery() as inner:
        inner.start_soon(client.aclose)
        count = await relay(server, send)
    assert count == 3
    assert [receive.receive_nowait() for _ in range(3)] == ["one", b"two", "three"]
    # The other direction: a memory channel into the WebSocket.
    client2, server2 = await open_pair(nursery)
    send2, receive2 = trio.open_memory_channel[str | bytes](10)
    await send2.send("x")
    await send2.send(b"y")
    await send2.aclose()
    assert await relay(receive2, client2) == 2
    assert [await server2.receive(), await server2.receive()] == ["x", b"y"]
    await client2.aclose()


async def test_async_with_closes_normally(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    async with client:
        await client.send("hi")
    assert client.closed == CloseReason(1000, None)
    assert await server.receive() == "hi"
    with pytest.raises(trio.EndOfChannel):
        await server.receive()
