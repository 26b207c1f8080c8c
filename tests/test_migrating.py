"""Each deliberate difference from trio-websocket 0.12.2, as
docs/migrating.rst lists it, pinned by one test here.

Every test's docstring starts with ``migrating.rst:`` and the entry's bold
title, word for word; ``test_every_entry_has_a_test`` checks that each
entry of the "What behaves differently" section has one. Where 0.12.2
behaved otherwise, the comment says how. Memory streams and the autojump
clock where they can do; 127.0.0.1 and short real-time bounds where the
entry is about sockets.
"""

from __future__ import annotations

import inspect
import logging
import logging.config
import re
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import LoopbackResolver, accept_by_hand, open_pair, read_request_head
from hostile_peers import RawPeer, raw_client
from server_fixtures import MemoryListener, read_until_eof, start_memory_server, upgrade_request

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket.testing import FaultyStream, memory_pair, open_memory_client

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

MIGRATING = Path(__file__).resolve().parent.parent / "docs" / "migrating.rst"


def entry_titles() -> list[str]:
    """The bold titles of the entries under "What behaves differently"."""
    text = MIGRATING.read_text(encoding="utf-8")
    section = text.split("What behaves differently", 1)[1].split("Still the same", 1)[0]
    return [
        " ".join(title.split())
        for title in re.findall(r"^\*\*(.+?)\*\*", section, re.MULTILINE | re.DOTALL)
    ]


def test_every_entry_has_a_test() -> None:
    titles = entry_titles()
    assert len(titles) >= 18, titles
    pinned = {
        " ".join(test.__doc__.split("\n\n")[0].split()).removeprefix("migrating.rst: ")
        for name, test in globals().items()
        if name.startswith("test_") and test.__doc__ and test.__doc__.startswith("migrating.rst:")
    }
    missing = [title for title in titles if title not in pinned]
    assert not missing, f"entries without a test: {missing}"
    stale = pinned - set(titles)
    assert not stale, f"tests naming no entry: {stale}"


async def sleeping_handler(request: WebSocketRequest) -> None:
    await request.accept()
    await trio.sleep_forever()


# ----------------------------------------------------------------------


async def test_slow_application_does_not_stall_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: A slow application no longer stalls the connection.

    0.12.2's reader waited on the full queue (size 1): no pong, no close."""
    client, server = await open_pair(nursery)
    for number in range(5):
        await client.send_message(f"unread {number}")  # the server never reads
    with trio.fail_after(5):
        await client.ping(b"still there?")
        await client.aclose()
    assert client.close_received == CloseReason(1000, None)
    assert server.statistics().messages_buffered == 5


async def test_the_receiving_task_reads_while_it_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: The receiving task reads while it waits.

    0.12.2's reader read every frame itself: a ping was answered at once,
    and a waiting get_message raised as soon as aclose started."""
    client, server = await open_pair(nursery)
    for word in ("one", "two", "three"):
        await client.send_message(word)
        assert await server.get_message() == word
    # The server's application receives no more: the peer's ping is read
    # within half a second, not at once.
    start = trio.current_time()
    with trio.fail_after(5):
        await client.ping(b"anyone?")
    assert 0 < trio.current_time() - start <= 0.5
    # A receive waiting in another task when the server closes raises once
    # the peer has answered the close.
    outcome: list[BaseException] = []

    async def receive() -> None:
        try:
            await server.get_message()
        except ConnectionClosed as exc:
            outcome.append(exc)

    async def client_receives() -> None:
        with pytest.raises(ConnectionClosed):
            await client.get_message()

    with trio.fail_after(5):
        async with trio.open_nursery() as receiving:
            receiving.start_soon(client_receives)
            await client.send_message("four")
            assert await server.get_message() == "four"
            receiving.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()
    assert len(outcome) == 1
    assert server.close_received == CloseReason(1000, None)


async def test_a_waiting_ping_raises_when_the_connection_closes(nursery: trio.Nursery) -> None:
    """migrating.rst: Pings are never left waiting."""
    client_end, server_end = trio.testing.memory_stream_pair()
    faulty = FaultyStream(client_end)
    client, _server = await memory_pair(nursery, faulty, server_end)
    faulty.black_hole()  # the ping goes nowhere; no pong will come
    outcome: list[BaseException] = []

    async def ping() -> None:
        try:
            await client.ping(b"hello?")
        except ConnectionClosed as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as pinging:
            pinging.start_soon(ping)
            await trio.testing.wait_all_tasks_blocked()
            await faulty.cut()
    assert len(outcome) == 1


async def test_a_handler_that_raises_closes_with_1011() -> None:
    """migrating.rst: A handler that raises closes with 1011.

    0.12.2 closed with 1000."""

    async def failing(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        raise ValueError("handler bug")

    with trio.fail_after(5), pytest.raises(ValueError):
        async with open_memory_client(failing) as ws:
            await ws.send_message("trigger")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1011


async def test_connection_closed_escaping_a_handler_is_logged_not_raised(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """migrating.rst: A client that goes away no longer stops the server.

    0.12.2 let the ConnectionClosed out of serve_websocket."""
    caplog.set_level(logging.DEBUG, logger="trio_websocket")

    async def careless(request: WebSocketRequest) -> None:
        ws = await request.accept()
        async with trio.open_nursery() as inner:  # a group of ConnectionClosed too
            inner.start_soon(ws.get_message)
            await ws.get_message()

    server = await nursery.start(serve_websocket, careless, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    with trio.fail_after(5):
        for _ in range(2):  # the server goes on serving after the first
            async with open_websocket_url(url):
                pass
        while not [r for r in caplog.records if "ended by ConnectionClosed" in r.getMessage()]:  # noqa: ASYNC110
            await trio.sleep(0.01)
    ended = [r for r in caplog.records if "handler ended by ConnectionClosed" in r.getMessage()]
    assert ended and {r.levelno for r in ended} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_system_exit_leaves_the_server_as_itself() -> None:
    """migrating.rst: Ctrl-C and sys.exit() leave the server as themselves.

    (SystemExit here, the other exception the entry names: a real
    KeyboardInterrupt would reach pytest.) 0.12.2 raised a group."""

    async def exiting(request: WebSocketRequest) -> None:
        await request.accept()
        raise SystemExit(3)

    async def main() -> None:
        listener = MemoryListener()
        server = WebSocketServer(exiting, [listener])

        async def client() -> None:
            await raw_client(await listener.connect())
            await trio.sleep_forever()

        # (A system task: a nursery of the test's own would group the exit.)
        trio.lowlevel.spawn_system_task(client)
        await server.run()

    with pytest.raises(SystemExit) as caught:
        trio.run(main, strict_exception_groups=True)
    assert caught.value.code == 3
    assert not isinstance(caught.value, BaseExceptionGroup)


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/1.1\nHost: x\n"],
    ids=["tls-client-hello", "bare-lf"],
)
async def test_requests_that_can_never_be_valid_are_answered_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, garbage: bytes
) -> None:
    """migrating.rst: Requests that can never be valid are answered at once.

    0.12.2 waited connect_timeout (60 s) for the end of the head."""
    _server, listener = await start_memory_server(nursery, sleeping_handler)
    stream = await listener.connect()
    await stream.send_all(garbage)  # and nothing more: no blank line
    with trio.fail_after(1):  # (virtual seconds: a 60 s wait would trip it)
        answer = await read_until_eof(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_at_most_max_handshakes_requests_are_read_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: At most 1024 requests are read at once."""
    assert inspect.signature(serve_websocket).parameters["max_handshakes"].default == 1024
    _server, listener = await start_memory_server(nursery, sleeping_handler, max_handshakes=2)
    streams = []
    for _ in range(3):
        stream = await listener.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finished
        await trio.testing.wait_all_tasks_blocked()
        streams.append(stream)
    with trio.fail_after(1):
        assert await read_until_eof(streams[0]) == b""  # the oldest, dropped
    with trio.move_on_after(1):
        await streams[1].receive_some()
        pytest.fail("the second request was dropped too")  # pragma: no cover


async def test_the_close_reason_is_echoed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: The close reason is echoed.

    0.12.2 echoed the code without the reason."""
    client, server = await open_pair(nursery)
    await client.aclose(4001, "see you")
    assert client.close_received == CloseReason(4001, "see you")
    assert server.close_sent == CloseReason(4001, "see you")


async def test_exceptions_come_out_as_themselves(nursery: trio.Nursery) -> None:
    """migrating.rst: Exceptions come out as themselves."""
    server = await nursery.start(serve_websocket, sleeping_handler, "127.0.0.1", 0, None)
    # (pytest-trio runs this test with strict exception groups, as Trio does
    # by default.)
    with trio.fail_after(5), pytest.raises(KeyError):
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False):
            raise KeyError("from the block")
    with socket_closed_port() as port, pytest.raises(HandshakeError) as caught:
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            pass  # pragma: no cover
    assert caught.value.__cause__ is not None

    # The exception the entry keeps: a handler's error leaves serve_websocket
    # through Trio's nurseries, as from trio.serve_tcp.
    async def failing(request: WebSocketRequest) -> None:
        await request.accept()
        raise KeyError("handler bug")

    with trio.fail_after(5), pytest.raises(BaseExceptionGroup) as group:
        async with trio.open_nursery() as serving:
            failing_server = await serving.start(serve_websocket, failing, "127.0.0.1", 0, None)
            async with open_websocket("127.0.0.1", failing_server.port, "/", use_ssl=False) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            await trio.sleep_forever()
    assert group.value.subgroup(KeyError) is not None


class socket_closed_port:
    """A TCP port on 127.0.0.1 that nobody listens on (for the block)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        pass


async def test_a_broken_handshake_answer_is_a_handshake_error(nursery: trio.Nursery) -> None:
    """migrating.rst: A broken handshake answer is a HandshakeError.

    0.12.2 let wsproto's and h11's own exceptions (UnicodeDecodeError...)
    out, and h11's LocalProtocolError for a bad header value."""
    received: list[bytes] = []

    async def bad_answer(stream: trio.SocketStream) -> None:
        try:
            head = await read_request_head(stream)
        except AssertionError:  # the client sent nothing (and closed)
            return
        received.append(head)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Protocol: \xff\xfe\r\n\r\n"
        )
        await read_until_eof(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, bad_answer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5), pytest.raises(HandshakeError) as caught:
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False, subprotocols=["v1"]):
            pass  # pragma: no cover
    assert caught.value.__cause__ is not None
    assert len(received) == 1

    with trio.fail_after(5), pytest.raises(ValueError):
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, extra_headers=[(b"X-Bad", b"a\r\nb")]
        ):
            pass  # pragma: no cover
    assert len(received) == 1  # that request never went out


async def test_leaving_the_block_by_a_cancellation_closes_with_1001(nursery: trio.Nursery) -> None:
    """migrating.rst: Leaving the block by a cancellation closes cleanly.

    0.12.2 sent no close frame (the server saw 1006) yet said 1000."""
    seen: list[CloseReason | None] = []
    done = trio.Event()

    async def watcher(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            seen.append(exc.reason)
            done.set()

    server = await nursery.start(serve_websocket, watcher, "127.0.0.1", 0, None)
    with trio.move_on_after(0.3):
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
            await trio.sleep_forever()
    with trio.fail_after(5):
        await done.wait()
    assert seen[0] is not None and seen[0].code == 1001
    assert ws.close_sent is not None and ws.close_sent.code == 1001


async def never_answers_the_close(stream: trio.SocketStream) -> None:
    """A server that accepts the upgrade, then reads and never answers."""
    await accept_by_hand(stream, await read_request_head(stream))
    await read_until_eof(stream)


async def test_the_blocks_exception_wins_over_a_slow_close(nursery: trio.Nursery) -> None:
    """migrating.rst: The block's own exception wins over a slow close.

    0.12.2 raised DisconnectionTimeout with the block's exception as its
    context."""
    listeners = await nursery.start(
        partial(trio.serve_tcp, never_answers_the_close, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5), pytest.raises(KeyError):
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False, disconnect_timeout=0.2):
            raise KeyError("mine")
    # Without an exception in the block, the slow close still shows.
    with trio.fail_after(5), pytest.raises(DisconnectionTimeout):
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False, disconnect_timeout=0.2):
            pass


async def test_aclose_is_bounded_by_disconnect_timeout(nursery: trio.Nursery) -> None:
    """migrating.rst: aclose() is bounded.

    0.12.2's aclose could wait forever."""
    listeners = await nursery.start(
        partial(trio.serve_tcp, never_answers_the_close, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, disconnect_timeout=0.3
        ) as ws:
            started = trio.current_time()
            await ws.aclose()  # gives up after disconnect_timeout
            assert 0.2 <= trio.current_time() - started < 3
            assert ws.close_sent == CloseReason(1000, None)
            assert ws.close_received is None


async def test_every_message_costs_something_in_the_receive_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: Every message costs something in the receive budget.

    0.12.2 counted messages only: empty ones cost nothing but the queue."""
    client, server = await open_pair(
        nursery, server_options={"message_queue_size": 10**6, "max_buffered_bytes": 6400}
    )
    for _ in range(1000):
        await client.send_message(b"")
    await trio.sleep(1)
    waiting = server.statistics().messages_buffered
    assert 0 < waiting <= 6400 // 64 + 1, waiting


async def test_urls_and_host_headers(nursery: trio.Nursery) -> None:
    """migrating.rst: URLs and Host headers.

    0.12.2 dropped the port from wss://...:80 and ws://...:443, took a
    ``?`` in a fragment for the query and sent the fragment."""
    heads: list[bytes] = []

    async def record(stream: trio.SocketStream) -> None:
        heads.append(await read_request_head(stream))
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, record, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    resolver = LoopbackResolver(port)
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        for url in ("ws://example.com:443/path#frag?x", "ws://example.com/a?b=1#c"):
            with trio.fail_after(5), pytest.raises(HandshakeError):
                async with open_websocket_url(url):
                    pass  # pragma: no cover
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    first, second = (head.decode("latin-1").split("\r\n") for head in heads)
    assert first[0] == "GET /path HTTP/1.1"
    assert "host: example.com:443" in (line.lower() for line in first)
    assert second[0] == "GET /a?b=1 HTTP/1.1"
    assert "host: example.com" in (line.lower() for line in second)


async def test_reads_are_128_kib(nursery: trio.Nursery) -> None:
    """migrating.rst: Less CPU per message.

    0.12.2 read 4 KiB at a time (its receive_buffer_size default)."""
    for entry_point in (open_websocket, serve_websocket, WebSocketServer):
        default = inspect.signature(entry_point).parameters["receive_buffer_size"].default
        assert default == 128 * 1024, entry_point

    asked: list[int | None] = []

    client_end, server_end = trio.testing.memory_stream_pair()
    original = client_end.receive_some

    async def receive_some(max_bytes: int | None = None) -> bytes | bytearray:
        asked.append(max_bytes)
        return await original(max_bytes)

    client_end.receive_some = receive_some  # type: ignore[method-assign]
    client, server = await memory_pair(nursery, client_end, server_end)
    await server.send_message("x")
    assert await client.get_message() == "x"
    assert 128 * 1024 in asked


async def test_records_are_named_trio_websocket_under_the_old_name() -> None:
    """migrating.rst: The logger's name.

    0.12.2 logged under ``trio-websocket``, now the parent logger."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    old = logging.getLogger("trio-websocket")
    handler = Collect()
    old.addHandler(handler)
    level = old.level
    old.setLevel(logging.INFO)
    try:
        async with open_memory_client(sleeping_handler):
            pass
    finally:
        old.removeHandler(handler)
        old.setLevel(level)
    assert records and {record.name for record in records} == {"trio_websocket"}
    assert logging.getLogger("trio_websocket").parent is old

    # A configuration that names only the old name leaves the new one to
    # disable_existing_loggers (on by default), like any logger it omits.
    new = logging.getLogger("trio_websocket")
    every_logger = [
        found for found in logging.Logger.manager.loggerDict.values()
        if isinstance(found, logging.Logger)
    ]  # fmt: skip
    disabled = {found: found.disabled for found in every_logger}
    try:
        logging.config.dictConfig({"version": 1, "loggers": {"trio-websocket": {}}})
        assert new.disabled
        logging.config.dictConfig({"version": 1, "loggers": {"trio_websocket": {}}})
        assert not new.disabled
    finally:  # (dictConfig disabled every other logger of the process)
        for found, was_disabled in disabled.items():
            found.disabled = was_disabled


async def test_plain_http_requests_get_426(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """migrating.rst: A request that is not a WebSocket upgrade gets 426.

    0.12.2 answered 400 (wsproto's refusal)."""
    _server, listener = await start_memory_server(nursery, sleeping_handler)
    stream = await listener.connect()
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    with trio.fail_after(5):
        answer = await read_until_eof(stream)
    assert answer.startswith(b"HTTP/1.1 426 "), answer
    assert b"\r\nupgrade: websocket\r\n" in answer.lower()


async def test_a_handler_nursery_runs_each_connection_and_its_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """migrating.rst: What runs in a handler nursery.

    In 0.12.2 it ran one task per connection, which opened a nursery of
    its own for the reader."""
    names: list[list[str]] = []
    accepted = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        await request.accept()
        accepted.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as handlers:
            server, listener = await start_memory_server(
                outer, handler, handler_nursery=handlers, ping_interval=30
            )
            assert handlers.child_tasks == frozenset()  # accepting is the server's
            peer = RawPeer(await listener.connect(), is_client=True)
            await peer.send(upgrade_request())
            with trio.fail_after(5):
                await accepted.wait()
            names.append(sorted(task.name for task in handlers.child_tasks))
            handlers.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    (tasks,) = names
    assert len(tasks) == 3, tasks  # the connection, its reader, its keepalive
    assert any(name.endswith(" reader") for name in tasks), tasks
    assert any(name.endswith(" keepalive") for name in tasks), tasks
    assert server is not None
