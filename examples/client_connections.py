"""Three ways to reach a server, and what a failed connection tells you.

A self-contained tour of the client's connection options; it starts its own
local servers and exits by itself::

    python examples/client_connections.py

1. ``unix_socket_path``: talk to a server on a Unix domain socket; the URL
   still gives the Host header and the resource.
2. ``max_redirects``: follow a server that answers ``301 Moved
   Permanently`` with a ``Location`` (not followed unless you ask).
3. ``HandshakeError.phase``: each failed open says which step failed,
   ``dns``, ``connect``, ``tls`` or ``http``, with the low-level error
   chained as ``__cause__``.

Output: one line per step; it exits 0 when every step went as described.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile

import trio

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)


async def greeter(request: WebSocketRequest) -> None:
    """Greet each client with the path it asked for; refuse ``/missing``
    with 404 and move ``/old`` to ``/new``."""
    if request.path == "/missing":
        await request.reject(404, body=b"no such feed")
        return
    if request.path == "/old":
        await request.reject(301, extra_headers=[(b"Location", b"/new")])
        return
    ws = await request.accept()
    try:
        await ws.send_message(f"hello, you asked for {request.path}")
        await ws.get_message()
    except ConnectionClosed:
        pass


async def serve_unix_socket(nursery: trio.Nursery, path: str) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    server = WebSocketServer(greeter, [trio.SocketListener(sock)])
    await nursery.start(server.run)


async def unix_socket_step(nursery: trio.Nursery, directory: str) -> bool:
    path = os.path.join(directory, "app.sock")
    await serve_unix_socket(nursery, path)
    async with open_websocket_url("ws://app.local/events", unix_socket_path=path) as ws:
        greeting = await ws.get_message()
    print(f"1. over the Unix socket: {greeting}", flush=True)
    return greeting == "hello, you asked for /events"


async def redirect_step(port: int) -> bool:
    url = f"ws://127.0.0.1:{port}/old"
    try:
        async with open_websocket_url(url):
            pass
    except HandshakeError as exc:
        print(f"2. without max_redirects: {exc}", flush=True)
    async with open_websocket_url(url, max_redirects=3) as ws:
        greeting = await ws.get_message()
        print(f"2. with max_redirects=3: now at {ws.path}: {greeting}", flush=True)
    return ws.path == "/new"


async def failure_step(name: str, url: str, expected_phase: str) -> bool:
    try:
        async with open_websocket_url(url, connect_timeout=10):
            pass
    except HandshakeError as exc:
        cause = "" if exc.__cause__ is None else f" (cause: {type(exc.__cause__).__name__})"
        print(f"3. {name}: phase={exc.phase}{cause}: {exc}", flush=True)
        return exc.phase == expected_phase
    print(f"3. {name}: connected?!", flush=True)
    return False


async def main() -> int:
    results = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, greeter, "127.0.0.1", 0, None)
        with tempfile.TemporaryDirectory(prefix="tws-") as directory:
            if hasattr(socket, "AF_UNIX"):
                results.append(await unix_socket_step(nursery, directory))
            results.append(await redirect_step(server.port))
            with socket.socket() as unused:  # bound, never listening: refused
                unused.bind(("127.0.0.1", 0))
                closed_port = unused.getsockname()[1]
                results.append(
                    await failure_step("refused", f"ws://127.0.0.1:{closed_port}/", "connect")
                )
            results.append(
                # .invalid never resolves (RFC 6761).
                await failure_step("unknown host", "ws://no-such-host.invalid/", "dns")
            )
            results.append(
                await failure_step(
                    "TLS to a plain server", f"wss://127.0.0.1:{server.port}/", "tls"
                )
            )
            results.append(
                await failure_step("HTTP 404", f"ws://127.0.0.1:{server.port}/missing", "http")
            )
            nursery.cancel_scope.cancel()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(trio.run(main))
