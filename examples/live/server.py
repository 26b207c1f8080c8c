"""Live data in a browser: a server pushes a tick (a counter, the time and a
value) to every connected page at a steady pace, and examples/live/index.html
shows them as they come.

Shows a push-only WebSocket handler (the server talks, the page listens), a
reader task kept alongside it so that the close handshake is always noticed,
the page and the WebSocket on one port (a ``process_request`` hook answers
the plain HTTP requests before the upgrade is considered), and a clean stop:
on Ctrl-C or SIGTERM the server's graceful shutdown tells each open page
with close code 1001 (going away) before the program exits.

Run it and open the page it prints::

    python examples/live/server.py --host 127.0.0.1 --port 8000

The page is at ``/``, with the WebSocket URL (``/ticks`` on the same port)
filled in. You can also open index.html as a file, adding
``?ws=ws://127.0.0.1:8000/ticks``. Port 0 picks a free port; the real one
is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from datetime import datetime, timezone
from functools import partial
from html import escape
from pathlib import Path

import trio

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    HTTPRequest,
    HTTPResponse,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

PAGE = Path(__file__).with_name("index.html")
#: The page's placeholder for the WebSocket URL.
URL_SLOT = '<meta name="ws-url" content="">'
#: Where the ticks are.
TICKS_PATH = "/ticks"
#: Seconds for the values' sine wave to repeat.
PERIOD = 10.0
#: Seconds the pages get to answer the 1001 close when the server stops.
STOP_TIMEOUT = 5.0


class Ticker:
    """Pushes ticks to every page connected, until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._start = trio.current_time()

    def tick(self) -> dict[str, object]:
        """The current tick; every page sees the same numbers at a time."""
        elapsed = trio.current_time() - self._start
        return {
            "tick": int(elapsed / self.interval),
            "time": datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3],
            "value": math.sin(2 * math.pi * elapsed / PERIOD),
        }

    async def handler(self, request: WebSocketRequest) -> None:
        if request.path.split("?")[0] != TICKS_PATH:
            await request.reject(404, body=f"ticks are at {TICKS_PATH}\n".encode())
            return
        ws = await request.accept()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ignore_incoming, ws, nursery.cancel_scope)
                while True:
                    await ws.send_message(json.dumps(self.tick()))
                    await trio.sleep(self.interval)
        except ConnectionClosed:
            pass  # the page left, or the server is stopping


async def ignore_incoming(ws: WebSocketConnection, done: trio.CancelScope) -> None:
    """Read (and drop) what the page sends, so its messages never pile up;
    when the page closes, stop the ticks."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        done.cancel()


class PageServer:
    """The ``process_request`` hook: answers the browser's plain HTTP
    requests (the page at ``/``) and lets WebSocket upgrades through."""

    def __init__(self, html: str, fallback_ws_url: str) -> None:
        self.html = html
        self.fallback_ws_url = fallback_ws_url

    def __call__(self, request: HTTPRequest) -> HTTPResponse | None:
        if request.is_websocket or request.path.split("?")[0] == TICKS_PATH:
            # The handler decides on upgrades (404 for another path); the
            # server answers a plain request for the ticks with 426.
            return None
        if request.method not in ("GET", "HEAD"):
            return HTTPResponse(405, [("Allow", "GET, HEAD")], "GET only\n")
        if request.path.split("?")[0] not in ("/", "/index.html"):
            return HTTPResponse(404, body="not found\n")
        html = self.html.replace(
            URL_SLOT, f'<meta name="ws-url" content="{escape(self.ws_url(request))}">'
        )
        return HTTPResponse(
            200,
            [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
            html,
        )

    def ws_url(self, request: HTTPRequest) -> str:
        """The WebSocket URL under the name the browser used for the page
        (a page loaded from ``localhost`` connects to ``localhost``)."""
        host = request.header("host")
        if not host or any(c in host for c in "/?#@ \t"):
            return self.fallback_ws_url
        return f"ws://{host}{TICKS_PATH}"


async def main(host: str, port: int, interval: float) -> None:
    ticker = Ticker(interval)
    html = PAGE.read_text(encoding="utf-8")  # once, before serving
    pages = PageServer(html, "")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: WebSocketServer = await nursery.start(
                partial(serve_websocket, ticker.handler, host, port, None, process_request=pages)
            )
            base = Endpoint(host, server.port, is_ssl=False)
            pages.fallback_ws_url = base.url + TICKS_PATH
            print(f"page: http://{base.host_port}/", flush=True)
            print(f"websocket: {pages.fallback_ws_url}", flush=True)
            async for _ in signals:
                break
            print("stopping", file=sys.stderr, flush=True)
            # Every page gets 1001; serve_websocket then returns.
            await server.aclose(reason="server stopping", timeout=STOP_TIMEOUT)
    print("stopped", file=sys.stderr, flush=True)


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Push live ticks to a browser page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port of the page and the WebSocket")
    parser.add_argument(
        "--interval", type=positive_seconds, default=0.5, help="seconds between ticks"
    )
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.interval)
