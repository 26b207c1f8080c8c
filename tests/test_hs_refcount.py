"""A finished connection is freed by reference counting alone (no cyclic
garbage): over TLS and plain TCP, the server's connection, its stream and
wsproto's objects are gone as soon as the connection's task has ended,
with the cyclic collector off."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import trio
from test_tls_handshake import client_context, serve_on_loopback

from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
)


# The last cycle, between the connection and wsproto's frame decoder (its
# callback asking how much of a frame it may hold), is broken by
# ``_wire.frame_decoder.forget_room``, which the reader calls as it ends.
# (With the fast paths off a wss stream runs trio's own SSLStream code,
# whose handshake leaves cycles of trio's making: the fixture keeps them on.)
@pytest.mark.usefixtures("fast_paths_on")
@pytest.mark.parametrize("tls", [True, False], ids=["wss", "ws"])
async def test_a_finished_connection_is_freed_by_reference_counting(
    no_cyclic_collector: None, tls: bool
) -> None:
    kept: list[weakref.ref[Any]] = []
    ended = trio.Event()

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        # (The connection and a lean socket stream take no weak
        # references: what they hold does, and the cycle ran through it.)
        protocol = ws._proto  # type: ignore[attr-defined]
        kept.extend([weakref.ref(protocol), weakref.ref(protocol._proto)])
        if tls:
            kept.append(weakref.ref(ws._stream))  # type: ignore[attr-defined]
        del protocol
        try:
            await ws.send_message(await ws.get_message())
        finally:
            del ws
            ended.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await serve_on_loopback(nursery, echo, tls=tls)
            scheme = "wss" if tls else "ws"
            async with open_websocket_url(
                f"{scheme}://127.0.0.1:{server.port}/",
                ssl_context=client_context() if tls else None,
            ) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
            await ended.wait()
            for _ in range(100):  # the connection's task ends right after its handler
                if all(ref() is None for ref in kept):
                    break
                await trio.sleep(0.01)
            assert [ref() for ref in kept] == [None] * len(kept)
            assert not any(
                type(each) is WebSocketConnection and each.is_server for each in gc.get_objects()
            )
            nursery.cancel_scope.cancel()
