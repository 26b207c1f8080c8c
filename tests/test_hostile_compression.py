"""Compression bombs: permessage-deflate messages that inflate far beyond
what went over the wire.

Many small compressed messages in one write, each inflating to just under
``max_message_size``, must not inflate past ``max_buffered_bytes`` while
the application reads nothing; a single message inflating past
``max_message_size`` closes with 1009 without ever being held whole; data
that does not inflate closes with 1007. Both roles: our server (TCP, a
WebSocketServer and wrap_server_stream in memory) against a raw client,
our client (memory, TCP) against a raw server.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing
from hostile_peers import (
    CLIENT_KINDS,
    OP_BINARY,
    OP_TEXT,
    SERVER_KINDS,
    AttackedServer,
    MemoryProbe,
    RawPeer,
    clock_for,
    close_code,
    deflated,
    raw_client,
    raw_server,
    run_client,
)

from trio_websocket import ConnectionClosed, ConnectionStatistics, WebSocketConnection

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

SLACK = 1024 * 1024
MAX_MESSAGE = 64 * 1024
BUDGET = 256 * 1024
OFFER = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
AGREED = b"permessage-deflate"
DEFLATE_OPTIONS = {
    "compression": "deflate",
    "max_message_size": MAX_MESSAGE,
    "max_buffered_bytes": BUDGET,
}

#: 200 messages of MAX_MESSAGE - 1 zero bytes, each ~70 bytes deflated:
#: 14 KB on the wire, 12.8 MB inflated.
BOMB_COUNT = 200
#: What the inbox may hold: the budget, plus the message that crossed it.
INBOX_BOUND = BUDGET + MAX_MESSAGE

@pytest.fixture
def clock(kind: str) -> trio.testing.MockClock | None:
    return clock_for(kind)


def many_bombs(peer: RawPeer) -> bytes:
    one = peer.frame(OP_BINARY, deflated(bytes(MAX_MESSAGE - 1)), rsv1=True)
    return one * BOMB_COUNT


def one_big_bomb(peer: RawPeer) -> bytes:
    return peer.frame(OP_BINARY, deflated(bytes(16 * MAX_MESSAGE)), rsv1=True)


def not_deflate(peer: RawPeer) -> bytes:
    # 0xff: a deflate block of the reserved type 3, which cannot be.
    return peer.frame(OP_TEXT, b"\xff\xff\xff\xff", rsv1=True)


@pytest.mark.parametrize(
    "kind", SERVER_KINDS
)
async def test_server_bombs_in_one_write_stay_within_budget(kind: str, clock: object) -> None:
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, **DEFLATE_OPTIONS).start(nursery)
        peer = await raw_client(await target.connect(), "/idle", OFFER)
        bombs = many_bombs(peer)
        with MemoryProbe() as probe:
            await peer.send(bombs)
            await trio.sleep(0.5 if kind == "tcp" else 2)
            connection = target.visit("idle").connection
            assert connection is not None
            stats = connection.statistics()
        await peer.reset()
        assert stats.buffered_bytes <= INBOX_BOUND
        assert probe.peak < INBOX_BOUND + MAX_MESSAGE + SLACK
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "kind", CLIENT_KINDS
)
async def test_client_bombs_in_one_write_stay_within_budget(kind: str, clock: object) -> None:
    seen: list[ConnectionStatistics] = []

    async def hostile(stream: trio.abc.Stream) -> None:
        peer = await raw_server(stream, AGREED)
        await peer.send(many_bombs(peer))
        await peer.read_close_code(answer=True)

    async def idle_app(ws: WebSocketConnection) -> None:
        await trio.sleep(0.5 if kind == "url" else 2)
        seen.append(ws.statistics())

    with trio.fail_after(10), MemoryProbe() as probe:
        run = await run_client(kind, hostile, idle_app, **DEFLATE_OPTIONS)
    assert run.error is None, repr(run.error)
    assert seen[0].buffered_bytes <= INBOX_BOUND
    assert probe.peak < INBOX_BOUND + MAX_MESSAGE + SLACK


#: Each attack: the frames, and the close code they must get.
CLOSING_ATTACKS = {
    "inflates-past-max-message-size": (one_big_bomb, 1009),
    "not-deflate": (not_deflate, 1007),
}


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("name", list(CLOSING_ATTACKS))
async def test_server_closes_on_a_bad_compressed_message(
    name: str, kind: str, clock: object
) -> None:
    attack, expected = CLOSING_ATTACKS[name]
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, **DEFLATE_OPTIONS).start(nursery)
        peer = await raw_client(await target.connect(), "/echo", OFFER)
        data = attack(peer)  # (built outside the probe: it holds 1 MiB to deflate)
        with trio.fail_after(3), MemoryProbe() as probe:
            await peer.send(data)
            code = await peer.read_close_code()
        await peer.reset()
        assert code == expected
        # Never the whole 1 MiB message: at most the limit, once.
        assert probe.peak < MAX_MESSAGE + SLACK
        visit = await target.visit_done("echo")
        assert isinstance(visit.error, ConnectionClosed), repr(visit.error)
        assert close_code(visit.error) == expected
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
@pytest.mark.parametrize("name", list(CLOSING_ATTACKS))
async def test_client_closes_on_a_bad_compressed_message(
    name: str, kind: str, clock: object
) -> None:
    attack, expected = CLOSING_ATTACKS[name]
    codes: list[int | None] = []
    # (Built outside the probe: it holds 1 MiB to deflate.)
    data = attack(RawPeer(trio.testing.lockstep_stream_pair()[0], is_client=False))

    async def hostile(stream: trio.abc.Stream) -> None:
        peer = await raw_server(stream, AGREED)
        await peer.send(data)
        codes.append(await peer.read_close_code())

    async def app(ws: WebSocketConnection) -> None:
        with trio.fail_after(3):
            await ws.get_message()

    with trio.fail_after(5), MemoryProbe() as probe:
        run = await run_client(kind, hostile, app, **DEFLATE_OPTIONS)
    assert codes == [expected]
    assert probe.peak < MAX_MESSAGE + SLACK
    assert not isinstance(run.error, BaseExceptionGroup), repr(run.error)
    assert isinstance(run.error, ConnectionClosed), repr(run.error)
    assert close_code(run.error) == expected
