"""A keepalive task: ping the peer every few seconds, give up when it stops
answering.

``heartbeat(ws, timeout, interval)`` runs next to your receive loop in the
same nursery. A peer that is gone (a dead network path, a frozen process)
often sends no close frame and no TCP reset, so without a heartbeat the
receive loop would wait forever. When a pong is late, ``heartbeat`` raises
``trio.TooSlowError``, which cancels the nursery and with it the loop.

Run it against any WebSocket server, for example examples/echo_server.py::

    python examples/echo_server.py --port 8000 &
    python examples/heartbeat.py ws://127.0.0.1:8000/ --interval 1 --timeout 2

It prints every message the server sends, until the connection closes, the
server stops answering pings, or you press Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

import trio

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

if sys.version_info < (3, 11):  # trio installs this backport on Python 3.10
    from exceptiongroup import BaseExceptionGroup


async def heartbeat(ws: WebSocketConnection, timeout: float, interval: float) -> None:
    """Ping ``ws`` every ``interval`` seconds until the connection closes.

    Raises ``trio.TooSlowError`` when a pong does not arrive within
    ``timeout`` seconds of its ping. Returns once the connection is closed
    (by either side): there is nothing left to keep alive.
    """
    try:
        while True:
            with trio.fail_after(timeout):
                await ws.ping()
            await trio.sleep(interval)
    except ConnectionClosed:
        return


async def print_messages(ws: WebSocketConnection, done: trio.CancelScope) -> None:
    """The receive loop: print each message until the connection closes."""
    try:
        while True:
            print(f"< {await ws.get_message()!r}", flush=True)
    except ConnectionClosed as exc:
        reason = exc.reason
        how = f"code {reason.code} ({reason.name})" if reason else "no close code"
        print(f"connection closed: {how}", flush=True)
        done.cancel()  # stops the heartbeat too


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or as it leaves a trio nursery
    (wrapped in an ExceptionGroup)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_ctrl_c(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


async def main(url: str, timeout: float, interval: float) -> int:
    try:
        async with open_websocket_url(url, disconnect_timeout=timeout) as ws:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(heartbeat, ws, timeout, interval)
                    nursery.start_soon(print_messages, ws, nursery.cancel_scope)
            except BaseExceptionGroup as group:
                if group.subgroup(trio.TooSlowError) is None:
                    raise
                print(f"error: no pong within {timeout} s; giving up", file=sys.stderr)
                return 1
    except HandshakeError as exc:
        # Could not connect; or DisconnectionTimeout: a peer that stopped
        # answering pings cannot finish the closing handshake either.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Keep a WebSocket alive with pings.")
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between pings")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a pong")
    args = parser.parse_args()
    try:
        status = trio.run(main, args.url, args.timeout, args.interval)
    except BaseException as exc:
        if not is_ctrl_c(exc):
            raise
        status = 130
    sys.exit(status)
