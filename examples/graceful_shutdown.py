"""Graceful shutdown on SIGTERM or Ctrl-C.

On the signal the server stops accepting, tells every client it is going
away (close code 1001 with a reason), gives the handlers a grace period to
finish, cancels the ones still busy, and prints what happened. This is what
a process manager (systemd, Kubernetes, a deploy script) expects: SIGTERM,
then a clean exit well before the hard kill.

Run the self-contained demo, which starts two clients, sends itself SIGTERM
and finishes by itself::

    python examples/graceful_shutdown.py

Or serve until you press Ctrl-C or run ``kill <pid>``::

    python examples/graceful_shutdown.py --serve --port 8000
    python examples/client.py ws://127.0.0.1:8000/ hello

Paths starting with ``/slow`` get a handler that keeps working without
watching its connection, so the shutdown has to cancel it.
"""

from __future__ import annotations

import argparse
import os
import signal
from functools import partial

import trio

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

#: Seconds the handlers get between the signal and being cancelled.
GRACE_SECONDS = 1.0


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    if request.path.startswith("/slow"):
        # Busy with something else: only cancellation stops this handler.
        await trio.sleep_forever()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed as closed:
        print(f"server: {request.path} closed with code {closed.reason.code}", flush=True)


async def wait_for_close(name: str, ws: WebSocketConnection) -> None:
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        print(f"{name}: closed with {closed.reason.code} ({closed.reason.reason})", flush=True)


async def demo_client(name: str, url: str, task_status: trio.TaskStatus[None]) -> None:
    async with open_websocket_url(url) as ws:
        await ws.send_message("hello")
        if not url.endswith("/slow"):
            print(f"{name}: sent 'hello', got {await ws.get_message()!r}", flush=True)
        task_status.started()
        await wait_for_close(name, ws)


async def send_sigterm_to_myself(url: str, task_status: trio.TaskStatus[None]) -> None:
    """The demo: two clients connect, then the process gets SIGTERM."""
    async with trio.open_nursery() as clients:
        await clients.start(demo_client, "client 1", url)
        await clients.start(demo_client, "client 2", url + "slow")
        task_status.started()
        print("demo: sending SIGTERM to myself", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


async def main(host: str, port: int, serve: bool) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, handler, host, port, None))
            url = Endpoint(host, server.port, is_ssl=False).url + "/"
            print(f"server: listening on {url}", flush=True)
            if not serve:
                await nursery.start(send_sigterm_to_myself, url)
            async for signum in signals:
                print(f"server: got {signal.Signals(signum).name}, shutting down", flush=True)
                report = await server.aclose(reason="server restarting", timeout=GRACE_SECONDS)
                print(
                    f"server: {report.closed_cleanly} closed cleanly, {report.forced} forced,"
                    f" {report.refused} refused",
                    flush=True,
                )
                break
            # serve_websocket has returned; the nursery ends once the demo's
            # clients have seen their close.
    print("server: stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WebSocket server with graceful shutdown.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--serve", action="store_true", help="wait for a signal (no demo)")
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.serve)
