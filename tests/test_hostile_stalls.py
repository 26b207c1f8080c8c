"""Stalls: peers that read slowly or not at all, and peers that stop
answering.

Our application keeps sending to a peer that never reads: its sends must
block (backpressure) with a bounded outbox, pings the peer sends meanwhile
must not pile up pongs without bound, ``aclose()`` must still end, and
the peer's reset must free everything. A slow reader still gets the close
handshake done; a peer that stops answering pings is closed with 1011 by
the keepalive.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing
from hostile_peers import (
    MEMORY_SERVER_KINDS,
    OP_CLOSE,
    OP_PING,
    ROLES,
    SERVER_KINDS,
    SOCKET_KINDS,
    AttackedServer,
    MemoryProbe,
    RawPeer,
    clock_for,
    close_code,
    close_payload,
    connect_raw,
    raw_client,
    raw_server,
    run_client,
)

from trio_websocket import ConnectionClosed, WebSocketConnection
from trio_websocket._core.config import DEFAULT_DISCONNECT_TIMEOUT

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

#: See test_hostile_floods: what a connection holds besides its bounds.
SLACK = 1024 * 1024
#: The outbox cap (queued pongs, the close frame) plus the frame being
#: written: the most a blocked connection may hold of unsent frames.
OUTBOX_CAP = 256 * 1024 + 64 * 1024
BLAST_FRAME = 65536 + 10


@pytest.fixture
def clock(kind: str) -> trio.testing.MockClock | None:
    return clock_for(kind)


def seconds(kind: str, memory: float, sockets: float) -> float:
    """A wait: ``memory`` seconds of autojump time, ``sockets`` real ones."""
    return sockets if kind in SOCKET_KINDS else memory


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_peer_that_never_reads(kind: str, clock: object) -> None:
    """The handler sends 64 KiB messages to a peer that reads nothing: its
    send blocks with a bounded outbox; the peer's reset then ends it with
    1006 at once."""
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind).start(nursery)
        with MemoryProbe() as probe:
            peer = await raw_client(await target.connect(), "/blast")
            await trio.sleep(seconds(kind, 5, 0.5))
            visit = target.visit("blast")
            assert visit.connection is not None
            stats = visit.connection.statistics()
        assert stats.unsent_bytes <= OUTBOX_CAP + BLAST_FRAME
        assert probe.peak < OUTBOX_CAP + 2 * BLAST_FRAME + SLACK
        await peer.reset()
        with trio.fail_after(1):
            await visit.done.wait()
        assert isinstance(visit.error, ConnectionClosed)
        assert visit.closed is not None and visit.closed.code == 1006
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", MEMORY_SERVER_KINDS)
@pytest.mark.parametrize(
    "mode", ["idle", "blast"], ids=["app-idle", "app-sending"]
)
async def test_pings_from_a_peer_that_never_reads(kind: str, mode: str, clock: object) -> None:
    """The peer never reads and pings (125-byte payloads), while the
    handler is idle or its send is blocked on the peer: the pongs it is
    owed must stay within the outbox cap (the server reads less), not
    pile up."""
    pings = 10_000  # 1.3 MB of pongs, if nothing held them back
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind).start(nursery)
        with MemoryProbe() as probe:
            peer = await raw_client(await target.connect(), "/" + mode)
            await trio.sleep(1)
            chunk = peer.frame(OP_PING, b"p" * 125) * 500
            with trio.move_on_after(10):  # a flood held back stalls: fine
                for _ in range(pings // 500):
                    await peer.send(chunk)
            visit = target.visit(mode)
            assert visit.connection is not None
            stats = visit.connection.statistics()
        assert stats.unsent_bytes <= OUTBOX_CAP + BLAST_FRAME
        assert probe.peak < OUTBOX_CAP + 2 * BLAST_FRAME + SLACK
        await peer.reset()
        target.release.set()
        with trio.fail_after(1):
            await visit.done.wait()
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "pings", [0, 10_000], ids=["no-pings", "pings"]
)
async def test_client_sending_to_a_server_that_never_reads(
    pings: int, autojump_clock: object
) -> None:
    """Our client's send blocks on a server that reads nothing (and may
    ping): a bounded outbox, and the server's reset ends the stuck send
    with 1006 at once."""
    async with trio.open_nursery() as nursery:
        with MemoryProbe() as probe:
            ws, peer = await connect_raw(nursery, "client")
            errors: list[BaseException] = []
            sender_done = trio.Event()

            async def blast() -> None:
                try:
                    for _ in range(1000):
                        await ws.send_message(b"\xab" * 65536)
                except ConnectionClosed as exc:
                    errors.append(exc)
                finally:
                    sender_done.set()

            nursery.start_soon(blast)
            await trio.sleep(1)
            chunk = peer.frame(OP_PING, b"p" * 125) * 500
            with trio.move_on_after(10):
                for _ in range(pings // 500):
                    await peer.send(chunk)
            stats = ws.statistics()
        assert stats.unsent_bytes <= OUTBOX_CAP + BLAST_FRAME + 4  # (masked: 4 more)
        assert probe.peak < OUTBOX_CAP + 2 * BLAST_FRAME + SLACK
        await peer.reset()
        with trio.fail_after(1):
            await sender_done.wait()
        assert len(errors) == 1 and close_code(errors[0]) == 1006, errors
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ROLES)
async def test_aclose_while_another_send_is_stuck(kind: str, clock: object) -> None:
    """One task's send is stuck on a peer that never reads; another task
    closes: aclose() ends within its own bound, disconnect_timeout (the close frame
    cannot get out; the connection is aborted) and the stuck send raises
    ConnectionClosed."""
    async with trio.open_nursery() as nursery:
        ws, _peer = await connect_raw(nursery, kind)
        errors: list[BaseException] = []
        sender_done = trio.Event()

        async def send_forever() -> None:
            try:
                await ws.send_message(b"x" * 2**20)
            except BaseException as exc:
                errors.append(exc)
                if not isinstance(exc, ConnectionClosed):
                    raise
            finally:
                sender_done.set()

        nursery.start_soon(send_forever)
        await trio.sleep(1)
        # (aclose's own bound: disconnect_timeout, 60 s for wrap_*.)
        with trio.fail_after(DEFAULT_DISCONNECT_TIMEOUT + 1):
            await ws.aclose()
        with trio.fail_after(1):
            await sender_done.wait()
        assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed), errors
        assert ws.closed is not None
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ROLES)
async def test_aclose_after_one_unread_ping(kind: str, clock: object) -> None:
    """The peer pings once and never reads: our pong is stuck on the way
    out, and aclose() must still end within disconnect_timeout."""
    async with trio.open_nursery() as nursery:
        ws, peer = await connect_raw(nursery, kind)
        await peer.send_frame(OP_PING, b"are you there")
        await trio.sleep(1)
        # (aclose's own bound: disconnect_timeout, 60 s for wrap_*.)
        with trio.fail_after(DEFAULT_DISCONNECT_TIMEOUT + 1):
            await ws.aclose()
        assert ws.closed is not None
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_slow_reader_still_closes_cleanly(kind: str, clock: object) -> None:
    """A peer reads the handler's 64 KiB messages 4 KiB at a time: memory
    stays bounded, and when it closes (still reading), it gets the echo
    of its close (1000) after the data still on its way."""
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind).start(nursery)
        with MemoryProbe() as probe:
            peer = await raw_client(await target.connect(), "/blast")
            frames = 0
            with trio.move_on_after(seconds(kind, 3, 0.5)):
                while await peer.next_frame(read_size=4096, pause=0.01) is not None:
                    frames += 1
            code: list[int | None] = []

            async def read_close() -> None:
                code.append(await peer.read_close_code())

            async with trio.open_nursery() as closing:
                closing.start_soon(read_close)
                await peer.send_frame(OP_CLOSE, close_payload(1000))
        assert frames > 0
        assert code == [1000]
        assert probe.peak < OUTBOX_CAP + 2 * BLAST_FRAME + SLACK
        visit = target.visit("blast")
        with trio.fail_after(1):
            await visit.done.wait()
        assert visit.closed is not None and visit.closed.code == 1000
        await peer.reset()
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


KEEPALIVE = {"ping_interval": 0.3, "ping_timeout": 0.3}


async def read_ignoring_pings(peer: RawPeer) -> int | None:
    """Read frames and answer no ping; the close code read (None: none)."""
    return await peer.read_close_code()


@pytest.mark.parametrize("kind", SERVER_KINDS)
async def test_server_keepalive_closes_a_silent_client(kind: str, clock: object) -> None:
    async with trio.open_nursery() as nursery:
        target = await AttackedServer(kind, **KEEPALIVE).start(nursery)
        peer = await raw_client(await target.connect(), "/echo")
        with trio.fail_after(3), MemoryProbe() as probe:
            code = await read_ignoring_pings(peer)
        assert code == 1011
        assert probe.peak < SLACK
        visit = target.visit("echo")
        with trio.fail_after(3):
            await visit.done.wait()
        assert visit.closed is not None and visit.closed.code == 1011
        await peer.reset()
        target.assert_no_groups()
        await target.round_trip()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["wrap", "url"])
async def test_client_keepalive_closes_a_silent_server(kind: str, clock: object) -> None:
    codes: list[int | None] = []

    async def hostile(stream: trio.abc.Stream) -> None:
        peer = await raw_server(stream)
        codes.append(await read_ignoring_pings(peer))

    async def wait_for_messages(ws: WebSocketConnection) -> None:
        await ws.get_message()

    with trio.fail_after(5), MemoryProbe() as probe:
        run = await run_client(kind, hostile, wait_for_messages, **KEEPALIVE)
    assert codes == [1011]
    assert probe.peak < SLACK
    assert isinstance(run.error, ConnectionClosed), repr(run.error)
    assert not isinstance(run.error, BaseExceptionGroup)
    assert close_code(run.error) == 1011
