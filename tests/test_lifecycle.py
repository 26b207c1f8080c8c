"""The connection's life cycle (``_core.lifecycle``): the table in the
module's header is the one the code keeps. Each test drives a connection
through one row of the table with a hand-driven peer and checks the state
it lands in, and what a user sees there (``closed``, sends, messages).
"""

from __future__ import annotations

import re
from functools import partial

import pytest
import trio
import trio.testing
from test_connection import EOF, RawPeer, close_payload, open_raw
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from trio_websocket import ConnectionClosed, WebSocketConnection
from trio_websocket._core import lifecycle
from trio_websocket._core.lifecycle import State

ROLES = ["client", "server"]
GUARD = 5
BINARY_OPCODE = 0x2


async def peer_ends_tcp_if_server(peer: RawPeer, role: str) -> None:
    """After the closing handshake the server closes TCP first (RFC 6455
    7.1.1): when the library is the client, the raw peer plays the server."""
    if role == "client":
        await peer.stream.aclose()


async def settle() -> None:
    for _ in range(50):
        await trio.lowlevel.checkpoint()


def test_the_table_in_the_header_lists_every_state_with_its_rank() -> None:
    assert lifecycle.__doc__ is not None
    rows = re.findall(r"^``([A-Z_]+)``\s+(\d)\s", lifecycle.__doc__, flags=re.M)
    assert [name for name, _ in rows] == [state.name for state in State]
    assert [int(rank) for _, rank in rows] == [state.rank for state in State]


@pytest.mark.parametrize("role", ROLES)
async def test_a_new_connection_is_open(nursery: trio.Nursery, role: str) -> None:
    ws, _peer = await open_raw(nursery, role)
    assert ws._state is State.OPEN
    assert ws.closed is None


@pytest.mark.parametrize("role", ROLES)
async def test_states_never_move_back_up_the_table(nursery: trio.Nursery, role: str) -> None:
    ws, _peer = await open_raw(nursery, role)
    assert ws._advance(State.READ_DONE)
    for earlier in (State.OPEN, State.FAILING, State.CLOSING, State.FAILED, State.READ_DONE):
        assert not ws._advance(earlier)
        assert ws._state is State.READ_DONE


@pytest.mark.parametrize("role", ROLES)
async def test_our_close_is_closing_until_the_answer_then_ended(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    nursery.start_soon(ws.aclose, 4000, "bye")
    with trio.fail_after(GUARD):
        close = await peer.expect(CloseConnection)
    assert ws._state is State.CLOSING
    assert ws.closed is not None and ws.closed.code == 4000
    with pytest.raises(ConnectionClosed):
        await ws.send_message("too late")
    await peer.send(close.response())
    with trio.fail_after(GUARD):
        if role == "server":
            await peer.expect_eof()
        await peer_ends_tcp_if_server(peer, role)
        await ws.aclose()
    assert ws._state is State.ENDED


@pytest.mark.parametrize("role", ROLES)
async def test_the_peers_close_is_echoed_and_reading_is_done(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    await peer.send(CloseConnection(code=1000, reason="done"))
    with trio.fail_after(GUARD):
        echo = await peer.expect(CloseConnection)
    assert (echo.code, echo.reason) == (1000, "done")
    assert ws._state in (State.READ_DONE, State.ENDED)
    assert ws.close_received is not None and ws.close_sent is not None


@pytest.mark.parametrize("role", ROLES)
async def test_a_fault_behind_unread_messages_is_failing_until_they_are_read(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role, max_message_size=10)
    await peer.send(BytesMessage(data=b"first"))
    await peer.send(BytesMessage(data=b"x" * 11))  # too big
    await peer.send(BytesMessage(data=b"dropped"))
    await settle()
    assert ws._state is State.FAILING
    assert ws.closed is None  # not closed yet: a reply may still go out
    await ws.send_message("reply to first")
    with trio.fail_after(GUARD):
        assert await ws.get_message() == b"first"
        event = await peer.next_event()
        assert isinstance(event, TextMessage) and event.data == "reply to first"
        with pytest.raises(ConnectionClosed) as raised:
            await ws.get_message()  # the dropped message never arrives
        assert raised.value.reason.code == 1009
        close = await peer.expect(CloseConnection)
    assert close.code == 1009
    assert ws._state is State.FAILED  # waiting for the peer's answer, dropping
    await peer.send_frame(BINARY_OPCODE, b"still dropped")  # (by hand: wsproto would refuse)
    await peer.send(close.response())
    with trio.fail_after(GUARD):
        await peer_ends_tcp_if_server(peer, role)
        await ws.aclose()
    assert ws._state is State.ENDED


@pytest.mark.parametrize("role", ROLES)
async def test_a_bad_frame_with_nothing_unread_closes_at_once_and_reading_is_done(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    await peer.send_frame(0x3)  # a reserved opcode: the parser gives up
    with trio.fail_after(GUARD):
        close = await peer.expect(CloseConnection)
    assert close.code == 1002
    assert ws._state in (State.READ_DONE, State.ENDED)
    assert ws.closed is not None and ws.closed.code == 1002


@pytest.mark.parametrize("role", ROLES)
async def test_a_fault_while_closing_drops_the_peers_data(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role, max_message_size=10)
    nursery.start_soon(partial(ws.aclose, 1000, None, keep_receiving=True))
    with trio.fail_after(GUARD):
        close = await peer.expect(CloseConnection)
    await peer.send_frame(BINARY_OPCODE, b"x" * 11)  # too big, while closing
    await settle()
    assert ws._state is State.FAILED
    await peer.send(close.response())
    with trio.fail_after(GUARD):
        await peer_ends_tcp_if_server(peer, role)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


@pytest.mark.parametrize("role", ROLES)
async def test_a_lost_stream_is_aborted_then_ended_with_1006(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    await peer.stream.aclose()
    with trio.fail_after(GUARD):
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        await ws.aclose()
    assert ws.closed is not None and ws.closed.code == 1006
    assert ws._state is State.ENDED


@pytest.mark.parametrize("role", ROLES)
async def test_abort_drops_the_stream_without_a_close_frame(
    nursery: trio.Nursery, role: str
) -> None:
    ws, peer = await open_raw(nursery, role)
    ws._abort()
    assert ws._state is State.ABORTED
    with trio.fail_after(GUARD):
        assert await peer.next_event() == EOF
        await ws._wait_reader_ended()
    assert ws._state is State.ENDED
    assert ws.close_sent is None
    assert ws.closed is not None and ws.closed.code == 1006


async def test_a_close_frame_payload_helper_is_what_the_peer_parses() -> None:
    # (Guards the hand-built frames the tests above rely on.)
    assert close_payload(1000, "ok") == b"\x03\xe8ok"


def test_a_connection_class_is_the_layers_in_order() -> None:
    names = [cls.__name__ for cls in WebSocketConnection.__mro__[:4]]
    assert names == [
        "WebSocketConnection",
        "ConnectionReceiving",
        "ConnectionLifecycle",
        "ConnectionSending",
    ]


def test_raw_peer_is_the_suites() -> None:
    assert RawPeer.__module__ == "test_connection"
