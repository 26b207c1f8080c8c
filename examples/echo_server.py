"""An echo server: every message a client sends comes straight back to it.

Shows ``serve_websocket`` started in a nursery (so the program learns the
real port, which matters with ``--port 0``) and a handler that accepts each
request and echoes until the client closes.

Run it, then talk to it with examples/client.py::

    python examples/echo_server.py --host 127.0.0.1 --port 8000
    python examples/client.py ws://127.0.0.1:8000/ hello

It prints the URL it listens on and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

import trio

from trio_websocket import Endpoint, WebSocketRequest, serve_websocket

if sys.version_info < (3, 11):  # trio installs this backport on Python 3.10
    from exceptiongroup import BaseExceptionGroup


async def echo(request: WebSocketRequest) -> None:
    """Accept the connection and send every message back, text as text and
    binary as binary, until the client leaves: the ``ConnectionClosed``
    that ends the loop is the client's doing, and the server takes it as
    such (it logs it at DEBUG and goes on serving)."""
    ws = await request.accept()
    while True:
        message = await ws.get_message()
        await ws.send_message(message)


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or as it leaves a trio nursery
    (wrapped in an ExceptionGroup)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_ctrl_c(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, host, port, None)
        url = Endpoint(host, server.port, is_ssl=False).url
        print(f"listening on {url}/", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WebSocket echo server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    args = parser.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except BaseException as exc:
        if not is_ctrl_c(exc):
            raise
        print("stopped", file=sys.stderr)
