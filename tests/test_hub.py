"""The in-process hub: topics, fan-out, slow subscribers and their
overflow policy, one frame per publish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing
from conftest import open_pair
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, TextMessage

import trio_websocket._extras.hub as hub_module
from trio_websocket import (
    ConnectionClosed,
    Hub,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._wire import fast_paths

Pair = tuple[WebSocketConnection, WebSocketConnection]


async def pairs(nursery: trio.Nursery, count: int, **kwargs: object) -> list[Pair]:
    return [await open_pair(nursery, **kwargs) for _ in range(count)]  # type: ignore[arg-type]


async def stalled_pair(nursery: trio.Nursery) -> Pair:
    """A pair whose client reads its stream only while the application takes
    messages: once its one-message inbox is full it stops reading, and with a
    lockstep stream the server's next write blocks, as over a full TCP
    window."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    return await open_pair(nursery, client_stream, server_stream)


def big(number: int) -> str:
    """A message big enough that a stalled client's read-ahead (256 KiB)
    holds only a few of them."""
    return f"m{number:03d}" + "." * 32768


async def receive(ws: WebSocketConnection, count: int) -> list[str | bytes]:
    return [await ws.get_message() for _ in range(count)]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


async def test_publish_reaches_every_subscriber_of_the_topic_only(
    nursery: trio.Nursery, hub: Hub
) -> None:
    (c1, s1), (c2, s2), (c3, s3) = await pairs(nursery, 3)
    await hub.subscribe(s1, "news")
    await hub.subscribe(s2, "news", "sport")
    await hub.subscribe(s3, "sport")
    assert hub.subscriber_count("news") == 2
    assert await hub.publish("news", "headline") == 2
    assert await hub.publish("sport", b"\x00score") == 2
    assert await hub.publish("weather", "nobody listens") == 0
    assert await receive(c1, 1) == ["headline"]
    assert await receive(c2, 2) == ["headline", b"\x00score"]
    assert await receive(c3, 1) == [b"\x00score"]
    stats = hub.statistics()
    assert (stats.topics, stats.subscribers, stats.published) == (2, 3, 3)


async def test_messages_keep_their_order_and_type(nursery: trio.Nursery, hub: Hub) -> None:
    ((client, server),) = await pairs(nursery, 1)
    await hub.subscribe(server, "t")
    sent: list[str | bytes] = []
    for i in range(50):
        message: str | bytes = f"text {i} é" if i % 2 else bytes([i]) * (i * 3000)
        sent.append(message)
        await hub.publish("t", message)
    assert await receive(client, 50) == sent


async def test_one_frame_is_built_per_publish(
    nursery: trio.Nursery, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[bytes] = []
    real = hub_module.server_frame

    def counting(message: str | bytes) -> bytes:
        frame = real(message)
        built.append(frame)
        return frame

    monkeypatch.setattr(hub_module, "server_frame", counting)
    connections = await pairs(nursery, 5)
    for _, server in connections:
        await hub.subscribe(server, "t")
    assert await hub.publish("t", "to all five") == 5
    for client, _ in connections:
        assert await client.get_message() == "to all five"
    assert len(built) == 1


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_prebuilt_frame_is_what_a_client_parses(size: int, text: bool) -> None:
    message: str | bytes = (
        "x" * size if text else bytes(range(256)) * (size // 256) + b"y" * (size % 256)
    )
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(hub_module.server_frame(message))
    events = list(client.events())
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, TextMessage if text else BytesMessage)
    assert event.message_finished
    assert event.data == message


@pytest.mark.parametrize("fast_paths_on", [True, False], ids=["fast paths on", "off"])
async def test_a_subscriber_with_compression_gets_its_messages_compressed(
    nursery: trio.Nursery, hub: Hub, monkeypatch: pytest.MonkeyPatch, fast_paths_on: bool
) -> None:
    """A server connection that agreed on permessage-deflate does not take
    the shared uncompressed frame (WebSocketConnection._send_prebuilt_frame):
    it sends the message the usual way, compressed as send_message would.
    With the fast paths on, it used to write the shared frame, so hub
    subscribers never got a compressed message (found by
    test_fuzz_fast_paths: with the fast paths off they did)."""
    monkeypatch.setattr(fast_paths, "ENABLED", fast_paths_on)
    options = {"compression": "deflate"}
    client, server = await open_pair(nursery, client_options=options, server_options=options)
    assert server.compression is not None
    await hub.subscribe(server, "t")
    message = "compress me " * 100
    await hub.publish("t", message)
    assert await client.get_message() == message
    ratio = server.statistics().compression_ratio
    assert ratio is not None and ratio > 10


async def test_a_client_connection_can_subscribe_too(nursery: trio.Nursery, hub: Hub) -> None:
    # A client's frames are masked, so it cannot share the server frame: it
    # falls back to send_message and the server still gets the message.
    client, server = await open_pair(nursery)
    await hub.subscribe(client, "up")
    await hub.publish("up", "from the hub")
    assert await server.get_message() == "from the hub"


async def test_a_stalled_subscriber_does_not_hold_up_the_others(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with Hub(queue_size=8, overflow="drop_oldest") as hub:
        slow_client, slow_server = await stalled_pair(nursery)
        ((fast_client, fast_server),) = await pairs(nursery, 1)
        await hub.subscribe(slow_server, "t")
        await hub.subscribe(fast_server, "t")
        with trio.fail_after(1):
            for i in range(200):
                await hub.publish("t", big(i))
                assert await fast_client.get_message() == big(i)
        stats = hub.statistics()
        assert stats.dropped > 0
        assert hub.subscriber_count("t") == 2
        # The slow client catches up: it gets the messages that were in
        # flight, then the newest 8, ending with the last one published.
        received: list[str | bytes] = []
        while not received or received[-1] != big(199):
            with trio.fail_after(1):
                received.append(await slow_client.get_message())
        numbers = [int(str(m)[1:4]) for m in received]
        assert numbers == sorted(numbers)
        assert numbers[-8:] == list(range(192, 200))
        assert len(received) < 200
        assert slow_server.closed is None


async def test_overflow_close_policy_closes_the_slow_subscriber_with_1013(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with Hub(queue_size=4, overflow="close") as hub:
        slow_client, slow_server = await stalled_pair(nursery)
        ((fast_client, fast_server),) = await pairs(nursery, 1)
        await hub.subscribe(slow_server, "t")
        await hub.subscribe(fast_server, "t")
        with trio.fail_after(1):
            for i in range(50):
                await hub.publish("t", big(i))
                assert await fast_client.get_message() == big(i)
        assert slow_server.closed is not None
        assert slow_server.closed.code == 1013
        assert hub.subscriber_count("t") == 1
        assert hub.statistics().overflow_closes == 1
        # The client reads again: it gets what was already sent, then the
        # close frame with 1013.
        with pytest.raises(ConnectionClosed) as caught:
            for _ in range(50):
                with trio.fail_after(10):
                    await slow_client.get_message()
        assert caught.value.reason.code == 1013
        assert await hub.publish("t", "after") == 1
        assert await fast_client.get_message() == "after"


async def test_overflow_close_aborts_a_client_that_never_reads_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with Hub(queue_size=2, overflow="close", close_timeout=3) as hub:
        _slow_client, slow_server = await stalled_pair(nursery)
        await hub.subscribe(slow_server, "t")
        start = trio.current_time()
        for i in range(50):
            await hub.publish("t", big(i))
        assert slow_server.closed is not None
        assert slow_server.closed.code == 1013
        with trio.fail_after(10):
            await slow_server.aclose()
        assert trio.current_time() - start <= 3.5
        assert hub.subscriber_count("t") == 0


async def test_subscribed_block_unsubscribes_at_exit(nursery: trio.Nursery, hub: Hub) -> None:
    client, server = await open_pair(nursery)
    async with hub.subscribed(server, "a", "b"):
        assert hub.subscriber_count("a") == hub.subscriber_count("b") == 1
        await hub.publish("a", "in")
        assert await client.get_message() == "in"
    assert hub.subscriber_count("a") == hub.subscriber_count("b") == 0
    assert await hub.publish("a", "out") == 0
    assert hub.statistics().subscribers == 0


async def test_unsubscribe_some_topics_keeps_the_others(nursery: trio.Nursery, hub: Hub) -> None:
    client, server = await open_pair(nursery)
    await hub.subscribe(server, "a", "b")
    await hub.unsubscribe(server, "a", "never-subscribed")
    assert await hub.publish("a", "no") == 0
    assert await hub.publish("b", "yes") == 1
    assert await client.get_message() == "yes"
    await hub.unsubscribe(server)
    assert hub.statistics().subscribers == 0


async def test_a_closed_connection_is_forgotten(
    nursery: trio.Nursery, hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await open_pair(nursery)
    await hub.subscribe(server, "t")
    await client.aclose()
    with trio.fail_after(1):
        await server.aclose()
    assert await hub.publish("t", "to nobody") == 0
    await trio.testing.wait_all_tasks_blocked()
    assert hub.subscriber_count("t") == 0
    with pytest.raises(ConnectionClosed):
        await hub.subscribe(server, "t")


async def test_leaving_the_hub_block_with_a_stalled_sender_does_not_hang(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        async with Hub() as hub:
            _client, server = await stalled_pair(nursery)
            await hub.subscribe(server, "t")
            for i in range(50):
                await hub.publish("t", big(i))
            await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(RuntimeError, match="not running"):
        await hub.publish("t", "late")


async def test_bad_arguments_raise_clear_errors(nursery: trio.Nursery) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Hub(queue_size=0)
    with pytest.raises(ValueError, match="overflow"):
        Hub(overflow="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="close_timeout"):
        Hub(close_timeout=-1)
    hub = Hub()
    with pytest.raises(RuntimeError, match="not running"):
        await hub.publish("t", "x")
    async with hub:
        with pytest.raises(TypeError, match="str or bytes"):
            await hub.publish("t", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="topic"):
            await hub.publish(b"t", "x")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="already"):
        async with hub:
            pass


async def test_chat_over_tcp(nursery: trio.Nursery) -> None:
    both_in = trio.Event()
    async with Hub() as hub:

        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            async with hub.subscribed(ws, "room"):
                if hub.subscriber_count("room") == 2:
                    both_in.set()
                try:
                    while True:
                        await hub.publish("room", await ws.get_message())
                except ConnectionClosed:
                    pass

        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        url = f"ws://127.0.0.1:{server.port}/"
        async with open_websocket_url(url) as alice, open_websocket_url(url) as bob:
            with trio.fail_after(5):
                await both_in.wait()
                await alice.send_message("hi bob")
                assert await bob.get_message() == "hi bob"
                assert await alice.get_message() == "hi bob"


async def test_a_closed_connection_on_a_quiet_topic_is_swept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with Hub() as hub:
        client, server = await open_pair(nursery)
        await hub.subscribe(server, "quiet")
        await client.aclose()
        await server.aclose()
        await trio.sleep(hub_module.SWEEP_INTERVAL * 2)
        assert hub.subscriber_count("quiet") == 0
        assert hub.statistics().subscribers == 0


async def test_subscribing_to_no_topic_does_nothing(nursery: trio.Nursery, hub: Hub) -> None:
    _, server = await open_pair(nursery)
    await hub.subscribe(server)
    assert hub.statistics().subscribers == 0


async def test_an_error_in_the_hub_block_comes_out_as_itself() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with Hub():
            raise Boom


async def test_a_tcp_client_that_stops_reading_is_closed_with_1013(nursery: trio.Nursery) -> None:
    # Over real loopback TCP: a client with a small receive buffer reads
    # the handshake response and then nothing; the server's writes to it
    # block once the kernel buffers are full, and the hub's policy acts.
    async with Hub(queue_size=8, overflow="close", close_timeout=1) as hub:
        closed_with: list[int] = []
        closed = trio.Event()
        both_in = trio.Event()

        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            async with hub.subscribed(ws, "t"):
                if hub.subscriber_count("t") == 2:
                    both_in.set()
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as exc:
                    closed_with.append(exc.reason.code)
                    closed.set()

        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        stalled = trio.socket.socket()
        stalled.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        with stalled, trio.fail_after(15):
            await stalled.connect(("127.0.0.1", server.port))
            await stalled.send(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            assert (await stalled.recv(4096)).startswith(b"HTTP/1.1 101")
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as fast:
                await both_in.wait()
                for i in range(400):
                    await hub.publish("t", big(i))
                    assert await fast.get_message() == big(i)
                    if closed_with:
                        break
                await closed.wait()
                assert closed_with == [1013]
                assert hub.subscriber_count("t") == 1
                await hub.publish("t", "still here")
                assert await fast.get_message() == "still here"
