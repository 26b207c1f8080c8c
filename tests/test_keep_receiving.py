"""``aclose(keep_receiving=True)``: closing without losing the messages the
peer sent before it answered the close (what the CLI needs at Ctrl-D)."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from conftest import accept_by_hand, read_request_head
from wsproto.events import CloseConnection

from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from trio_websocket.testing import open_memory_pair


def text_frame(text: str) -> bytes:
    payload = text.encode("utf-8")
    return bytes((0x81, len(payload))) + payload


async def late_answering_peer(stream: trio.abc.Stream) -> None:
    """A server that sends "unread" at once and, when the client's close
    arrives, two more messages before its answer."""
    connection = await accept_by_hand(stream, await read_request_head(stream))
    await stream.send_all(text_frame("unread"))
    for _ in range(1000):
        data = await stream.receive_some()
        if not data:
            return
        connection.receive_data(data)
        for event in connection.events():
            if isinstance(event, CloseConnection):
                await stream.send_all(text_frame("in flight 1") + text_frame("in flight 2"))
                await stream.send_all(connection.send(event.response()))
                await stream.aclose()
                return


async def client_with_late_peer(nursery: trio.Nursery) -> WebSocketConnection:
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(late_answering_peer, server_end)
    client = await wrap_client_stream(nursery, client_end, "example.com", "/")
    await trio.testing.wait_all_tasks_blocked()  # "unread" has arrived
    return client


async def test_keep_receiving_delivers_unread_and_in_flight_messages(
    nursery: trio.Nursery,
) -> None:
    client = await client_with_late_peer(nursery)
    await client.aclose(keep_receiving=True)
    assert client.closed is not None and client.closed.code == 1000
    assert await client.get_message() == "unread"
    assert await client.get_message() == "in flight 1"
    assert await client.get_message() == "in flight 2"
    with pytest.raises(ConnectionClosed) as caught:
        await client.get_message()
    assert caught.value.reason.code == 1000


async def test_a_reader_task_sees_everything_while_another_closes(nursery: trio.Nursery) -> None:
    client = await client_with_late_peer(nursery)
    seen: list[object] = []

    async def read_all() -> None:
        try:
            while True:
                seen.append(await client.get_message())
        except ConnectionClosed:
            seen.append("closed")

    async with trio.open_nursery() as both:
        both.start_soon(read_all)
        both.start_soon(partial(client.aclose, keep_receiving=True))
    assert seen == ["unread", "in flight 1", "in flight 2", "closed"]


async def test_a_plain_close_still_discards_as_before(nursery: trio.Nursery) -> None:
    client = await client_with_late_peer(nursery)
    await client.aclose()
    with pytest.raises(ConnectionClosed):
        await client.get_message()


async def test_sending_after_close_is_refused_either_way() -> None:
    async with open_memory_pair() as (client, server):
        await server.send_message("waiting")
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose(4000, "done", keep_receiving=True)
        with pytest.raises(ConnectionClosed):
            await client.send_message("no")
        assert await client.get_message() == "waiting"
        with pytest.raises(ConnectionClosed) as caught:
            await client.get_message()
        assert caught.value.reason.code == 4000
