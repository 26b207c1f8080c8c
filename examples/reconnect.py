"""Stay subscribed to a feed that keeps dropping the connection.

Shows ``ReconnectingWebSocket``: ``on_connect`` subscribes again on every
new connection, the handler reads the feed (and pings from a second task,
in a nursery of its own, so that a silent dead connection is noticed too),
the client backs off between attempts, and ``stop()`` ends it all with a
clean close.

Run it with no argument for a self-contained demo: it starts a local feed
that hangs up after every few messages, follows it through several
reconnections, and exits by itself::

    python examples/reconnect.py

Or follow a real feed until Ctrl+C (it must answer a ``subscribe`` message
with text messages)::

    python examples/reconnect.py ws://127.0.0.1:8000/feed

Why not ``async for ws in reconnect(url)``? A generator that yields the
connection from inside ``open_websocket_url`` yields from inside that
block's nursery and cancel scopes: while your loop body runs, the
generator is suspended in the middle of them, so a cancellation or an
error meant for your code is delivered to the wrong scope, and the
connection's tasks are left without a parent that can wait for them. A
handler that the client calls keeps every scope nested where it belongs.
"""

from __future__ import annotations

import argparse
import sys

import trio

from trio_websocket import (
    ConnectionClosed,
    ReconnectingWebSocket,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

MESSAGES_PER_CONNECTION = 3
DEMO_MESSAGES = 9
HEARTBEAT_INTERVAL = 5.0
PONG_TIMEOUT = 10.0


async def heartbeat(ws: WebSocketConnection, interval: float, timeout: float) -> None:
    """Ping every ``interval`` seconds. A pong later than ``timeout`` means
    the peer or the network is gone without a word: abort the connection,
    so that the reader's ``ConnectionClosed`` starts a reconnect (raising
    ``trio.TooSlowError`` instead would end the client, as any error in the
    handler does)."""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(timeout) as late:
            await ws.ping()
        if late.cancelled_caught:
            # No use waiting long for a close frame from a silent peer.
            with trio.move_on_after(1):
                await ws.aclose(1011, "no pong")
            return


async def flaky_feed(request: WebSocketRequest) -> None:
    """Send a few ticks to each subscriber, then hang up (1001)."""
    ws = await request.accept()
    try:
        if await ws.get_message() != "subscribe":
            await ws.aclose(1008, "subscribe first")
            return
        for tick in range(MESSAGES_PER_CONNECTION):
            await ws.send_message(f"tick {tick}")
        await ws.aclose(1001, "restarting")
    except ConnectionClosed:
        pass


async def follow(url: str, limit: int | None) -> int:
    """Print each message of the feed at ``url``; stop after ``limit``
    messages (None: until cancelled). Returns how many were received."""
    received = 0

    async def subscribe(ws: WebSocketConnection) -> None:
        print(f"connected (attempt {client.attempts}), subscribing", flush=True)
        await ws.send_message("subscribe")

    async def read_feed(ws: WebSocketConnection) -> None:
        nonlocal received
        while True:
            message = await ws.get_message()  # ConnectionClosed on a drop
            received += 1
            print(f"< {message}", flush=True)
            if limit is not None and received >= limit:
                client.stop()  # closes with 1000; run() returns

    async def handler(ws: WebSocketConnection) -> None:
        # When read_feed sees the drop, its ConnectionClosed cancels the
        # heartbeat and leaves the nursery: the client reconnects.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat, ws, HEARTBEAT_INTERVAL, PONG_TIMEOUT)
            await read_feed(ws)

    client = ReconnectingWebSocket(
        url,
        handler,
        on_connect=subscribe,
        initial_delay=0.1,
        max_delay=5,
        max_attempts=10,
        connect_timeout=10,
    )
    await client.run()
    print(
        f"done: {received} messages over {client.connections} connections, "
        f"last drop: {client.last_error!r}",
        flush=True,
    )
    return received


async def demo() -> int:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, flaky_feed, "127.0.0.1", 0, None)
        received = await follow(f"ws://127.0.0.1:{server.port}/feed", DEMO_MESSAGES)
        nursery.cancel_scope.cancel()
    return 0 if received == DEMO_MESSAGES else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Follow a WebSocket feed across drops.")
    parser.add_argument("url", nargs="?", help="ws:// or wss:// URL (default: a local demo)")
    args = parser.parse_args()
    try:
        if args.url is None:
            status = trio.run(demo)
        else:
            trio.run(follow, args.url, None)
            status = 0
    except ValueError as exc:  # not a ws:// or wss:// URL
        parser.error(str(exc))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
