"""The public testing kit, ``trio_websocket.testing``: the in-memory pair and
the fault-injecting stream wrapper behave as documented (docs/testing.rst)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing

from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketRequest
from trio_websocket.testing import (
    CLOSE_TIMEOUT,
    FaultyStream,
    memory_pair,
    open_memory_client,
    open_memory_pair,
)


async def test_open_memory_pair_connects_both_ways_and_closes_on_exit() -> None:
    async with open_memory_pair(
        host="example.org",
        resource="/chat?room=1",
        subprotocols=["v2", "v1"],
        accept_subprotocol="v1",
    ) as (client, server):
        assert client.is_client and server.is_server
        assert server.path == "/chat?room=1"
        assert client.subprotocol == server.subprotocol == "v1"
        await client.send_message("ping?")
        assert await server.get_message() == "ping?"
        await server.send_message(b"\x00\x01")
        assert await client.get_message() == b"\x00\x01"
    assert client.closed is not None and client.closed.code == 1000
    assert server.closed is not None and server.closed.code == 1000


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    with pytest.raises(KeyError) as caught:
        async with open_memory_pair() as (client, server):
            raise KeyError("mine")
    assert caught.value.args == ("mine",)
    assert client.closed is not None and server.closed is not None


async def test_a_failed_handshake_raises_one_exception() -> None:
    with pytest.raises(ValueError, match="did not offer"):
        async with open_memory_pair(accept_subprotocol="never-offered"):
            pytest.fail("the block must not run")  # pragma: no cover


async def test_options_reach_the_entry_points(nursery: trio.Nursery) -> None:
    client, server = await memory_pair(nursery, server_options={"max_message_size": 10})
    await client.send_message("x" * 11)
    with pytest.raises(ConnectionClosed):
        await server.get_message()
    with pytest.raises(ConnectionClosed) as caught:
        await client.get_message()
    assert caught.value.reason.code == 1009


async def test_memory_pair_wants_both_streams_or_neither(nursery: trio.Nursery) -> None:
    end, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="both"):
        await memory_pair(nursery, client_stream=end)


async def test_memory_pair_runs_the_readers_in_the_given_nursery() -> None:
    async with trio.open_nursery() as nursery:
        client, server = await memory_pair(nursery)
        await server.send_message("still here")
        assert await client.get_message() == "still here"
        await client.aclose()
    # The nursery ended: no reader was left running.
    assert server.closed is not None


async def test_send_delay_slows_each_send(autojump_clock: trio.testing.MockClock) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    slow = FaultyStream(client_end, send_delay=0.5)
    async with open_memory_pair(slow, server_end) as (client, server):
        started = trio.current_time()
        await client.send_message("late")
        assert await server.get_message() == "late"
        assert trio.current_time() - started == pytest.approx(0.5)
        slow.send_delay = 0
        started = trio.current_time()
        await client.send_message("on time")
        assert await server.get_message() == "on time"
        assert trio.current_time() == started


async def test_receive_delay_slows_each_receive(autojump_clock: trio.testing.MockClock) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    slow = FaultyStream(server_end, receive_delay=2.0)
    async with open_memory_pair(client_end, slow) as (client, server):
        started = trio.current_time()
        await client.send_message("hello")
        assert await server.get_message() == "hello"
        assert trio.current_time() - started >= 2.0


async def test_cut_breaks_both_sides() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    faulty = FaultyStream(server_end)
    async with open_memory_pair(client_end, faulty) as (client, server):
        await faulty.cut()
        assert faulty.is_cut
        with pytest.raises(ConnectionClosed) as on_server:
            await server.get_message()
        with pytest.raises(ConnectionClosed) as on_client:
            await client.get_message()
        assert on_server.value.reason.code == 1006
        assert on_client.value.reason.code == 1006
        with pytest.raises(ConnectionClosed):
            await client.send_message("too late")


async def test_cut_after_lets_the_first_bytes_through() -> None:
    near, far = trio.testing.memory_stream_pair()
    faulty = FaultyStream(near, cut_after=5)
    await faulty.send_all(b"012")
    with pytest.raises(trio.BrokenResourceError):
        await faulty.send_all(b"3456789")
    assert faulty.bytes_sent == 5
    received = b""
    while chunk := await far.receive_some():
        received += chunk
    assert received == b"01234"  # then end of stream
    with pytest.raises(trio.BrokenResourceError):
        await faulty.receive_some()


async def test_a_pending_receive_is_broken_by_cut() -> None:
    near, _far = trio.testing.memory_stream_pair()
    faulty = FaultyStream(near)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(faulty.cut)
        with pytest.raises(trio.BrokenResourceError):
            await faulty.receive_some()


@pytest.mark.parametrize("end", ["cut", "aclose"])
async def test_a_black_holed_receive_after_the_peer_ended_is_woken(end: str) -> None:
    # The wrapped stream ended (its peer closed, or cut() closing it ended
    # the pending receive with EOF): the black hole keeps the receive
    # waiting, and cut() or aclose() must still end it. Before the fix it
    # slept forever (which made a waiting ping hang in some runs).
    near, far = trio.testing.memory_stream_pair()
    faulty = FaultyStream(near)
    faulty.black_hole()
    expected = trio.BrokenResourceError if end == "cut" else trio.ClosedResourceError
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(expected):
                    await faulty.receive_some()

            nursery.start_soon(receive)
            await far.aclose()  # end of stream reaches the swallowing receive
            await trio.testing.wait_all_tasks_blocked()
            await (faulty.cut() if end == "cut" else faulty.aclose())


async def test_cut_mid_frame_closes_the_peer_abnormally() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    faulty = FaultyStream(client_end)
    async with open_memory_pair(faulty, server_end) as (client, server):
        # 2 header + 4 mask + 3 of the 1000 payload bytes reach the server.
        faulty._cut_after = faulty.bytes_sent + 9
        with pytest.raises(ConnectionClosed):
            await client.send_message("x" * 1000)
        with pytest.raises(ConnectionClosed) as caught:
            await server.get_message()
        assert caught.value.reason.code == 1006


async def test_black_hole_swallows_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    faulty = FaultyStream(client_end)
    async with open_memory_pair(faulty, server_end) as (client, server):
        faulty.black_hole()
        assert faulty.is_black_hole
        await client.send_message("lost")  # succeeds, as on a real network
        await server.send_message("lost too")
        with trio.move_on_after(30) as ping_wait:
            await client.ping()
        assert ping_wait.cancelled_caught, "no pong can come through a black hole"
        with trio.move_on_after(30) as receive_wait:
            await server.get_message()
        assert receive_wait.cancelled_caught
        started = trio.current_time()
    # Closing cannot complete through a black hole; the block still ends,
    # after CLOSE_TIMEOUT.
    assert trio.current_time() - started == pytest.approx(CLOSE_TIMEOUT)
    assert client.closed is not None and server.closed is not None


async def test_black_hole_after_drops_the_rest() -> None:
    near, far = trio.testing.memory_stream_pair()
    faulty = FaultyStream(near, black_hole_after=4)
    await faulty.send_all(b"abcdef")
    await faulty.send_all(b"ghi")
    assert faulty.bytes_sent == 4
    assert await far.receive_some() == b"abcd"
    await far.send_all(b"never seen")
    with trio.move_on_after(0.1) as scope:
        await faulty.receive_some()
    assert scope.cancelled_caught
    await faulty.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await faulty.send_all(b"x")


def test_bad_thresholds_are_refused() -> None:
    near, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="cut_after"):
        FaultyStream(near, cut_after=-1)
    with pytest.raises(ValueError, match="black_hole_after"):
        FaultyStream(near, black_hole_after=True)


def test_importing_the_package_does_not_load_the_kit() -> None:
    code = "import sys, trio_websocket; print('trio_websocket.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------
# open_memory_client: a server handler under test, without sockets


async def test_memory_client_talks_to_a_handler() -> None:
    seen: list[str] = []

    async def echo(request: WebSocketRequest) -> None:
        seen.append(request.path)
        ws = await request.accept(subprotocol="v1")
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async with open_memory_client(echo, resource="/echo?x=1", subprotocols=["v1"]) as ws:
        assert ws.subprotocol == "v1"
        await ws.send_message("round trip")
        assert await ws.get_message() == "round trip"
    assert seen == ["/echo?x=1"]
    assert ws.closed is not None and ws.closed.code == 1000


async def test_memory_client_sees_a_rejection() -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"no")

    with pytest.raises(ConnectionRejected) as caught:
        async with open_memory_client(reject):
            pytest.fail("the block must not run")  # pragma: no cover
    assert caught.value.status_code == 403


async def test_a_handler_that_returns_closes_with_1000() -> None:
    async def one_message(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("bye")

    async with open_memory_client(one_message) as ws:
        assert await ws.get_message() == "bye"
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 1000


async def test_a_handler_error_closes_with_1011_and_is_raised_at_exit() -> None:
    async def buggy(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        raise ZeroDivisionError("handler bug")

    with pytest.raises(ZeroDivisionError, match="handler bug"):
        async with open_memory_client(buggy) as ws:
            await ws.send_message("trigger")
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
            assert caught.value.reason.code == 1011


async def test_a_handler_error_before_accepting_is_raised_as_itself() -> None:
    async def broken(request: WebSocketRequest) -> None:
        raise LookupError("before accept")

    with pytest.raises(LookupError, match="before accept"):
        async with open_memory_client(broken):
            pytest.fail("the block must not run")  # pragma: no cover


async def test_a_handler_that_never_ends_is_cancelled_after_the_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled = []

    async def stubborn(request: WebSocketRequest) -> None:
        await request.accept()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise

    started = trio.current_time()
    async with open_memory_client(stubborn):
        pass
    assert cancelled == [pytest.approx(started + CLOSE_TIMEOUT)]


def test_the_kits_public_names() -> None:
    import trio_websocket.testing as kit

    assert set(kit.__all__) == {
        "CLOSE_TIMEOUT",
        "FaultyStream",
        "memory_pair",
        "open_memory_client",
        "open_memory_pair",
    }
    for name in kit.__all__:
        value = getattr(kit, name)
        if callable(value):
            assert value.__module__ == "trio_websocket.testing", name


async def test_memory_client_over_given_streams() -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    counted = FaultyStream(client_end)

    async def hello(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("hello")

    async with open_memory_client(hello, client_stream=counted, server_stream=server_end) as ws:
        assert await ws.get_message() == "hello"
    assert counted.bytes_sent > 0 and counted.bytes_received > 0
    with pytest.raises(ValueError, match="both"):
        async with open_memory_client(hello, client_stream=client_end):
            pass  # pragma: no cover
