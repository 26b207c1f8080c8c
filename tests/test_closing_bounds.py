"""Closing is bounded and honest (issue 13's defects 7 and 11).

- Leaving ``open_websocket...`` through a cancellation (a ``move_on_after``
  around it, a cancelled nursery as in the FAQ's SIGTERM recipe, a
  cancelled ``ReconnectingWebSocket.run``) sends a close frame, 1001: the
  server sees a clean close, not 1006. Against a server that never answers,
  that best effort ends within ``CLOSE_GRACE``.
- ``aclose()`` bounds its own wait (the entry point's
  ``disconnect_timeout``), even behind another task's send stuck on a peer
  that stopped reading; it then drops the connection, and ``closed`` says
  1006 when our close frame never went out.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import accept_by_hand, open_pair, read_request_head
from test_client import RawServer, live_tasks, start_close_watching_server, start_tcp
from test_connection_budgets import open_with_a_stuck_send

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ReconnectingWebSocket,
    WebSocketConnection,
    open_websocket_url,
)
from trio_websocket._core.config import CLOSE_GRACE, DEFAULT_DISCONNECT_TIMEOUT
from trio_websocket.testing import FaultyStream

GOING_AWAY = 1001


async def test_a_move_on_after_around_the_block_closes_with_going_away(
    nursery: trio.Nursery,
) -> None:
    server, seen, done = await start_close_watching_server(nursery)
    with trio.fail_after(10):
        with trio.move_on_after(0.2) as scope:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.get_message()  # waits until the scope's deadline
        assert scope.cancelled_caught
        await done.wait()
    (closed,) = seen
    assert closed.reason is not None and closed.reason.code == GOING_AWAY
    assert ws.close_sent is not None and ws.close_sent.code == GOING_AWAY
    assert ws.close_received is not None and ws.close_received.code == GOING_AWAY
    assert ws.closed is not None and ws.closed.code == GOING_AWAY


async def test_a_cancelled_nursery_closes_its_client_cleanly(nursery: trio.Nursery) -> None:
    # The FAQ's SIGTERM recipe: the task that loops over messages is
    # cancelled with the nursery it runs in.
    server, seen, done = await start_close_watching_server(nursery)
    connected = trio.Event()
    before = live_tasks()

    async def stay_connected() -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            connected.set()
            async for _message in ws:
                pass  # pragma: no cover - the server sends nothing

    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(stay_connected)
            await connected.wait()
            inner.cancel_scope.cancel()
        await done.wait()
    (closed,) = seen
    assert closed.reason is not None and closed.reason.code == GOING_AWAY
    await trio.testing.wait_all_tasks_blocked()
    assert live_tasks() - before == set()


async def test_cancelling_a_reconnecting_client_closes_its_connection_cleanly(
    nursery: trio.Nursery,
) -> None:
    server, seen, done = await start_close_watching_server(nursery)
    connected = trio.Event()

    async def on_connect(ws: WebSocketConnection) -> None:
        connected.set()

    async def consume(message: object) -> None:  # pragma: no cover - nothing is sent
        pass

    client = ReconnectingWebSocket(
        f"ws://127.0.0.1:{server.port}/", consume, on_connect=on_connect
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(client.run)
            await connected.wait()
            inner.cancel_scope.cancel()
        await done.wait()
    (closed,) = seen
    assert closed.reason is not None and closed.reason.code in (1000, GOING_AWAY)


async def test_a_cancelled_close_against_a_silent_server_ends_within_the_grace(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    raw = RawServer("accept_then_ignore")
    port = await raw.start(nursery)
    with trio.CancelScope() as scope:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            start = trio.current_time()
            mock_clock.autojump_threshold = 0
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() - start <= CLOSE_GRACE + 0.01
    with trio.fail_after(5):
        await raw.data_after_handshake.wait()  # our close frame reached it
    # Sent, never answered: both facts are visible.
    assert ws.close_sent is not None and ws.close_sent.code == GOING_AWAY
    assert ws.close_received is None


# ---------------------------------------------------------------------------
# aclose() behind a stuck send


async def test_aclose_behind_a_stuck_send_gives_up_and_says_so(nursery: trio.Nursery) -> None:
    # A real socket whose peer accepted, then stopped reading: a big send
    # fills the buffers and waits, holding the write turn; aclose() cannot
    # write its close frame and must not wait past disconnect_timeout.
    peer_done = trio.Event()

    async def accept_then_stop_reading(stream: trio.abc.Stream) -> None:
        head = await read_request_head(stream)
        await accept_by_hand(stream, head)
        with trio.move_on_after(10):
            await trio.sleep_forever()  # never reads
        peer_done.set()

    port = await start_tcp(nursery, accept_then_stop_reading)
    send_error: list[BaseException] = []
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", disconnect_timeout=0.5) as ws:

            async def stuck_send() -> None:
                try:
                    await ws.send_message(b"x" * 64 * 2**20)
                except ConnectionClosed as exc:
                    send_error.append(exc)

            async with trio.open_nursery() as senders:
                senders.start_soon(stuck_send)
                await trio.sleep(0.2)  # the send is stuck by now
                start = trio.current_time()
                await ws.aclose()
                took = trio.current_time() - start
    assert 0.4 <= took < 2
    # Our close frame never got out: closed does not claim a normal close.
    assert ws.close_sent is None
    assert ws.closed is not None and ws.closed.code == 1006
    assert "not sent" in (ws.closed.reason or "")
    assert len(send_error) == 1  # the stuck send learned the connection is gone


@pytest.mark.parametrize("role", ["client", "server"])
async def test_aclose_behind_a_stuck_send_on_any_stream_is_bounded(
    nursery: trio.Nursery, role: str, autojump_clock: trio.testing.MockClock
) -> None:
    ws, _peer = await open_with_a_stuck_send(nursery, role)
    start = trio.current_time()
    with trio.fail_after(DEFAULT_DISCONNECT_TIMEOUT + 1):
        await ws.aclose()
    assert trio.current_time() - start == pytest.approx(DEFAULT_DISCONNECT_TIMEOUT)
    assert ws.close_sent is None
    assert ws.closed is not None and ws.closed.code == 1006


async def test_a_close_frame_being_written_is_not_cut_off_by_the_peers_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Both sides close at once over a slow link: the server's close frame
    is still being written when the client's arrives, which ends the
    closing handshake, so the server's reader closes the stream; it waits
    for the write under way first (``_close_stream_gracefully``), within
    its grace period, so the client gets the frame that ``close_sent``
    reports. It used to close the stream under the write, which then
    failed: the client saw the connection end with no close frame (found by
    test_fuzz_fast_paths, where trio's scheduling made it happen at
    random)."""
    client_end, server_end = trio.testing.memory_stream_pair()
    slow = FaultyStream(server_end)
    client, server = await open_pair(nursery, client_end, slow)  # type: ignore[arg-type]
    slow.send_delay = 1.0
    nursery.start_soon(server.aclose)
    await trio.testing.wait_all_tasks_blocked()  # the server's frame is on its way
    with trio.fail_after(10):
        await client.aclose()
    assert server.close_sent == CloseReason(1000, None)
    assert client.close_received == CloseReason(1000, None)
