"""``_h2.stream.HTTP2Stream``'s receive side on its own, fed by hand: a
receive is a checkpoint whether or not it waits, and a cancelled receive
never loses data (the rest of the stream's behaviour is checked through
real connections in tests/test_http2.py and its neighbours)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

pytest.importorskip("h2", reason="the http2 extra is in requirements-dev.txt")

from trio_websocket._h2.stream import HTTP2Stream


class Owner:
    """A connection that only records the window handed back."""

    def __init__(self) -> None:
        self.acknowledged = 0

    def acknowledge(self, stream_id: int, size: int) -> None:
        self.acknowledged += size

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the stream asked its connection for {name}")


def new_stream() -> tuple[HTTP2Stream, Owner]:
    owner = Owner()
    return HTTP2Stream(owner, 1, 65535), owner  # type: ignore[arg-type]


async def test_a_receive_cancelled_while_waiting_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, owner = new_stream()
    with trio.move_on_after(1) as waiting:
        await stream.receive_some(100)
    assert waiting.cancelled_caught
    stream.data_received(b"late")
    assert await stream.receive_some(100) == b"late"
    assert owner.acknowledged == 4


async def test_a_receive_with_data_waiting_is_still_a_checkpoint() -> None:
    stream, _ = new_stream()
    stream.data_received(b"ready")
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive_some(100)
    assert scope.cancelled_caught  # cancelled, and the data kept
    assert await stream.receive_some(100) == b"ready"


async def test_a_receive_woken_by_data_returns_it_even_if_cancelled_right_after() -> None:
    stream, _ = new_stream()
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def reader(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                got.append(await stream.receive_some(100))
                await trio.sleep_forever()  # where the cancel lands

        scope = await nursery.start(reader)
        await trio.testing.wait_all_tasks_blocked()
        stream.data_received(b"data")  # wakes the reader...
        scope.cancel()  # ...which a cancel follows before it runs
    # Either the data came back, or it is still there: never lost.
    assert got == [b"data"] or await stream.receive_some(100) == b"data"
