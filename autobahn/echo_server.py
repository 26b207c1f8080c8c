"""Echo server for the Autobahn|Testsuite fuzzing client (wstest -m fuzzingclient).

Uses only the public API of trio_websocket. Every message is sent back as
it came: text as text, binary as binary. Listens on 127.0.0.1 only.
permessage-deflate is accepted when offered (the 12.* and 13.* cases), with
a threshold of 0 so that every echoed message goes through our compressor.

    python echo_server.py [--port 0] [--max-seconds 3600] [--http2]

With ``--http2`` it also takes WebSockets over HTTP/2 (RFC 8441, h2c by
prior knowledge; run_h2.py puts nghttpx in front of it).

Prints ``LISTENING <port>`` on stdout once it accepts connections (with
``--port 0`` the system picks a free port), and exits by itself after
``--max-seconds``, or quietly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import trio

from trio_websocket import ConnectionClosed, DeflateConfig, WebSocketRequest, serve_websocket

HOST = "127.0.0.1"
MAX_MESSAGE_SIZE = 32 * 1024 * 1024
#: Compress every message, however short: the suite checks our compressor too.
COMPRESSION = DeflateConfig(threshold=0)


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except ConnectionClosed:
        pass


async def stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGINT or SIGTERM stops the server quietly (run.py stops it so)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def main(port: int, max_seconds: float, http2: bool) -> None:
    options = {"http2": True} if http2 else {}
    with trio.move_on_after(max_seconds) as limit:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            server = await nursery.start(
                partial(
                    serve_websocket,
                    echo,
                    HOST,
                    port,
                    None,
                    max_message_size=MAX_MESSAGE_SIZE,
                    compression=COMPRESSION,
                    **options,
                )
            )
            print(f"LISTENING {server.port}", flush=True)
    if limit.cancelled_caught:
        print("echo server: time limit reached, exiting", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--http2", action="store_true", help="take RFC 8441 (h2c) too")
    args = parser.parse_args()
    trio.run(main, args.port, args.max_seconds, args.http2)
