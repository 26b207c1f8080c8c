"""The end of a session (``open_websocket_session``): cancelled from
outside, it closes its WebSockets with 1001 (``GOING_AWAY``), as
docs/http2.rst says (its HTTP/2 connections outlive the cancellation long
enough to carry the close frames; both sides see 1001); and its block
ends as soon as its WebSockets and connections are closed, not after the
connections' farewell bound."""

from __future__ import annotations

import pytest
import trio
from test_http2 import echo, running

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_session,
)


async def test_a_session_cancelled_from_outside_closes_with_1001() -> None:
    seen: list[int] = []
    handlers_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            seen.append(exc.reason.code)
            if len(seen) == 2:
                handlers_done.set()

    with trio.fail_after(10):
        async with running(handler, http2=True) as (_, base):
            websockets: list[WebSocketConnection] = []
            with trio.CancelScope() as outer:
                async with (
                    open_websocket_session(f"{base}/", http2="require") as session,
                    trio.open_nursery() as nursery,
                ):
                    for path in ("/a", "/b"):
                        ws = await session.connect_websocket(path)
                        websockets.append(ws)
                        nursery.start_soon(ws.get_message)
                    await trio.sleep(0.1)
                    outer.cancel()
                    await trio.sleep_forever()
            assert outer.cancelled_caught
            assert [ws.closed.code if ws.closed else None for ws in websockets] == [1001, 1001]
            await handlers_done.wait()
            assert seen == [1001, 1001]


@pytest.mark.parametrize("how", ["normal", "error", "cancelled"])
async def test_a_sessions_block_ends_once_its_connections_are_closed(how: str) -> None:
    with trio.fail_after(10):
        async with running(echo, http2=True) as (_, base):
            with trio.CancelScope() as outer:
                try:
                    async with open_websocket_session(f"{base}/", http2="require") as session:
                        ws = await session.connect_websocket("/a")
                        await ws.send_message("x")
                        assert await ws.get_message() == "x"
                        started = trio.current_time()
                        if how == "error":
                            raise KeyError("mine")
                        if how == "cancelled":
                            outer.cancel()
                            await trio.sleep_forever()
                except KeyError:
                    assert how == "error"
            # The farewell bound is a second: nothing waited for it.
            assert trio.current_time() - started < 0.5
            assert ws.closed is not None
            assert ws.closed.code == (1000 if how == "normal" else 1001)
