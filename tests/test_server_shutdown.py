"""Graceful shutdown: ``WebSocketServer.aclose`` stops accepting, answers
handshakes in progress with 503, closes open connections with 1001 (or the
code given), waits for handlers up to a deadline, cancels the rest, and
reports what happened."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from conftest import echo_handler
from server_fixtures import MemoryListener, read_until_eof, start_memory_server, upgrade_request

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ShutdownReport,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)


async def wait_closed(ws: WebSocketConnection, reasons: list[CloseReason]) -> None:
    """Read until the connection closes; record why."""
    try:
        for _ in range(1000):
            await ws.get_message()
    except ConnectionClosed as closed:
        reasons.append(closed.reason)


async def stuck_handler(request: WebSocketRequest) -> None:
    await request.accept()
    await trio.sleep_forever()


# ----------------------------------------------------------------------
# Over TCP


async def test_aclose_closes_every_connection_with_1001_and_run_returns() -> None:
    reasons: list[CloseReason] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as server_nursery:
            server = await server_nursery.start(
                partial(serve_websocket, echo_handler, "127.0.0.1", 0, None)
            )
            url = f"ws://127.0.0.1:{server.port}/"

            async def client(task_status: trio.TaskStatus[None]) -> None:
                async with open_websocket_url(url) as ws:
                    await ws.send_message("hello")
                    assert await ws.get_message() == "hello"
                    task_status.started()
                    await wait_closed(ws, reasons)

            async with trio.open_nursery() as clients:
                for _ in range(3):
                    await clients.start(client)
                report = await server.aclose()
            # No cancellation needed: the serving task ended by itself.
        assert report == ShutdownReport(closed_cleanly=3, forced=0, refused=0)
        assert reasons == [CloseReason(1001, "server shutting down")] * 3
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_aclose_with_code_and_reason(nursery: trio.Nursery) -> None:
    reasons: list[CloseReason] = []
    server = await nursery.start(partial(serve_websocket, echo_handler, "127.0.0.1", 0, None))
    url = f"ws://127.0.0.1:{server.port}/"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws, trio.open_nursery() as inner:
            inner.start_soon(wait_closed, ws, reasons)
            report = await server.aclose(code=4000, reason="maintenance")
    assert reasons == [CloseReason(4000, "maintenance")]
    assert report.closed_cleanly == 1


async def test_handler_that_ignores_the_close_is_forced_after_the_timeout() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as server_nursery:
            server = await server_nursery.start(
                partial(serve_websocket, stuck_handler, "127.0.0.1", 0, None)
            )
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                start = trio.current_time()
                report = await server.aclose(timeout=0.5)
                elapsed = trio.current_time() - start
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
    assert report == ShutdownReport(closed_cleanly=0, forced=1, refused=0)
    assert 0.4 <= elapsed < 5


# ----------------------------------------------------------------------
# Over memory streams, with the autojump clock


async def test_handshake_in_progress_gets_503(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, listener = await start_memory_server(nursery, echo_handler)
    stream = await listener.connect()
    await stream.send_all(upgrade_request()[:30])
    await trio.sleep(1)
    report = await server.aclose()
    assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 503 ")
    assert report == ShutdownReport(closed_cleanly=0, forced=0, refused=1)
    assert listener.closed


async def test_undecided_request_gets_503_and_accept_then_raises(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    accept_errors: list[ConnectionClosed] = []
    reached = trio.Event()

    async def slow_deciding_handler(request: WebSocketRequest) -> None:
        reached.set()
        await trio.sleep(3)  # e.g. looking the user up
        try:
            await request.accept()
        except ConnectionClosed as closed:
            accept_errors.append(closed)
        await request.reject(403)  # a no-op now, not an error

    server, listener = await start_memory_server(nursery, slow_deciding_handler)
    stream = await listener.connect()
    await stream.send_all(upgrade_request())
    await reached.wait()
    report = await server.aclose(code=1012, reason="restarting")
    assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 503 ")
    assert [error.reason for error in accept_errors] == [CloseReason(1012, "restarting")]
    assert report == ShutdownReport(closed_cleanly=0, forced=0, refused=1)


async def test_forced_handler_is_cancelled_at_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(ws.closed is not None)
            raise

    server, listener = await start_memory_server(nursery, handler)
    ws = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    start = trio.current_time()
    report = await server.aclose(timeout=7)
    assert trio.current_time() - start == pytest.approx(7)
    assert report == ShutdownReport(closed_cleanly=0, forced=1, refused=0)
    assert cancelled == [True]
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason.code == 1001


async def test_clean_and_forced_are_counted_separately(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        if request.path == "/stuck":
            await stuck_handler(request)
        else:
            await echo_handler(request)

    server, listener = await start_memory_server(nursery, handler)
    for path in ["/a", "/stuck", "/b", "/stuck"]:
        await wrap_client_stream(nursery, await listener.connect(), "example.com", path)
    assert server.connection_count == 4
    report = await server.aclose(timeout=2)
    assert report == ShutdownReport(closed_cleanly=2, forced=2, refused=0)
    assert server.connection_count == 0


async def test_aclose_twice_and_concurrently_returns_the_same_report(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, listener = await start_memory_server(nursery, stuck_handler)
    await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    reports: list[ShutdownReport] = []

    async def close(timeout: float) -> None:
        reports.append(await server.aclose(timeout=timeout))

    async with trio.open_nursery() as closers:
        closers.start_soon(close, 3)
        await trio.testing.wait_all_tasks_blocked()
        closers.start_soon(close, 100)  # joins the first; its timeout is ignored
    reports.append(await server.aclose())
    assert reports == [ShutdownReport(forced=1)] * 3
    assert trio.current_time() < 10


async def test_shutdown_goes_on_when_the_caller_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, stuck_handler)
        await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
        with trio.move_on_after(1):
            await server.aclose(timeout=5)
        assert trio.current_time() < 5
        report = await server.aclose()
        assert report.forced == 1
        nursery.cancel_scope.cancel()  # the client's reader


async def test_new_connections_are_refused_once_closing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, listener = await start_memory_server(nursery, stuck_handler)
    await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
    nursery.start_soon(partial(server.aclose, timeout=5))
    await trio.sleep(1)
    assert listener.closed
    with pytest.raises(OSError):
        await listener.connect()


async def test_aclose_before_run_closes_the_listeners_and_run_then_refuses() -> None:
    listener = MemoryListener()
    server = WebSocketServer(echo_handler, [listener])
    assert await server.aclose() == ShutdownReport()
    assert listener.closed
    with pytest.raises(RuntimeError):
        await server.run()


async def test_run_twice_raises_runtime_error(nursery: trio.Nursery) -> None:
    server, _ = await start_memory_server(nursery, echo_handler)
    with pytest.raises(RuntimeError):
        await server.run()
    await server.aclose()


async def test_shutdown_waits_for_handlers_in_a_handler_nursery(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    finished: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed:
            await trio.sleep(1)  # cleanup that takes a while
            finished.append(request.path)

    async with trio.open_nursery() as handlers:
        server, listener = await start_memory_server(nursery, handler, handler_nursery=handlers)
        await wrap_client_stream(nursery, await listener.connect(), "example.com", "/x")
        report = await server.aclose(timeout=5)
        assert finished == ["/x"]
        assert report == ShutdownReport(closed_cleanly=1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"code": 999}, ValueError),
        ({"code": 5000}, ValueError),
        ({"code": True}, TypeError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "5"}, TypeError),
    ],
)
async def test_aclose_with_bad_arguments_raises_and_changes_nothing(
    nursery: trio.Nursery, kwargs: dict[str, object], error: type[Exception]
) -> None:
    server, listener = await start_memory_server(nursery, echo_handler)
    with pytest.raises(error):
        await server.aclose(**kwargs)  # type: ignore[arg-type]
    assert not listener.closed
    await server.aclose()


async def test_connection_closed_escaping_a_handler_during_shutdown_is_no_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def careless_handler(request: WebSocketRequest) -> None:
        if request.path == "/undecided":
            await trio.sleep(5)
        ws = await request.accept()  # raises for the undecided one
        while True:
            await ws.send_message(await ws.get_message())  # raises at the close

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, careless_handler)
        client = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
        undecided = await listener.connect()
        await undecided.send_all(upgrade_request("/undecided"))
        await trio.testing.wait_all_tasks_blocked()
        report = await server.aclose()
        assert report == ShutdownReport(closed_cleanly=1, forced=0, refused=1)
        with pytest.raises(ConnectionClosed):
            await client.get_message()
        assert (await read_until_eof(undecided)).startswith(b"HTTP/1.1 503 ")


async def test_a_handler_may_shut_the_server_down_and_is_then_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reports: list[ShutdownReport] = []

    async def admin_handler(request: WebSocketRequest) -> None:
        await request.accept()
        reports.append(await server.aclose(timeout=3))  # cancelled at the deadline

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, admin_handler)
        await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
        assert await server.aclose() == ShutdownReport(forced=1)
        assert trio.current_time() == pytest.approx(3)
        nursery.cancel_scope.cancel()
    assert reports == []


def test_aclose_takes_keyword_arguments_only() -> None:
    import inspect

    parameters = inspect.signature(WebSocketServer.aclose).parameters
    assert [(p.name, p.kind) for p in parameters.values()][1:] == [
        ("code", inspect.Parameter.KEYWORD_ONLY),
        ("reason", inspect.Parameter.KEYWORD_ONLY),
        ("timeout", inspect.Parameter.KEYWORD_ONLY),
    ]
    assert parameters["code"].default == 1001
    assert inspect.iscoroutinefunction(WebSocketServer.aclose)


async def test_connection_accepted_while_shutting_down_is_closed_once_started(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    from server_fixtures import HeldSendStream

    held: list[HeldSendStream] = []

    def hold(stream: trio.abc.Stream) -> trio.abc.Stream:
        held.append(HeldSendStream(stream))
        return held[-1]

    server, listener = await start_memory_server(nursery, echo_handler, wrap=hold)
    client_stream = await listener.connect()
    reasons: list[CloseReason] = []

    async def client() -> None:
        ws = await wrap_client_stream(nursery, client_stream, "example.com", "/")
        await wait_closed(ws, reasons)

    nursery.start_soon(client)
    await held[0].sending.wait()  # the 101 answer is on its way out
    reports: list[ShutdownReport] = []

    async def close() -> None:
        reports.append(await server.aclose(timeout=5))

    nursery.start_soon(close)
    await trio.testing.wait_all_tasks_blocked()
    held[0].release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert reasons == [CloseReason(1001, "server shutting down")]
    assert reports == [ShutdownReport(closed_cleanly=1)]
