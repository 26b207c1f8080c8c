"""An ASGI WebSocket echo server run by Hypercorn (asyncio worker): an
outside RFC 8441 server for our HTTP/2 client (tests/test_interop_h2.py).

    python hypercorn_echo.py [--cert cert.pem --key key.pem] [--protocol P]...
                             [--max-seconds S]

Rules:

- It listens on 127.0.0.1, on a port the OS picks (the socket is made here
  and handed to Hypercorn as ``fd://``), and prints
  ``{"event": "listening", "port": N}``.
- With --cert/--key it serves TLS, ALPN h2 and http/1.1; without, plain
  TCP, where Hypercorn takes HTTP/1.1 and HTTP/2 by prior knowledge (h2c).
- The app speaks the same small language as interop_js/h2_ws_server.js: it
  accepts with the first of its --protocol values the client offered (none
  if none), echoes every text and binary message as it came, and for the
  text ``cmd:close CODE REASON`` closes with that code and reason, then waits
  (up to 5 s) for the client's answering close before it returns: Hypercorn
  forgets a stream when its app returns, and drops the whole HTTP/2
  connection when a frame arrives on a forgotten stream. ASGI has no pings:
  Hypercorn answers them itself.
- For each WebSocket it prints one JSON line, ``{"event": "websocket",
  "http_version": ..., "path": ..., "offered": [...]}`` and, when it ends,
  ``{"event": "close", "code": N}``, so a test can tell the WebSocket came
  over HTTP/2.
- It stops by itself after --max-seconds (default 120), and when stdin ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def report(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def make_app(protocols: list[str]) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"a WebSocket echo only\n"})
            return
        await echo(scope, receive, send, protocols)

    return app


async def echo(scope: dict[str, Any], receive: Receive, send: Send, protocols: list[str]) -> None:
    event = await receive()
    assert event["type"] == "websocket.connect", event
    offered = list(scope.get("subprotocols", []))
    chosen = next((p for p in protocols if p in offered), None)
    report(
        {
            "event": "websocket",
            "http_version": scope.get("http_version"),
            "path": scope.get("path"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "offered": offered,
            "chosen": chosen,
        }
    )
    await send({"type": "websocket.accept", "subprotocol": chosen})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            report({"event": "close", "code": event.get("code"), "reason": event.get("reason")})
            return
        text = event.get("text")
        if text is not None and text.startswith("cmd:close "):
            _, code, reason = [*text.split(" ", 2), ""][:3]
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            report({"event": "closing", "code": int(code), "reason": reason})
            # Wait for the client's answering close (websocket.disconnect):
            # Hypercorn forgets the stream when the app returns, and a frame
            # arriving on a forgotten stream takes its connection down.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(disconnected(receive), 5)
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--protocol", action="append", default=[])
    parser.add_argument("--max-seconds", type=float, default=120)
    args = parser.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    listener.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.workers = 1
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 1
    if args.cert:
        config.certfile = args.cert
        config.keyfile = args.key
        config.alpn_protocols = ["h2", "http/1.1"]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(4096) or stop.set())
    loop.call_later(args.max_seconds, stop.set)
    report({"event": "listening", "port": listener.getsockname()[1]})
    await serve(make_app(args.protocol), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
