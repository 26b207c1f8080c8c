"""Limits against abuse: request-head limits (414/431), the cap on
concurrent connections (503), slow senders dropped by ``connect_timeout``,
and a load test of slow and garbage clients on loopback."""

from __future__ import annotations

import errno
import gc
import os
import tracemalloc
from functools import partial

import pytest
import trio
import trio.testing
from conftest import echo_handler
from server_fixtures import (
    MemoryListener,
    exchange,
    read_until_eof,
    start_memory_server,
    upgrade_request,
)

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    RequestLimits,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)
from trio_websocket._server.limits import MAX_HEAD_BYTES, HeadScanner, RequestTooLarge


async def never_called(request: WebSocketRequest) -> None:
    raise AssertionError("the handler must not run")


# ----------------------------------------------------------------------
# RequestLimits, the pure part


def test_default_limits() -> None:
    limits = RequestLimits()
    assert (limits.max_request_line, limits.max_headers, limits.max_header_size) == (
        8192,
        128,
        8192,
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"max_request_line": 0}, {"max_headers": 0}, {"max_header_size": MAX_HEAD_BYTES + 1}],
)
def test_limits_out_of_range_raise_value_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RequestLimits(**kwargs)


@pytest.mark.parametrize("value", [True, 1.5, "10"])
def test_limits_of_wrong_type_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        RequestLimits(max_headers=value)  # type: ignore[arg-type]


def test_head_length_of_complete_and_partial_heads() -> None:
    limits = RequestLimits()
    request = upgrade_request()
    assert limits.head_length(request) == len(request)
    assert limits.head_length(request + b"\x81\x00") == len(request)
    assert limits.head_length(request[:-1]) is None


def test_partial_request_line_over_the_limit_is_refused_before_it_ends() -> None:
    limits = RequestLimits(max_request_line=20)
    with pytest.raises(RequestTooLarge) as info:
        limits.head_length(b"GET /" + b"a" * 30)
    assert info.value.status_code == 414


@pytest.mark.parametrize(
    ("limits", "head"),
    [
        (RequestLimits(max_headers=2), b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
        (RequestLimits(max_headers=2), b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3"),
        (RequestLimits(max_header_size=10), b"GET / HTTP/1.1\r\nX: " + b"v" * 20),
        (RequestLimits(max_header_size=10), b"GET / HTTP/1.1\r\nX: " + b"v" * 20 + b"\r\n\r\n"),
        (RequestLimits(), b"GET / HTTP/1.1\r\n" + b"X: 1234567890\r\n" * 1200),
    ],
    ids=["count", "count-partial", "size-partial", "size", "total"],
)
def test_headers_over_the_limits_get_431(limits: RequestLimits, head: bytes) -> None:
    with pytest.raises(RequestTooLarge) as info:
        limits.head_length(head)
    assert info.value.status_code == 431


def test_head_at_exactly_the_limits_passes() -> None:
    limits = RequestLimits(max_request_line=16, max_headers=2, max_header_size=6)
    head = b"GET /ab HTTP/1.1\r\nHost:x\r\nA: 123\r\n\r\n"
    assert len(b"GET /ab HTTP/1.1") == 16
    assert limits.head_length(head) == len(head)
    assert feed_bytewise(limits, head) == len(head)


def feed_bytewise(limits: RequestLimits, data: bytes) -> int | None:
    """Feed ``data`` one byte at a time, as a slow client sends it."""
    scanner = HeadScanner(limits)
    result = None
    for end in range(1, len(data) + 1):
        result = scanner.feed(data[:end])
        if result is not None:
            return result
    return result


@pytest.mark.parametrize("extra", [b"", b"\x81\x00more"])
def test_scanner_fed_byte_by_byte_finds_the_same_head(extra: bytes) -> None:
    request = upgrade_request()
    assert feed_bytewise(RequestLimits(), request + extra) == len(request)
    assert feed_bytewise(RequestLimits(), request[:-1]) is None


@pytest.mark.parametrize(
    ("limits", "head", "status"),
    [
        (RequestLimits(max_request_line=20), b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n", 414),
        (RequestLimits(max_headers=2), b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
        (RequestLimits(max_header_size=10), b"GET / HTTP/1.1\r\nX: " + b"v" * 20, 431),
    ],
)
def test_scanner_fed_byte_by_byte_refuses_at_the_limit(
    limits: RequestLimits, head: bytes, status: int
) -> None:
    with pytest.raises(RequestTooLarge) as info:
        feed_bytewise(limits, head)
    assert info.value.status_code == status


def test_a_line_at_its_limit_followed_by_a_lone_cr_is_not_refused() -> None:
    limits = RequestLimits(max_header_size=6)
    scanner = HeadScanner(limits)
    head = b"GET / HTTP/1.1\r\nA: 123\r"
    assert scanner.feed(head) is None
    assert scanner.feed(head + b"\n\r\n") == len(head) + 3


def test_a_complete_head_over_16_kib_is_refused() -> None:
    limits = RequestLimits()
    head = b"GET / HTTP/1.1\r\n" + b"X: " + b"v" * 8000 + b"\r\n"
    head = head + head[16:] + head[16:] + b"\r\n"  # three 8 KB headers, in one piece
    assert len(head) > MAX_HEAD_BYTES
    with pytest.raises(RequestTooLarge) as info:
        limits.head_length(head)
    assert info.value.status_code == 431


# ----------------------------------------------------------------------
# Over memory streams


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request("/" + "a" * 9000), 414),
        (upgrade_request(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(129))), 431),
        (upgrade_request(extra=b"X-Big: " + b"v" * 9000 + b"\r\n"), 431),
    ],
    ids=["long-line", "many-headers", "big-header"],
)
async def test_requests_over_the_default_limits_are_answered_and_never_handled(
    nursery: trio.Nursery, request_bytes: bytes, status: int
) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    answer = await exchange(await listener.connect(), request_bytes)
    assert answer.status == status
    assert answer.headers[b"connection"] == b"close"


async def test_request_limits_keyword_applies(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(
        nursery, echo_handler, request_limits=RequestLimits(max_headers=7)
    )
    answer = await exchange(
        await listener.connect(), upgrade_request(extra=b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n")
    )
    assert answer.status == 431
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await ws.aclose()


def test_request_limits_keyword_must_be_request_limits() -> None:

    with pytest.raises(TypeError):
        WebSocketServer(echo_handler, [MemoryListener()], request_limits={"max_headers": 1})  # type: ignore[arg-type]


async def test_a_huge_unterminated_head_is_cut_off_at_the_limit(nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, never_called)
    stream = await listener.connect()
    await stream.send_all(b"GET / HTTP/1.1\r\nX: " + b"v" * 9000)
    # The server answered before the client sent the rest.
    answer = await read_until_eof(stream)
    assert answer.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("value", [0, -1])
def test_max_connections_below_one_raises_value_error(value: int) -> None:

    with pytest.raises(ValueError):
        WebSocketServer(echo_handler, [MemoryListener()], max_connections=value)
    with pytest.raises(TypeError):
        WebSocketServer(echo_handler, [MemoryListener()], max_connections=1.0)  # type: ignore[arg-type]


async def test_connections_over_the_cap_get_503_until_one_closes(
    nursery: trio.Nursery,
) -> None:
    server, listener = await start_memory_server(nursery, echo_handler, max_connections=2)
    first = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    second = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    assert server.connection_count == 2
    answer = await exchange(await listener.connect(), upgrade_request())
    assert answer.status == 503
    # The two open connections are unaffected.
    await second.send_message("still here")
    assert await second.get_message() == "still here"
    await first.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.connection_count == 1
    third = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await third.send_message("in")
    assert await third.get_message() == "in"
    await second.aclose()
    await third.aclose()


async def test_slow_sender_is_dropped_after_connect_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, listener = await start_memory_server(nursery, never_called, connect_timeout=5)
    stream = await listener.connect()
    start = trio.current_time()
    dropped_at: list[float] = []

    async def watch() -> None:
        assert await read_until_eof(stream) == b""  # dropped without an answer
        dropped_at.append(trio.current_time())

    nursery.start_soon(watch)
    for byte in upgrade_request():
        if dropped_at:
            break
        try:
            await stream.send_all(bytes([byte]))
        except trio.BrokenResourceError:
            break
        await trio.sleep(1)  # one byte a second: the slowloris pattern
    assert len(dropped_at) == 1
    assert 5 <= dropped_at[0] - start <= 6


# ----------------------------------------------------------------------
# Over TCP


async def test_slow_sender_over_tcp_is_dropped_while_good_clients_are_served(
    nursery: trio.Nursery,
) -> None:
    server = await nursery.start(
        partial(serve_websocket, echo_handler, "127.0.0.1", 0, None, connect_timeout=0.5)
    )
    slow = await trio.open_tcp_stream("127.0.0.1", server.port)
    await slow.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with trio.fail_after(5):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("ok")
            assert await ws.get_message() == "ok"
        # The slow one is dropped without an answer.
        assert await read_until_eof(slow) == b""
    await slow.aclose()


@pytest.mark.time_limit(60)
async def test_load_of_slow_and_garbage_clients_keeps_good_ones_served_in_bounded_memory(
    nursery: trio.Nursery,
) -> None:
    slow_count = 150
    garbage_count = 150
    server = await nursery.start(
        partial(
            serve_websocket,
            echo_handler,
            "127.0.0.1",
            0,
            None,
            connect_timeout=1.5,
            max_connections=20,
        )
    )
    url = f"ws://127.0.0.1:{server.port}/"
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        slow: list[trio.SocketStream] = []
        for _ in range(slow_count):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            # Most of a head, within the limits, never finished.
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 8000)
            slow.append(stream)

        async def garbage(index: int) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            payloads = [
                b"\x16\x03\x01" + bytes(range(256)) * 4 + b"\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 500,
                b"GET /" + b"a" * 20_000,
            ]
            try:
                await stream.send_all(payloads[index % 3])
                answer = await read_until_eof(stream)
                assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 431 "))
            except trio.BrokenResourceError:
                pass  # the server closed on us while we were still sending
            finally:
                await stream.aclose()

        served = 0

        async def good_client() -> None:
            nonlocal served
            for _ in range(100):
                try:
                    async with open_websocket_url(url) as ws:
                        await ws.send_message("ping")
                        assert await ws.get_message() == "ping"
                        served += 1
                        return
                except ConnectionRejected as rejected:  # over the cap: retry
                    assert rejected.status_code == 503
                    await trio.sleep(0.05)

        with trio.fail_after(30):
            async with trio.open_nursery() as clients:
                for index in range(garbage_count):
                    clients.start_soon(garbage, index)
                for _ in range(40):
                    clients.start_soon(good_client)
            peak = tracemalloc.get_traced_memory()[1] - baseline
            assert served == 40
            # Every slow client is dropped by the handshake timeout.
            for stream in slow:
                assert await read_until_eof(stream) == b""
                await stream.aclose()
    finally:
        tracemalloc.stop()
    # Each slow client may hold its partial head (~8 KiB) and a task; 64
    # KiB per connection is a generous bound that an unbounded buffer (the
    # 20 KB request lines, say, or 256 KiB read buffers kept per
    # connection) would break.
    assert peak < (slow_count + garbage_count + 40) * 64 * 1024
    async with open_websocket_url(url) as ws:
        await ws.send_message("after")
        assert await ws.get_message() == "after"


async def test_open_connection_is_not_affected_by_the_handshake_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _, listener = await start_memory_server(nursery, echo_handler, connect_timeout=1)
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await trio.sleep(10)
    await ws.send_message("late")
    assert await ws.get_message() == "late"
    await ws.aclose()
    with pytest.raises(ConnectionClosed):
        await ws.get_message()


async def test_max_message_size_closes_with_1009_and_the_server_keeps_serving(
    nursery: trio.Nursery,
) -> None:
    server = await nursery.start(
        partial(serve_websocket, echo_handler, "127.0.0.1", 0, None, max_message_size=1000)
    )
    url = f"ws://127.0.0.1:{server.port}/"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            await ws.send_message(b"x" * 1000)
            assert await ws.get_message() == b"x" * 1000
            await ws.send_message(b"x" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        assert info.value.reason.code == 1009
        async with open_websocket_url(url) as ws:
            await ws.send_message("small")
            assert await ws.get_message() == "small"


class FlakyListener(MemoryListener):
    """Fails its first accept() with ``error``, then works."""

    def __init__(self, error: int) -> None:
        super().__init__()
        self.error: int | None = error

    async def accept(self) -> trio.abc.Stream:
        if self.error is not None:
            error, self.error = self.error, None
            await trio.lowlevel.checkpoint()
            raise OSError(error, os.strerror(error))
        return await super().accept()


async def test_out_of_file_descriptors_pauses_accepting_then_goes_on(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = FlakyListener(errno.EMFILE)
    server = WebSocketServer(echo_handler, [listener])
    await nursery.start(server.run)
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    await ws.send_message("served")
    assert await ws.get_message() == "served"
    await ws.aclose()
    assert any("accept failed" in record.getMessage() for record in caplog.records)


async def test_other_accept_errors_propagate() -> None:
    listener = FlakyListener(errno.EBADF)
    server = WebSocketServer(echo_handler, [listener])
    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
