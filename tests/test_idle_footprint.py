"""What keeps an idle connection small (issue 3) still behaves exactly like
what it replaced: wsproto's event queue, the inbox's parked receivers and
the connection's lazily made "reader ended" event."""

from __future__ import annotations

from collections import deque

import pytest
import trio
import trio.testing
from conftest import open_pair
from server_fixtures import read_until_eof, start_memory_server, upgrade_request
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, TextMessage

from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from trio_websocket._core.lifecycle import State
from trio_websocket._core.waiters import Waiters
from trio_websocket._wire.frame_decoder import _EventList, use_compact_event_queue


def test_compact_event_queue_is_active_with_the_pinned_wsproto() -> None:
    # If a wsproto upgrade renames or retypes the queue, the connection
    # keeps wsproto's deque (correct, only bigger): this test notices.
    protocol = Connection(ConnectionType.SERVER)
    assert use_compact_event_queue(protocol)
    assert type(protocol._events) is _EventList


def test_compact_event_queue_leaves_an_unknown_layout_alone() -> None:
    class Unusual:
        def __init__(self) -> None:
            self._events: list[object] = []

    assert not use_compact_event_queue(Unusual())  # type: ignore[arg-type]


def test_compact_event_queue_keeps_queued_events_and_their_order() -> None:
    protocol = Connection(ConnectionType.SERVER)
    first, second = CloseConnection(code=1000), CloseConnection(code=1006)
    protocol._events = deque([first, second])
    assert use_compact_event_queue(protocol)
    assert list(protocol.events()) == [first, second]


def test_end_of_stream_still_reports_an_abnormal_close() -> None:
    # The one place wsproto queues an event: the stream ended mid-connection.
    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER)
    assert use_compact_event_queue(server)
    server.receive_data(client.send(TextMessage(data="last words")))
    server.receive_data(None)
    events = list(server.events())
    assert [type(event) for event in events] == [CloseConnection, TextMessage]
    assert events[0].code == 1006  # type: ignore[attr-defined]
    assert events[1].data == "last words"  # type: ignore[attr-defined]
    assert list(server.events()) == []


async def test_waiters_wake_every_parked_task() -> None:
    waiters = Waiters()
    woken: list[int] = []

    async def wait(number: int) -> None:
        await waiters.park()
        woken.append(number)

    async with trio.open_nursery() as nursery:
        for number in range(4):
            nursery.start_soon(wait, number)
            await trio.testing.wait_all_tasks_blocked()
        assert waiters
        waiters.unpark_all()
        assert not waiters
    # (Trio runs the woken tasks of one batch in an order of its choosing.)
    assert sorted(woken) == [0, 1, 2, 3]


@pytest.mark.parametrize("cancelled", [0, 1, 2])
async def test_a_cancelled_waiter_leaves_without_a_trace(cancelled: int) -> None:
    waiters = Waiters()
    woken: list[int] = []
    scopes = [trio.CancelScope() for _ in range(3)]

    async def wait(number: int) -> None:
        with scopes[number]:
            await waiters.park()
            woken.append(number)

    async with trio.open_nursery() as nursery:
        for number in range(3):
            nursery.start_soon(wait, number)
            await trio.testing.wait_all_tasks_blocked()
        scopes[cancelled].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        waiters.unpark_all()
    assert sorted(woken) == [number for number in range(3) if number != cancelled]
    assert not waiters


async def test_a_lone_cancelled_waiter_empties_the_set() -> None:
    waiters = Waiters()
    with trio.move_on_after(0.01):
        await waiters.park()
    assert not waiters
    waiters.unpark_all()  # nothing to wake, nothing breaks


async def test_two_receivers_of_one_connection_both_get_messages(
    nursery: trio.Nursery,
) -> None:
    # The inbox parks both (the second beyond the single slot).
    client, server = await open_pair(nursery)
    got: list[object] = []

    async def receive() -> None:
        got.append(await server.get_message())

    async with trio.open_nursery() as receivers:
        receivers.start_soon(receive)
        receivers.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_message("one")
        await client.send_message("two")
    assert sorted(map(str, got)) == ["one", "two"]


async def test_aclose_after_the_reader_ended_returns_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await open_pair(nursery)
    await client.aclose()
    with pytest.raises(ConnectionClosed):
        await server.get_message()
    assert server._state is State.ENDED or server._finished is not None
    with trio.fail_after(1):
        await server.aclose()
        await server.aclose()
    assert server._state is State.ENDED


#: A masked text frame "hello", as a client sends it.
MASKED_HELLO = bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(
    byte ^ (1, 2, 3, 4)[index % 4] for index, byte in enumerate(b"hello")
)
#: A masked close frame with code 1000.
MASKED_CLOSE = bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2])


# The server runs each connection's reader in the handlers' nursery, not in
# a nursery of the connection's own; the connection's task must still
# outlive the reader.


class TaskExits(trio.abc.Instrument):
    """Records, in order, which server connection tasks and readers exit."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(" reader"):
            self.order.append("reader")
        elif task.name.endswith("._handle_connection"):
            self.order.append("connection")


async def test_a_cancelled_handler_leaves_no_reader_behind(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    opened: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        opened.append(await request.accept())
        await trio.sleep_forever()

    exits = TaskExits()
    trio.lowlevel.add_instrument(exits)
    server, listener = await start_memory_server(nursery, handler)
    client = await listener.connect()
    await client.send_all(upgrade_request())
    await trio.testing.wait_all_tasks_blocked()
    assert server.connection_count == 1
    # The client never answers the close frame: the handler is cancelled at
    # the deadline, and its connection aborted.
    report = await server.aclose(timeout=1)
    trio.lowlevel.remove_instrument(exits)
    assert report.forced == 1
    assert opened[0]._state is State.ENDED
    # The connection's task ended after its reader, not before.
    assert exits.order == ["reader", "connection"]
    assert opened[0].closed is not None
    received = await read_until_eof(client)
    assert b" 101 " in received


async def test_readers_run_in_the_handler_nursery_and_end_with_their_handler(
    nursery: trio.Nursery,
) -> None:
    finished: list[WebSocketConnection] = []
    readers_seen: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        tasks = trio.lowlevel.current_task().parent_nursery.child_tasks  # type: ignore[union-attr]
        readers_seen.append(any(task.name.endswith(" reader") for task in tasks))
        finished.append(ws)

    async with trio.open_nursery() as handlers:
        server, listener = await start_memory_server(nursery, handler, handler_nursery=handlers)
        client = await listener.connect()
        await client.send_all(upgrade_request())
        with trio.fail_after(5):
            received = b""
            while b"\r\n\r\n" not in received:
                received += await client.receive_some()
            await client.send_all(MASKED_HELLO + MASKED_CLOSE)
            received += await read_until_eof(client)
            await trio.testing.wait_all_tasks_blocked()
        assert received.endswith(b"\x88\x02\x03\xe8")
        assert server.connection_count == 0
        assert finished[0]._state is State.ENDED
        assert readers_seen == [True]
        assert not handlers.child_tasks
        await server.aclose()


def _coroutine_chain(task: trio.lowlevel.Task) -> list[str]:
    """The qualified names of the coroutines a parked task is suspended in,
    outermost first."""
    names = []
    awaited: object = task.coro
    while awaited is not None:
        if hasattr(awaited, "cr_code") or hasattr(awaited, "gi_code"):
            # (The coroutine's own __qualname__: code objects have one only
            # from Python 3.11.)
            names.append(awaited.__qualname__)  # type: ignore[attr-defined]
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return names


async def test_an_idle_receiver_waits_in_get_message_with_no_frame_below_it(
    nursery: trio.Nursery,
) -> None:
    # A handler waiting for a message that does not come keeps the frames
    # it is suspended in for as long as the connection is idle: get_message
    # waits in the inbox itself, with no helper coroutine of its own
    # between (~200 bytes per idle connection).
    client, server = await open_pair(nursery)
    got: list[object] = []
    tasks: list[trio.lowlevel.Task] = []

    async def receive() -> None:
        tasks.append(trio.lowlevel.current_task())
        got.append(await server.get_message())

    nursery.start_soon(receive)
    await trio.testing.wait_all_tasks_blocked()
    ours = [
        name
        for name in _coroutine_chain(tasks[0])
        if name.startswith(("WebSocketConnection.", "Connection", "Inbox."))
    ]
    assert ours == ["WebSocketConnection.get_message"]
    await client.send_message("woken")
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["woken"]
