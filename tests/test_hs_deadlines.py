"""The server's one timer for the deadlines of its handshake phases
(``_server.deadlines``): every phase still ends exactly at its
``connect_timeout``, and an idle connection keeps nothing of its phase's
deadline (no stale entry in trio's heap of deadlines)."""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing
from conftest import echo_handler
from server_fixtures import read_until_eof, start_memory_server, upgrade_request

from trio_websocket import WebSocketRequest
from trio_websocket._server.deadlines import HandshakeDeadlines


def deadline_heap() -> list[tuple[float, int, trio.CancelScope]]:
    """trio's heap of deadlines (private; what an idle connection's stale
    deadline would stay in)."""
    from trio._core._run import GLOBAL_RUN_CONTEXT

    heap: list[tuple[float, int, trio.CancelScope]] = GLOBAL_RUN_CONTEXT.runner.deadlines._heap
    return heap


async def wait_until_cancelled(scope: trio.CancelScope, ended: dict[str, float], name: str) -> None:
    with scope:
        await trio.sleep_forever()
    ended[name] = trio.current_time()


# ---------------------------------------------------------------------------
# The timer


async def test_each_scope_is_cancelled_exactly_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = HandshakeDeadlines()
    ended: dict[str, float] = {}
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(deadlines.run)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            scopes = {name: trio.CancelScope() for name in "abcd"}
            for offset, name in enumerate("abcd"):
                nursery.start_soon(wait_until_cancelled, scopes[name], ended, name)
                deadlines.bound(scopes[name], start + offset + 10)
                await trio.sleep(1)
            deadlines.release(scopes["b"])  # (done in time)
            await trio.sleep(20)
            assert ended == {"a": start + 10, "c": start + 12, "d": start + 13}
            assert not scopes["b"].cancel_called
            scopes["b"].cancel()
            # Woken again after it had nothing to keep.
            late = trio.CancelScope()
            nursery.start_soon(wait_until_cancelled, late, ended, "late")
            deadlines.bound(late, trio.current_time() + 5)
            await trio.sleep(6)
            assert ended["late"] == start + 24 + 5
            nursery.cancel_scope.cancel()


async def test_a_deadline_earlier_than_one_kept_goes_on_its_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = HandshakeDeadlines()
    ended: dict[str, float] = {}
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(deadlines.run)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            later, earlier = trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(wait_until_cancelled, later, ended, "later")
            nursery.start_soon(wait_until_cancelled, earlier, ended, "earlier")
            deadlines.bound(later, start + 10)
            deadlines.bound(earlier, start + 5)
            assert earlier.deadline == start + 5  # its own, not the timer's
            assert later.deadline == math.inf
            await trio.sleep(20)
            assert ended == {"earlier": start + 5, "later": start + 10}
            nursery.cancel_scope.cancel()


async def test_without_the_timer_running_deadlines_go_on_their_scopes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = HandshakeDeadlines()
    scope = trio.CancelScope()
    deadlines.bound(scope, trio.current_time() + 5)
    assert scope.deadline == trio.current_time() + 5
    deadlines.release(scope)
    assert scope.deadline == math.inf


async def test_deadlines_kept_when_the_timer_stops_go_on_their_scopes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = HandshakeDeadlines()
    ended: dict[str, float] = {}
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            timer = trio.CancelScope()
            nursery.start_soon(_run_in, timer, deadlines)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            scope = trio.CancelScope()
            nursery.start_soon(wait_until_cancelled, scope, ended, "kept")
            deadlines.bound(scope, start + 10)
            assert scope.deadline == math.inf
            timer.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert scope.deadline == start + 10
            await trio.sleep(20)
            assert ended == {"kept": start + 10}


async def _run_in(scope: trio.CancelScope, deadlines: HandshakeDeadlines) -> None:
    with scope:
        await deadlines.run()


# ---------------------------------------------------------------------------
# The server


async def test_stalled_handshakes_are_each_dropped_exactly_at_connect_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def never_called(request: WebSocketRequest) -> None:
        raise AssertionError("a stalled request reached the handler")

    _, listener = await start_memory_server(nursery, never_called, connect_timeout=10)
    start = trio.current_time()
    dropped: dict[int, float] = {}

    async def stall(number: int) -> None:
        stream = await listener.connect()
        await stream.send_all(upgrade_request()[:20])  # never finished
        assert await read_until_eof(stream) == b""  # no answer
        dropped[number] = trio.current_time()

    with trio.fail_after(100):
        for number in range(3):
            nursery.start_soon(stall, number)
            await trio.sleep(3)
        await trio.sleep(20)
    assert dropped == {number: start + 3 * number + 10 for number in range(3)}


async def test_idle_connections_keep_no_entry_in_trios_deadline_heap(
    nursery: trio.Nursery,
) -> None:
    server, listener = await start_memory_server(nursery, echo_handler, connect_timeout=60)
    clients: list[Any] = []
    with trio.fail_after(20):
        await trio.testing.wait_all_tasks_blocked()
        before = len(deadline_heap())
        for _ in range(20):
            stream = await listener.connect()
            await stream.send_all(upgrade_request())
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some()
            assert head.startswith(b"HTTP/1.1 101")
            clients.append(stream)
        await trio.testing.wait_all_tasks_blocked()
        assert server.connection_count == 20
        # (The timer's one sleep at most: none for each connection.)
        assert len(deadline_heap()) <= before + 1
        for stream in clients:
            await stream.aclose()


async def test_a_process_request_hook_sees_the_phases_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[float] = []

    def hook(request: Any) -> None:
        seen.append(trio.current_effective_deadline() - trio.current_time())

    _, listener = await start_memory_server(
        nursery, echo_handler, connect_timeout=7, process_request=hook
    )
    with trio.fail_after(20):
        stream = await listener.connect()
        await stream.send_all(upgrade_request())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some()
        assert head.startswith(b"HTTP/1.1 101")
        assert seen == [7]
        await stream.aclose()
