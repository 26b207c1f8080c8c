"""``close_sent`` and ``close_received``: both close frames stay readable
after the connection closes, while ``closed`` keeps its 0.12.2 meaning
(the first reason: ours, the peer's, or 1006)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import open_pair
from test_keepalive import client_with_hand_peer, server_with_hand_peer
from wsproto.events import BytesMessage, CloseConnection
from wsproto.frame_protocol import CloseReason as WsprotoCode

from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

Pair = tuple[WebSocketConnection, WebSocketConnection]
ROLES = ["client", "server"]


def sides(pair: Pair, role: str) -> Pair:
    client, server = pair
    return (client, server) if role == "client" else (server, client)


@pytest.mark.parametrize("role", ROLES)
async def test_nothing_is_set_while_open(pair: Pair, role: str) -> None:
    ws, _ = sides(pair, role)
    assert ws.close_sent is None
    assert ws.close_received is None
    assert ws.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_we_close_first(pair: Pair, role: str) -> None:
    ws, peer = sides(pair, role)
    await ws.aclose(4001, "we are done")
    expected = CloseReason(4001, "we are done")
    assert ws.close_sent == expected
    assert ws.close_received == expected  # the peer echoed it
    assert ws.closed == expected
    assert peer.close_received == expected
    assert peer.close_sent == expected


@pytest.mark.parametrize("role", ROLES)
async def test_peer_closes_first(pair: Pair, role: str) -> None:
    ws, peer = sides(pair, role)
    await peer.aclose(1001, "leaving")
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    assert ws.close_received == CloseReason(1001, "leaving")
    assert ws.close_sent == CloseReason(1001, "leaving")  # our echo
    assert ws.closed == CloseReason(1001, "leaving")


@pytest.mark.parametrize("role", ROLES)
async def test_a_peer_answering_with_another_code_is_kept_apart(
    nursery: trio.Nursery, role: str
) -> None:
    if role == "client":
        ws, peer = await client_with_hand_peer(nursery, run_peer=False)
    else:
        ws, peer = await server_with_hand_peer(nursery, run_peer=False)
    async with trio.open_nursery() as inner:
        inner.start_soon(ws.aclose, 1000, "bye")
        # The peer reads our close frame and answers with its own code.
        for _ in range(100):
            peer.connection.receive_data(await peer.stream.receive_some())
            if any(isinstance(e, CloseConnection) for e in peer.connection.events()):
                break
        await peer.send(CloseConnection(code=4001, reason="nope"))
        await peer.stream.aclose()
    assert ws.close_sent == CloseReason(1000, "bye")
    assert ws.close_received == CloseReason(4001, "nope")
    assert ws.closed == CloseReason(1000, "bye")  # the first, as in 0.12.2


async def test_a_connection_lost_without_close_frames(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client, _ = await open_pair(nursery, client_stream, server_stream)
    await trio.aclose_forcefully(server_stream)
    with pytest.raises(ConnectionClosed):
        await client.get_message()
    assert client.closed is not None and client.closed.code == 1006
    assert client.close_sent is None
    assert client.close_received is None


async def test_a_local_only_code_is_sent_as_1000(pair: Pair) -> None:
    client, server = pair
    await client.aclose(1006, "pretend")
    # ``closed`` reports what the application asked for (as 0.12.2 did);
    # close_sent what went on the wire.
    assert client.closed == CloseReason(1006, "pretend")
    assert client.close_sent == CloseReason(1000, "pretend")
    assert server.close_received == CloseReason(1000, "pretend")


async def test_protocol_failure_shows_the_code_we_sent(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, peer = await client_with_hand_peer(nursery, max_message_size=10)
    await peer.send(BytesMessage(data=b"x" * 11))
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    await trio.sleep(1)
    assert ws.close_sent is not None and ws.close_sent.code == 1009
    assert ws.closed == ws.close_sent
    assert ws.close_received is not None and ws.close_received.code == 1009


async def test_an_empty_close_frame_reads_as_1005(nursery: trio.Nursery) -> None:
    ws, peer = await server_with_hand_peer(nursery)
    await peer.send(CloseConnection(code=WsprotoCode.NO_STATUS_RCVD))
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
    assert ws.close_received == CloseReason(1005, None)
    assert ws.close_sent == CloseReason(1005, None)  # echoed empty
