"""Reading through: once the reader has handed a message to the one task
waiting for it, it stands aside and ``get_message`` reads the stream itself
(``_core.receiving``, "Reading through"). These tests check that this
saves the hand-over and changes nothing a user sees: pings and closes are
still answered while the application is busy elsewhere, a cancelled
receive loses nothing, several receivers all get their messages, and every
way a connection ends still ends it."""

from __future__ import annotations

import base64
import hashlib
from functools import partial

import pytest
import trio
import trio.testing

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._core import receiving
from trio_websocket._wire import fast_paths
from trio_websocket.testing import open_memory_pair

ASIDE = receiving._ASIDE
READER = receiving._READER
TIMEOUT = receiving._ASIDE_TIMEOUT


async def _make_server_stand_aside(
    client: WebSocketConnection, server: WebSocketConnection
) -> None:
    """A receive that waits, then a message for it: the server's reader
    hands it over and stands aside; one more message is read through."""
    async with trio.open_nursery() as nursery:
        got: list[object] = []

        async def receive() -> None:
            got.append(await server.get_message())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_message("first")
    assert got == ["first"]
    await client.send_message("second")
    assert await server.get_message() == "second"
    assert server._read_turn == ASIDE


async def _receive_until_closed(
    ws: WebSocketConnection, outcome: list[BaseException], done: trio.Event | None = None
) -> None:
    """One receive, which the end of the connection interrupts: its
    ``ConnectionClosed`` goes to ``outcome``; then ``done`` is set."""
    try:
        await ws.get_message()
    except ConnectionClosed as exc:
        outcome.append(exc)
    if done is not None:
        done.set()


async def _echo_until_closed(
    request: object, codes: list[int] | None = None, done: trio.Event | None = None
) -> None:
    """A server handler echoing every message; the close code that ends it
    goes to ``codes``, and then ``done`` is set."""
    ws = await request.accept()  # type: ignore[attr-defined]
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed as exc:
        assert exc.reason is not None
        if codes is not None:
            codes.append(exc.reason.code)
        if done is not None:
            done.set()


async def test_request_response_is_read_by_the_receiving_task(
    autojump_clock: object,
) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):

            async def echo() -> None:
                for _ in range(20):
                    await server.send_message(await server.get_message())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                for i in range(20):
                    await client.send_message(b"%d" % i)
                    assert await client.get_message() == b"%d" % i
            # Both sides read their messages in the receiving task.
            assert server._reads_through >= 18
            assert client._reads_through >= 18
            assert server._messages_received == client._messages_received == 20


async def test_a_busy_application_still_answers_the_peers_ping(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            # The server's application does not receive any more: the reader
            # takes the stream back and answers.
            start = trio.current_time()
            await client.ping(b"anyone?")
            assert trio.current_time() - start <= 2 * TIMEOUT + 0.01
            assert server._read_turn == READER


async def test_a_busy_application_still_sees_the_peer_close(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            start = trio.current_time()
            await client.aclose(4000, "bye")
            assert trio.current_time() - start <= 2 * TIMEOUT + 0.01
            assert server.closed is not None and server.closed.code == 4000
            with pytest.raises(ConnectionClosed):
                await server.send_message("too late")


async def test_our_own_ping_gets_its_pong_at_once(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            start = trio.current_time()
            await server.ping(b"mine")
            # (Not after the reader's timer: the ping gave it the turn.)
            assert trio.current_time() - start < TIMEOUT / 2


async def test_a_cancelled_receive_loses_no_message(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            with trio.move_on_after(0.01) as scope:
                await server.get_message()
            assert scope.cancelled_caught
            await client.send_message("after the cancel")
            assert await server.get_message() == "after the cancel"
            # And once more, with the message there before the next receive.
            with trio.move_on_after(0.01):
                await server.get_message()
            await client.send_message(b"x" * 5000)
            await trio.testing.wait_all_tasks_blocked()
            assert await server.get_message() == b"x" * 5000


@pytest.mark.parametrize("gap", [False, True])
async def test_several_receivers_all_get_their_messages(autojump_clock: object, gap: bool) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            got: list[object] = []

            async def receive() -> None:
                got.append(await server.get_message())

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                for word in ("a", "b", "c"):
                    await client.send_message(word)
                    if gap:
                        await trio.sleep(0.001)
            assert sorted(got) == ["a", "b", "c"]  # type: ignore[type-var]
            # Each as it came, not once the reader's timer took the stream back.
            assert trio.current_time() - start < TIMEOUT / 2


async def test_a_control_frame_among_the_messages(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.ping, b"p")
                await trio.testing.wait_all_tasks_blocked()
                await client.send_message("after the ping")
                assert await server.get_message() == "after the ping"
            # The nursery waited for the ping's pong, which went out at once.
            assert trio.current_time() - start < TIMEOUT / 2
            await client.send_message("and on")
            assert await server.get_message() == "and on"


async def test_the_stream_ending_under_a_receiver(autojump_clock: object) -> None:
    with trio.fail_after(5):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with open_memory_pair(client_stream, server_stream) as (client, server):
            await _make_server_stand_aside(client, server)
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException] = []
                nursery.start_soon(_receive_until_closed, server, outcome)
                await trio.testing.wait_all_tasks_blocked()
                await client_stream.aclose()
            assert len(outcome) == 1
            assert server.closed is not None and server.closed.code == 1006


async def test_a_local_close_while_another_task_reads(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)

            async def client_echoes_until_closed() -> None:
                try:
                    while True:
                        await client.send_message(await client.get_message())
                except ConnectionClosed:
                    pass

            outcome: list[BaseException] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_echoes_until_closed)
                nursery.start_soon(_receive_until_closed, server, outcome)
                await trio.testing.wait_all_tasks_blocked()
                await server.aclose(1000, "done")
            assert len(outcome) == 1
            assert server.close_received is not None and server.close_received.code == 1000
            assert client.closed is not None and client.closed.code == 1000


async def test_a_cancelled_client_block_still_closes_with_1001() -> None:
    """``open_websocket``'s reader, cancelled while it stands aside and a
    task reads through, waits for that read to end, then closes with 1001
    (not 1006)."""
    codes: list[int] = []
    handler_done = trio.Event()
    handler = partial(_echo_until_closed, codes=codes, done=handler_done)
    elsewhere: list[BaseException] = []
    elsewhere_done = trio.Event()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
            url = f"ws://127.0.0.1:{server.port}/"
            with trio.CancelScope() as block:
                async with open_websocket_url(url) as ws:
                    for word in ("one", "two", "three"):
                        await ws.send_message(word)
                        assert await ws.get_message() == word
                    assert ws._reads_through >= 1
                    # A task outside the block reads through, and is not
                    # cancelled with it.
                    nursery.start_soon(_receive_until_closed, ws, elsewhere, elsewhere_done)
                    await trio.sleep(0.05)
                    assert ws._read_turn == receiving._RECEIVER
                    block.cancel()
                    await trio.sleep(1)
            await handler_done.wait()
            await elsewhere_done.wait()
            nursery.cancel_scope.cancel()
    assert codes == [1001]
    assert ws.close_sent is not None and ws.close_sent.code == 1001


async def _slow_closing_peer(stream: trio.SocketStream, close_codes: list[int]) -> None:
    """A server that sends two messages, then answers a close frame only
    after 0.2 s: long enough for a reader that does not wait for the
    receiver's read to end to read at the same time."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    for word in (b"one", b"two"):
        await trio.sleep(0.05)
        await stream.send_all(bytes([0x81, len(word)]) + word)
    data = b""
    while len(data) < 2 or len(data) < 6 + (data[1] & 0x7F):
        data += await stream.receive_some(4096)
    assert data[0] == 0x88
    mask = data[2:6]
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[6 : 6 + (data[1] & 0x7F)]))
    close_codes.append(int.from_bytes(payload[:2], "big"))
    await trio.sleep(0.2)
    await stream.send_all(bytes([0x88, 2]) + payload[:2])
    await stream.aclose()


async def test_a_cancelled_client_block_waits_for_the_read_under_way() -> None:
    close_codes: list[int] = []
    elsewhere: list[BaseException] = []
    elsewhere_done = trio.Event()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer = partial(_slow_closing_peer, close_codes=close_codes)
            listeners = await nursery.start(partial(trio.serve_tcp, peer, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            with trio.CancelScope() as block:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    assert await ws.get_message() == "one"
                    assert await ws.get_message() == "two"
                    assert ws._read_turn == ASIDE
                    nursery.start_soon(_receive_until_closed, ws, elsewhere, elsewhere_done)
                    await trio.sleep(0.05)
                    assert ws._read_turn == receiving._RECEIVER
                    block.cancel()
                    await trio.sleep(1)
            await elsewhere_done.wait()
            nursery.cancel_scope.cancel()
    assert close_codes == [1001]
    assert ws.close_received is not None and ws.close_received.code == 1001
    assert ws.closed is not None and ws.closed.code == 1001


async def test_a_streamed_receive_gets_its_pieces_at_once(autojump_clock: object) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                pieces: list[object] = []

                async def stream_one() -> None:
                    async for piece in server.receive_fragments():
                        pieces.append(piece)

                nursery.start_soon(stream_one)
                await trio.testing.wait_all_tasks_blocked()
                await client.send_message(b"streamed")
            assert b"".join(pieces) == b"streamed"  # type: ignore[arg-type]
            # (From the reader at once, not after its timer.)
            assert trio.current_time() - start < TIMEOUT / 2


async def test_a_streamed_receive_while_another_task_reads_is_refused(
    autojump_clock: object,
) -> None:
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await _make_server_stand_aside(client, server)
            async with trio.open_nursery() as nursery:
                got: list[object] = []

                async def receive() -> None:
                    got.append(await server.get_message())

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                assert server._read_turn == receiving._RECEIVER
                with pytest.raises(trio.BusyResourceError):
                    async for _ in server.receive_fragments():
                        pass
                await client.send_message("for the first receive")
            assert got == ["for the first receive"]


async def test_pipelined_large_messages_never_wait_for_the_timer() -> None:
    """A client keeps two 1 MiB messages in flight to an echo server. Its
    reader hands a message over, then waits for room (the message is past
    the read-ahead); the receiver takes it and waits again, for the reader,
    which then stands aside: the receiver must be told to read through,
    not left to the reader's timer (which made this 8 messages a second)."""

    payload = b"x" * (1 << 20)
    count = 24
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                _echo_until_closed,
                "127.0.0.1",
                0,
                None,
                max_message_size=2 << 20,
            )
        )
        url = f"ws://127.0.0.1:{server.port}/"
        # 24 round trips that each waited for the timer would take 3 s.
        with trio.fail_after(2.5):
            async with open_websocket_url(url, max_message_size=2 << 20) as ws:
                credits = trio.Semaphore(2)

                async def send_all() -> None:
                    for _ in range(count):
                        await credits.acquire()
                        await ws.send_message(payload)

                async with trio.open_nursery() as inner:
                    inner.start_soon(send_all)
                    for _ in range(count):
                        assert await ws.get_message() == payload
                        credits.release()
                if fast_paths.ENABLED:
                    # (Frames held until whole come as one message a read;
                    # without the fast paths they come in pieces, and the
                    # receiver finds the reader reading.)
                    assert ws._reads_through > 0
        nursery.cancel_scope.cancel()
