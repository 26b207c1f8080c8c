"""What a finished connection leaves to the cyclic garbage collector: a
closed TLS stream of ours gives its own methods back (bound to it and kept
in its ``__dict__``, they made it a reference cycle), so that it is freed
by reference counting alone, and the server has every stream it closed do
so."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import trio
from test_tls_handshake import client_context, default_pair, serve_on_loopback, tcp

from trio_websocket import WebSocketRequest, open_websocket_url
from trio_websocket._wire.tls_stream import forget_own_methods, tls_stream

# The methods are bound onto our streams only with the fast paths on (off,
# a stream runs trio's own SSLStream code): the mechanism, tested with them
# forced on.
pytestmark = pytest.mark.usefixtures("fast_paths_on")


async def closed_tls_stream() -> trio.SSLStream[Any]:
    """A server-side stream of ours that did a handshake, carried data
    both ways and was closed."""
    sockets = tcp()
    ours, peer = default_pair(tls_stream, sockets)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.send_all, b"hello")
        assert await ours.receive_some(10) == b"hello"
    await ours.send_all(b"back")
    assert await peer.receive_some(10) == b"back"
    await ours.aclose()
    await peer.aclose()
    sockets.ours.close()
    sockets.peer.close()
    return ours


async def test_a_closed_tls_stream_that_forgot_its_methods_is_freed_by_refcounting(
    no_cyclic_collector: None,
) -> None:
    with trio.fail_after(10):
        stream = await closed_tls_stream()
        assert "receive_some" in vars(stream)  # (the direct paths were in use)
        forget_own_methods(stream)
        freed = weakref.ref(stream)
        del stream
        assert freed() is None


async def test_a_closed_tls_stream_keeps_its_methods_until_it_forgets_them(
    no_cyclic_collector: None,
) -> None:
    # What forget_own_methods undoes: without it, only the cyclic
    # collector frees the stream.
    with trio.fail_after(10):
        stream = await closed_tls_stream()
        freed = weakref.ref(stream)
        del stream
        assert freed() is not None
        gc.collect()
        assert freed() is None


async def test_a_closed_tls_stream_answers_as_trios_after_forgetting() -> None:
    with trio.fail_after(10):
        stream = await closed_tls_stream()
        forget_own_methods(stream)
        assert not {"receive_some", "send_all"} & vars(stream).keys()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(10)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"late")


async def test_an_open_tls_stream_keeps_its_methods() -> None:
    with trio.fail_after(10):
        sockets = tcp()
        ours, peer = default_pair(tls_stream, sockets)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.do_handshake)
            await ours.do_handshake()
        forget_own_methods(ours)
        assert {"receive_some", "send_all"} <= vars(ours).keys()
        forget_own_methods(sockets.lean())  # (not a TLS stream: left alone)
        await ours.aclose()
        await peer.aclose()
        sockets.ours.close()
        sockets.peer.close()


async def test_the_server_has_each_closed_tls_stream_forget_its_methods() -> None:
    streams: list[trio.abc.Stream] = []
    ended = trio.Event()

    async def echo(request: WebSocketRequest) -> None:
        streams.append(request._stream)  # type: ignore[attr-defined]
        ws = await request.accept()
        try:
            await ws.send_message(await ws.get_message())
        finally:
            ended.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await serve_on_loopback(nursery, echo)
            async with open_websocket_url(
                f"wss://127.0.0.1:{server.port}/", ssl_context=client_context()
            ) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                (stream,) = streams
                assert "receive_some" in vars(stream)
            await ended.wait()
            # The connection's task ends right after its handler.
            for _ in range(100):
                if "receive_some" not in vars(stream):
                    break
                await trio.sleep(0.01)
            assert not {"receive_some", "send_all"} & vars(stream).keys()
            nursery.cancel_scope.cancel()
