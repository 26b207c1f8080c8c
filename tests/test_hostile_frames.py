"""Bad frames: every way a peer can break RFC 6455 after the handshake,
and the close code it must get for it.

1002 for a protocol error (a frame that cannot be, or cannot come now),
1007 for bad UTF-8, 1009 for a message (or a declared frame length) over
``max_message_size``. Each case runs against our server (TCP, a
WebSocketServer and wrap_server_stream in memory) and our client
(wrap_client_stream in memory, open_websocket_url over TCP): the hostile
peer reads the close code, the application sees the same code in one
``ConnectionClosed``, memory stays small, and the server goes on serving.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import trio
import trio.testing
from hostile_peers import (
    CLIENT_KINDS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    SERVER_KINDS,
    AttackedServer,
    MemoryProbe,
    RawPeer,
    clock_for,
    close_code,
    close_payload,
    raw_client,
    raw_server,
    run_client,
)

from trio_websocket import ConnectionClosed, WebSocketConnection

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

SLACK = 1024 * 1024
MAX_MESSAGE = 16 * 1024

Attack = Callable[[RawPeer], bytes]


@pytest.fixture
def clock(kind: str) -> trio.testing.MockClock | None:
    return clock_for(kind)


#: Each bad input (built for the peer's role) and the close code for it.
BAD_FRAMES: dict[str, tuple[Attack, int]] = {
    # A client must mask, a server must not: the wrong masking either way.
    "wrong-masking": (lambda p: p.frame(OP_TEXT, b"hi", masked=not p.is_client), 1002),
    "reserved-opcode": (lambda p: p.frame(0x3, b"?"), 1002),
    "reserved-control-opcode": (lambda p: p.frame(0xB, b"?"), 1002),
    "fragmented-ping": (lambda p: p.frame(OP_PING, b"a", fin=False), 1002),
    "ping-over-125-bytes": (lambda p: p.frame(OP_PING, b"a" * 126), 1002),
    "continuation-without-start": (lambda p: p.frame(OP_CONT, b"orphan"), 1002),
    "new-message-inside-another": (
        lambda p: p.frame(OP_TEXT, b"one", fin=False) + p.frame(OP_BINARY, b"two"),
        1002,
    ),
    "rsv2-set": (lambda p: p.frame(OP_BINARY, b"x", rsv2=True), 1002),
    "rsv1-without-deflate": (lambda p: p.frame(OP_BINARY, b"x", rsv1=True), 1002),
    "one-byte-close": (lambda p: p.frame(OP_CLOSE, b"\x03"), 1002),
    "close-code-999": (lambda p: p.frame(OP_CLOSE, close_payload(999)), 1002),
    "close-code-1006-on-the-wire": (lambda p: p.frame(OP_CLOSE, close_payload(1006)), 1002),
    "junk-bytes": (lambda p: bytes(range(256)), 1002),
    "bad-utf8-text": (lambda p: p.frame(OP_TEXT, b"ok \xff\xfe"), 1007),
    "bad-utf8-across-fragments": (
        lambda p: p.frame(OP_TEXT, b"ok \xe2\x82", fin=False) + p.frame(OP_CONT, b"\x28"),
        1007,
    ),
    "bad-utf8-close-reason": (lambda p: p.frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),
    "message-too-big": (lambda p: p.frame(OP_BINARY, b"b" * (MAX_MESSAGE + 1)), 1009),
    "fragments-too-big": (
        lambda p: p.frame(OP_TEXT, b"t" * MAX_MESSAGE, fin=False) + p.frame(OP_CONT, b"t"),
        1009,
    ),
    # A header that declares 4 EiB: refused once more than the limit came.
    "declared-length-4-eib": (
        lambda p: p.frame(OP_BINARY, b"", length=2**62) + b"\0" * (MAX_MESSAGE + 1),
        1009,
    ),
    # A 64-bit length with its top bit set (RFC 6455 5.2 forbids it).
    "declared-length-top-bit": (lambda p: p.frame(OP_BINARY, b"", length=2**63), 1002),
}


async def attack_and_read_close(peer: RawPeer, attack: Attack) -> int | None:
    code: list[int | None] = []

    async def read() -> None:
        code.append(await peer.read_close_code())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        try:
            await peer.send(attack(peer))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    return code[0]


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_server_closes_with_the_right_code(name: str, kind: str, clock: object) -> None:
    attack, expected = BAD_FRAMES[name]
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, max_message_size=MAX_MESSAGE).start(nursery)
        peer = await raw_client(await target.connect(), "/echo")
        with trio.fail_after(3), MemoryProbe() as probe:
            code = await attack_and_read_close(peer, attack)
        await peer.reset()
        assert code == expected
        assert probe.peak < SLACK
        visit = await target.visit_done("echo")
        assert isinstance(visit.error, ConnectionClosed), repr(visit.error)
        assert close_code(visit.error) == expected
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_client_closes_with_the_right_code(name: str, kind: str, clock: object) -> None:
    attack, expected = BAD_FRAMES[name]
    codes: list[int | None] = []

    async def hostile(stream: trio.abc.Stream) -> None:
        peer = await raw_server(stream)
        codes.append(await attack_and_read_close(peer, attack))

    async def app(ws: WebSocketConnection) -> None:
        with trio.fail_after(3):
            for _ in range(10):
                await ws.get_message()

    with trio.fail_after(5), MemoryProbe() as probe:
        run = await run_client(kind, hostile, app, max_message_size=MAX_MESSAGE)
    assert codes == [expected]
    assert probe.peak < SLACK
    assert not isinstance(run.error, BaseExceptionGroup), repr(run.error)
    assert isinstance(run.error, ConnectionClosed), repr(run.error)
    assert close_code(run.error) == expected
