"""Live data in a browser: a server pushes a tick (a counter, the time and a
value) to every connected page at a steady pace, and examples/live/index.html
shows them as they come.

Shows a push-only WebSocket handler (the server talks, the page listens), a
reader task kept alongside it so that the close handshake is always noticed,
and a clean stop: on Ctrl-C or SIGTERM each open page is told with close
code 1001 (going away) before the server exits.

Run it and open the page it prints::

    python examples/live/server.py --host 127.0.0.1 --port 8000 --ws-port 8001

The page is served over plain HTTP by a few lines of trio below (port
``--port``), with the WebSocket URL (port ``--ws-port``) filled in. You can
also open index.html as a file, adding ``?ws=ws://127.0.0.1:8001/ticks``.
Port 0 picks a free port; the real ones are printed.
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
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

PAGE = Path(__file__).with_name("index.html")
#: The page's placeholder for the WebSocket URL.
URL_SLOT = '<meta name="ws-url" content="">'
#: Seconds for the values' sine wave to repeat.
PERIOD = 10.0
#: How long a browser may take to send its HTTP request, and its size limit.
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 16 * 1024
#: Seconds the pages get to answer the 1001 close when the server stops.
STOP_TIMEOUT = 5.0


class Ticker:
    """Pushes ticks to every page connected, until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pages: set[WebSocketConnection] = set()
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
        if request.path.split("?")[0] != "/ticks":
            await request.reject(404, body=b"ticks are at /ticks\n")
            return
        ws = await request.accept()
        self.pages.add(ws)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ignore_incoming, ws, nursery.cancel_scope)
                while True:
                    await ws.send_message(json.dumps(self.tick()))
                    await trio.sleep(self.interval)
        except ConnectionClosed:
            pass
        finally:
            self.pages.discard(ws)

    async def close_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for ws in list(self.pages):
                nursery.start_soon(ws.aclose, 1001, "server stopping")


async def ignore_incoming(ws: WebSocketConnection, done: trio.CancelScope) -> None:
    """Read (and drop) what the page sends, so its messages never pile up;
    when the page closes, stop the ticks."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        done.cancel()


async def serve_page(ws_url: str, stream: trio.SocketStream) -> None:
    """A minimal HTTP/1.1 responder: the page at ``/``, 404 elsewhere."""
    head = b""
    with trio.move_on_after(REQUEST_TIMEOUT):
        try:
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        except trio.BrokenResourceError:
            return
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(request_line) != 3 or b"\r\n\r\n" not in head:
        status, body, kind = "400 Bad Request", b"bad request\n", "text/plain"
    elif request_line[0] not in ("GET", "HEAD"):
        status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
    elif request_line[1].split("?")[0] in ("/", "/index.html"):
        html = PAGE.read_text(encoding="utf-8")
        html = html.replace(URL_SLOT, f'<meta name="ws-url" content="{escape(ws_url)}">')
        status, body, kind = "200 OK", html.encode("utf-8"), "text/html; charset=utf-8"
    else:
        status, body, kind = "404 Not Found", b"not found\n", "text/plain"
    response = (
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    if request_line[:1] != ["HEAD"]:
        response += body
    try:
        await stream.send_all(response)
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def main(host: str, http_port: int, ws_port: int, interval: float) -> None:
    ticker = Ticker(interval)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, ticker.handler, host, ws_port, None)
            ws_url = Endpoint(host, server.port, is_ssl=False).url + "/ticks"
            listeners = await nursery.start(
                partial(trio.serve_tcp, partial(serve_page, ws_url), http_port, host=host)
            )
            page_port = listeners[0].socket.getsockname()[1]
            page_url = f"http://{Endpoint(host, page_port, is_ssl=False).host_port}/"
            print(f"page: {page_url}", flush=True)
            print(f"websocket: {ws_url}", flush=True)
            async for _ in signals:
                break
            print("stopping", file=sys.stderr, flush=True)
            with trio.move_on_after(STOP_TIMEOUT):
                await ticker.close_all()
            nursery.cancel_scope.cancel()
    print("stopped", file=sys.stderr, flush=True)


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Push live ticks to a browser page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the page")
    parser.add_argument("--ws-port", type=int, default=8001, help="WebSocket port")
    parser.add_argument(
        "--interval", type=positive_seconds, default=0.5, help="seconds between ticks"
    )
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.ws_port, args.interval)
