"""A WebSocket server on a Unix domain socket instead of a TCP port.

A socket path is reachable only on this machine and guarded by file
permissions, which suits a server behind a local reverse proxy (nginx:
``proxy_pass http://unix:/run/app/ws.sock;``) or a helper process talking
to its parent.

Run the self-contained demo, which serves on a socket in a temporary
directory, talks to it over the socket and finishes by itself::

    python examples/unix_socket.py

Or serve on a path of your choice until Ctrl-C or SIGTERM::

    python examples/unix_socket.py --serve /tmp/echo.sock
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
from functools import partial

import trio

from trio_websocket import WebSocketRequest, serve_websocket, wrap_client_stream


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:  # until the client leaves (ConnectionClosed)
        await ws.send_message(await ws.get_message())


async def demo(path: str) -> None:
    async with trio.open_nursery() as nursery:
        stream = await trio.open_unix_socket(path)
        # The Host header is required by HTTP; any name does on a socket.
        ws = await wrap_client_stream(nursery, stream, "localhost", "/")
        await ws.send_message("hello over a socket file")
        print("client got:", await ws.get_message())
        await ws.aclose()


async def main(path: str, serve: bool) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, echo, None, None, None, unix_socket_path=path)
        )
        print(f"listening on {path}", flush=True)
        if serve:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        else:
            await demo(path)
        await server.aclose()
    print("socket file removed:", not await trio.Path(path).exists())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WebSocket echo server on a Unix socket.")
    parser.add_argument("--serve", metavar="PATH", help="serve on PATH until a signal")
    args = parser.parse_args()
    if args.serve:
        trio.run(main, args.serve, True)
    else:
        with tempfile.TemporaryDirectory() as directory:
            trio.run(main, os.path.join(directory, "echo.sock"), False)
