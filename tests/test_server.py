"""The server entry points: ``serve_websocket``, ``WebSocketServer`` and the
``WebSocketRequest`` a handler accepts or rejects.

Most tests run a real loopback TCP server, since that is what
``serve_websocket`` opens. Tests about timeouts serve a fake in-memory
listener instead (``MemoryListener``), so that trio's autojump clock is
deterministic. Raw clients are driven by hand with wsproto's handshake.

A handler that lets an exception escape makes ``serve_websocket`` raise it
(like ``trio.serve_tcp``), so handlers here catch ``ConnectionClosed`` unless
the test is about that.
"""

from __future__ import annotations

import math
import sys
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler
from wsproto import ConnectionType
from wsproto.events import RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    Endpoint,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

# ---------------------------------------------------------------------------
# Helpers


class HandlerError(Exception):
    """Raised by a test's handler."""




class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener handing out in-memory streams; ``connect()`` is the client
    side. Not a TCP listener, so the server describes it by ``repr()``."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()

    def __repr__(self) -> str:
        return f"<MemoryListener {self.name}>"


class NamedListener(MemoryListener):
    """A listener whose ``str()`` differs from its ``repr()``."""

    def __str__(self) -> str:
        return f"str-of-{self.name}"


def request_bytes(target: str = "/", subprotocols: list[str] | None = None) -> bytes:
    handshake = H11Handshake(ConnectionType.CLIENT)
    return handshake.send(
        Request(host="127.0.0.1", target=target, subprotocols=subprotocols or [])
    )


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    data = b""
    try:
        for _ in range(10_000):
            chunk = await stream.receive_some()
            if not chunk:
                return data
            data += chunk
    except trio.BrokenResourceError:
        return data
    raise AssertionError("the server kept sending")


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in leaves(exc)]
    return [group]


# ---------------------------------------------------------------------------
# The request a handler sees


async def test_handler_sees_path_headers_subprotocols_and_endpoints(
    nursery: trio.Nursery,
) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["headers"] = list(request.headers)
        seen["subprotocols"] = tuple(request.proposed_subprotocols)
        seen["local"] = request.local
        seen["remote"] = request.remote
        ws = await request.accept()
        seen["connection_remote"] = ws.remote
        seen["is_server"] = ws.is_server
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/room/7?user=ann",
            subprotocols=["one", "two"],
            extra_headers=[(b"X-Client", b"tests")],
        ) as ws:
            client_local = ws.local
    assert seen["path"] == "/room/7?user=ann"
    assert (b"x-client", b"tests") in seen["headers"]
    assert seen["subprotocols"] == ("one", "two")
    assert seen["local"] == Endpoint("127.0.0.1", server.port, False)
    assert isinstance(seen["remote"], Endpoint)
    assert seen["remote"] == client_local
    assert seen["remote"].address == "127.0.0.1"
    assert seen["connection_remote"] == client_local
    assert seen["is_server"] is True


async def test_accept_with_offered_subprotocol_selects_it_on_both_sides(
    nursery: trio.Nursery,
) -> None:
    chosen: list[str | None] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept(
            subprotocol="two", extra_headers=[(b"X-Server", b"yes")]
        )
        chosen.append(ws.subprotocol)
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=["one", "two"]
        ) as ws:
            assert ws.subprotocol == "two"
            assert (b"x-server", b"yes") in [(k.lower(), v) for k, v in ws.handshake_headers]
    assert chosen == ["two"]


async def test_accept_without_subprotocol_selects_none(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=["one"]
        ) as ws:
            assert ws.subprotocol is None


async def test_accept_with_subprotocol_not_offered_raises_value_error(
    nursery: trio.Nursery,
) -> None:
    errors: list[BaseException] = []

    async def handler(request: WebSocketRequest) -> None:
        try:
            await request.accept(subprotocol="three")
        except ValueError as exc:
            errors.append(exc)
        # The request is still undecided and can be accepted properly.
        await echo_handler(request)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=["one", "two"]
        ) as ws:
            assert ws.subprotocol is None
            await ws.send_message("ok")
            assert await ws.get_message() == "ok"
    assert len(errors) == 1


@pytest.mark.parametrize("status", [100, 101, 199])
async def test_reject_with_informational_status_raises_value_error(
    nursery: trio.Nursery, status: int
) -> None:
    errors: list[BaseException] = []

    async def handler(request: WebSocketRequest) -> None:
        try:
            await request.reject(status)
        except ValueError as exc:
            errors.append(exc)
        await request.reject(400)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            pytest.fail("connected although rejected")
    assert info.value.status_code == 400
    assert len(errors) == 1


async def test_reject_sends_status_headers_and_body_then_closes(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(
            418, extra_headers=[(b"X-Reason", b"teapot")], body=b"short and stout"
        )

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    handshake = H11Handshake(ConnectionType.CLIENT)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(handshake.send(Request(host="127.0.0.1", target="/")))
        answer = await read_until_eof(stream)  # the server closes after the body
        await stream.aclose()
    handshake.receive_data(answer)
    events = list(handshake.events())
    rejection = events[0]
    assert isinstance(rejection, RejectConnection)
    assert rejection.status_code == 418
    assert (b"x-reason", b"teapot") in [(k.lower(), v) for k, v in rejection.headers]
    body = b"".join(e.data for e in events[1:] if isinstance(e, RejectData))
    assert body == b"short and stout"
    assert isinstance(events[-1], RejectData)
    assert events[-1].body_finished


async def test_request_cannot_be_decided_twice(nursery: trio.Nursery) -> None:
    errors: list[BaseException] = []
    handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        await request.reject(404)
        try:
            await request.accept()
        except RuntimeError as exc:
            errors.append(exc)
        handler_done.set()

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
                pytest.fail("connected although rejected")
        await handler_done.wait()
    assert info.value.status_code == 404
    assert len(errors) == 1


# ---------------------------------------------------------------------------
# What the client sees when the handler finishes


async def test_handler_returning_closes_connection_with_1000(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("bye")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            assert await ws.get_message() == "bye"  # sent before the close
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 1000
    assert ws.closed is not None
    assert ws.closed.code == 1000


async def test_handler_exception_propagates_out_of_serve_websocket_and_closes_1011() -> None:
    codes: list[int] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        raise HandlerError("handler failed")

    with trio.fail_after(10):
        with pytest.RaisesGroup(HandlerError, flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                    await ws.send_message("trigger")
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.get_message()
                    assert info.value.reason is not None
                    codes.append(info.value.reason.code)
                # Only reached if the server did not raise (a bug).
                await trio.sleep_forever()
    assert codes == [1011]


async def test_handler_exception_before_accepting_propagates_and_answers_500() -> None:
    statuses: list[int] = []

    async def handler(request: WebSocketRequest) -> None:
        raise HandlerError("handler failed early")

    with trio.fail_after(10):
        with pytest.RaisesGroup(HandlerError, flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
                        pytest.fail("connected although the handler raised")
                statuses.append(info.value.status_code)
                await trio.sleep_forever()
    assert statuses == [500]


async def test_handler_exception_keeps_its_traceback_and_cause() -> None:
    async def handler(request: WebSocketRequest) -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise HandlerError("outer") from exc

    with trio.fail_after(10):
        with pytest.raises(BaseExceptionGroup) as info:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
                with pytest.raises(ConnectionRejected):
                    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
                        pass
                await trio.sleep_forever()
    (error,) = [exc for exc in leaves(info.value) if not isinstance(exc, trio.Cancelled)]
    assert isinstance(error, HandlerError)
    assert isinstance(error.__cause__, KeyError)
    tb = error.__traceback__
    names = []
    for _ in range(1000):
        if tb is None:
            break
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert names[-1] == "handler"


async def test_handler_returning_without_deciding_answers_403(nursery: trio.Nursery) -> None:
    calls: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        calls.append(request.path)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/undecided"):
            pytest.fail("connected although the handler never accepted")
    assert info.value.status_code == 403
    assert calls == ["/undecided"]


@pytest.mark.parametrize(
    "garbage",
    [
        b"NONSENSE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Length: 0\r\n\r\n",
    ],
    ids=["not-http", "binary", "post"],
)
async def test_garbage_request_gets_400_and_never_reaches_handler(
    nursery: trio.Nursery, garbage: bytes
) -> None:
    calls: list[WebSocketRequest] = []

    async def handler(request: WebSocketRequest) -> None:
        calls.append(request)
        await echo_handler(request)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(garbage)
        answer = await read_until_eof(stream)
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400 ")
        # The server is still serving.
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/after") as ws:
            await ws.send_message("fine")
            assert await ws.get_message() == "fine"
    assert [request.path for request in calls] == ["/after"]


async def test_client_closing_before_request_never_reaches_handler(
    nursery: trio.Nursery,
) -> None:
    calls: list[WebSocketRequest] = []

    async def handler(request: WebSocketRequest) -> None:
        calls.append(request)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\n")
        await stream.send_eof()
        assert await read_until_eof(stream) == b""
        await stream.aclose()
        with pytest.raises(ConnectionRejected):  # served as usual afterwards
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
                pass
    assert len(calls) == 1


# ---------------------------------------------------------------------------
# Timeouts (in memory, with the autojump clock)


async def test_slow_handshake_is_dropped_after_connect_timeout_and_others_are_served(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    calls: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        calls.append(request.path)
        await echo_handler(request)

    server = WebSocketServer(handler, [listener], connect_timeout=10)
    assert await nursery.start(server.run) is server
    start = trio.current_time()

    slow = await listener.connect()
    await slow.send_all(b"GET /slow HTTP/1.1\r\nHost: example.com\r\n")  # never finished

    async def echo_once(path: str) -> None:
        stream = await listener.connect()
        async with trio.open_nursery() as client_nursery:
            ws = await wrap_client_stream(client_nursery, stream, "example.com", path)
            await ws.send_message(path)
            assert await ws.get_message() == path
            await ws.aclose()

    # Served while the slow client is still pending, without waiting for it.
    await echo_once("/fast-1")
    assert trio.current_time() == start

    assert await read_until_eof(slow) == b""  # dropped, with nothing sent back
    assert trio.current_time() - start == pytest.approx(10)

    await echo_once("/fast-2")
    assert calls == ["/fast-1", "/fast-2"]


async def test_disconnect_timeout_bounds_the_close_after_handler_returns(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        await request.accept()
        handler_done.set()

    server = WebSocketServer(handler, [listener], disconnect_timeout=4)
    await nursery.start(server.run)
    stream = await listener.connect()
    await stream.send_all(request_bytes("/"))
    start = trio.current_time()
    # The client never answers the close frame; the server gives up after 4 s
    # and closes the stream.
    received = await read_until_eof(stream)
    assert trio.current_time() - start == pytest.approx(4)
    assert handler_done.is_set()
    assert b"101 Switching Protocols" in received
    assert received.endswith(b"\x88\x02\x03\xe8")  # the close frame, 1000


# ---------------------------------------------------------------------------
# The handler nursery


async def test_handlers_run_in_the_given_handler_nursery(nursery: trio.Nursery) -> None:
    parents: list[trio.Nursery | None] = []

    async def handler(request: WebSocketRequest) -> None:
        parents.append(trio.lowlevel.current_task().parent_nursery)
        await echo_handler(request)

    with trio.fail_after(10):
        async with trio.open_nursery() as handler_nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    handler,
                    "127.0.0.1",
                    0,
                    None,
                    handler_nursery=handler_nursery,
                )
            )
            for _ in range(2):
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                    await ws.send_message("x")
                    assert await ws.get_message() == "x"
    assert parents == [handler_nursery, handler_nursery]


async def test_handlers_run_in_the_servers_own_nursery_by_default(
    nursery: trio.Nursery,
) -> None:
    parents: list[trio.Nursery | None] = []

    async def handler(request: WebSocketRequest) -> None:
        parents.append(trio.lowlevel.current_task().parent_nursery)
        await echo_handler(request)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            pass
    (parent,) = parents
    assert parent is not nursery
    assert parent is not None


# ---------------------------------------------------------------------------
# WebSocketServer: listeners and port


def test_server_without_listeners_raises_value_error() -> None:
    with pytest.raises(ValueError):
        WebSocketServer(echo_handler, [])


async def test_port_of_a_single_tcp_listener() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        assert len(listeners) == 1
        server = WebSocketServer(echo_handler, listeners)
        port = listeners[0].socket.getsockname()[1]
        assert server.port == port
        assert server.listeners == [Endpoint("127.0.0.1", port, False)]
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_port_with_two_listeners_raises_runtime_error() -> None:
    first = await trio.open_tcp_listeners(0, host="127.0.0.1")
    second = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        server = WebSocketServer(echo_handler, [*first, *second])
        with pytest.raises(RuntimeError):
            server.port  # noqa: B018
        ports = [listener.socket.getsockname()[1] for listener in (*first, *second)]
        assert server.listeners == [Endpoint("127.0.0.1", port, False) for port in ports]
    finally:
        for listener in (*first, *second):
            await listener.aclose()


def test_port_of_a_non_tcp_listener_raises_runtime_error() -> None:
    server = WebSocketServer(echo_handler, [MemoryListener()])
    with pytest.raises(RuntimeError):
        server.port  # noqa: B018


async def test_listeners_gives_endpoints_for_tcp_and_text_for_others() -> None:
    tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
    memory = MemoryListener("m1")
    try:
        server = WebSocketServer(echo_handler, [*tcp, memory])
        port = tcp[0].socket.getsockname()[1]
        assert server.listeners == [Endpoint("127.0.0.1", port, False), repr(memory)]
        with pytest.raises(RuntimeError):
            server.port  # noqa: B018
    finally:
        await tcp[0].aclose()


def test_listeners_describes_other_listeners_by_repr_like_the_original() -> None:
    listener = NamedListener("n1")
    server = WebSocketServer(echo_handler, [listener])
    assert server.listeners == ["<MemoryListener n1>"]


async def test_serve_websocket_with_host_none_listens_on_all_interfaces(
    nursery: trio.Nursery,
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, None, 0, None)
    endpoints = [e for e in server.listeners if isinstance(e, Endpoint)]
    assert endpoints
    ipv4 = [e for e in endpoints if e.address == "0.0.0.0"]
    if not ipv4:  # pragma: no cover
        pytest.skip("host=None opened no IPv4 listener here")
    url = f"ws://127.0.0.1:{ipv4[0].port}/"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            await ws.send_message("anywhere")
            assert await ws.get_message() == "anywhere"


# ---------------------------------------------------------------------------
# Many clients and shutdown


async def test_many_concurrent_clients_each_get_their_own_echoes(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    results: dict[int, list[str | bytes]] = {}

    async def client(number: int) -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/c{number}") as ws:
            received: list[str | bytes] = []
            for i in range(5):
                await ws.send_message(f"client {number} message {i}")
                received.append(await ws.get_message())
            await ws.send_message(bytes([number]) * 1000)
            received.append(await ws.get_message())
            results[number] = received

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for number in range(20):
                clients.start_soon(client, number)
    assert sorted(results) == list(range(20))
    for number, received in results.items():
        expected: list[str | bytes] = [f"client {number} message {i}" for i in range(5)]
        assert received == [*expected, bytes([number]) * 1000]


async def test_cancelling_the_server_closes_open_connections(nursery: trio.Nursery) -> None:
    accepted = trio.Event()
    handler_finished = trio.Event()
    stopped = trio.Event()
    server_scope = trio.CancelScope()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        accepted.set()
        try:
            await ws.get_message()
        finally:
            handler_finished.set()

    async def run_server(task_status: trio.TaskStatus[WebSocketServer]) -> None:
        with server_scope:
            await serve_websocket(handler, "127.0.0.1", 0, None, task_status=task_status)
        stopped.set()

    before = set(nursery.child_tasks)
    server = await nursery.start(run_server)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await accepted.wait()
            server_scope.cancel()
            await stopped.wait()  # the server stopped without raising
            assert handler_finished.is_set()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
    assert server_scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert set(nursery.child_tasks) == before
    # The port is closed.
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_str_of_a_tcp_connection_names_role_and_both_endpoints(
    nursery: trio.Nursery,
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            text = str(ws)
            assert text.startswith("client-")
            assert f"127.0.0.1:{ws.local.port}" in text
            assert f"127.0.0.1:{server.port}" in text
