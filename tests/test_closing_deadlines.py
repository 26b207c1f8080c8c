"""Deadlines the closing registers only where it can wait: the reader's
grace period goes on its scope unless its graceful close cannot wait (the
close echo written at once on a lean socket, whose ``aclose`` never
waits), and a server's connection task bounds the closing after its
handler with ``disconnect_timeout`` unless the connection is over already
(``WebSocketRequest._over``). A deadline costs a registration and its
removal in trio's deadline heap per connection; where nothing waits, no
deadline can change anything."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from test_tls_stream import client_context, server_context

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from trio_websocket.testing import open_memory_pair


async def served_and_closed_by_the_client(
    nursery: trio.Nursery, tls: bool
) -> tuple[WebSocketRequest, WebSocketConnection]:
    """A server's request and connection, over TCP on 127.0.0.1 (TLS or
    not), which the client opened and closed; returned once the server's
    reader has ended."""
    served: list[tuple[WebSocketRequest, WebSocketConnection]] = []
    handled = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        served.append((request, ws))
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        handled.set()

    server: Any = await nursery.start(
        serve_websocket, handler, "127.0.0.1", 0, server_context() if tls else None
    )
    context = client_context()
    context.check_hostname = False  # (the test certificate names example.org)
    async with open_websocket("127.0.0.1", server.port, "/", use_ssl=context if tls else False):
        pass
    await handled.wait()
    request, ws = served[0]
    await ws._wait_reader_ended()
    return request, ws


@pytest.mark.usefixtures("fast_paths_on")
async def test_a_close_echo_written_at_once_gets_no_grace_deadline(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        request, ws = await served_and_closed_by_the_client(nursery, tls=False)
    assert ws.closed is not None and ws.closed.code == 1000
    assert ws._reader_scope.deadline == math.inf
    assert request._over


async def test_a_close_that_can_wait_still_gets_the_grace_deadline(
    nursery: trio.Nursery,
) -> None:
    # Over TLS the echo is a TLS write, which may wait for room: the grace
    # period bounds it, as before (in either mode of the fast paths).
    with trio.fail_after(10):
        _, ws = await served_and_closed_by_the_client(nursery, tls=True)
    assert ws.closed is not None and ws.closed.code == 1000
    assert ws._reader_scope.deadline < math.inf
    # So over any other stream (memory streams here).
    with trio.fail_after(10):
        async with open_memory_pair() as (client, server):
            await client.aclose()
            with pytest.raises(ConnectionClosed):
                await server.get_message()
            await server._wait_reader_ended()
            assert server._reader_scope.deadline < math.inf


async def test_a_request_is_over_once_its_reader_ended_or_never_started(
    nursery: trio.Nursery,
) -> None:
    seen: list[tuple[str, bool]] = []
    handled = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        seen.append(("undecided", request._over))
        ws = await request.accept()
        seen.append(("open", request._over))
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        await ws._wait_reader_ended()
        seen.append(("ended", request._over))
        handled.set()

    with trio.fail_after(10):
        server: Any = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False):
            pass
        await handled.wait()
    assert seen == [("undecided", False), ("open", False), ("ended", True)]
