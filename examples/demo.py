"""A server and a client talking in one process; it finishes by itself.

Shows, with the public API only: a server started in a nursery on a free
port, a client opened with ``open_websocket_url``, text and binary messages
echoed back, a ping and its pong, the keepalive task from heartbeat.py
running for a few intervals, and both sides seeing the clean close.

Run it (after ``pip install .``)::

    python examples/demo.py

It prints one line per step and exits with status 0 in well under two
seconds (1 if anything did not come back as sent).
"""

from __future__ import annotations

import sys

import trio
from heartbeat import heartbeat  # examples/heartbeat.py, next to this file

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

HEARTBEAT_INTERVAL = 0.1
HEARTBEAT_TIMEOUT = 1.0
HEARTBEAT_RUN = 0.35


class Demo:
    def __init__(self) -> None:
        #: Set when the server's handler has seen the client close.
        self.server_done = trio.Event()

    async def handler(self, request: WebSocketRequest) -> None:
        """The server side: accept, echo everything, report the close."""
        print(f"server: {request.remote} asks for {request.path}", flush=True)
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed as exc:
            reason = exc.reason
            assert reason is not None
            print(f"server: client closed with code {reason.code} ({reason.name})", flush=True)
        finally:
            self.server_done.set()

    async def main(self) -> int:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self.handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/demo?lang=en"
            print(f"server: listening on port {server.port}", flush=True)
            status = await self.client(url)
            with trio.fail_after(2):
                await self.server_done.wait()
            nursery.cancel_scope.cancel()
        print("server: stopped", flush=True)
        return status

    async def client(self, url: str) -> int:
        """The client side; returns 1 if an echo came back different."""
        status = 0
        async with open_websocket_url(url) as ws:
            print(f"client: connected to {url}", flush=True)
            messages: list[str | bytes] = ["hello", "h\u00e9llo w\u00f6rld \u2713", b"\x00\xff"]
            for message in messages:
                await ws.send_message(message)
                reply = await ws.get_message()
                kind = "text" if isinstance(message, str) else "binary"
                print(f"client: sent {kind} {message!r}, got back {reply!r}", flush=True)
                if reply != message:
                    print("client: ERROR: the echo differs from what was sent", flush=True)
                    status = 1

            started = trio.current_time()
            await ws.ping(b"demo")
            elapsed_ms = (trio.current_time() - started) * 1000
            print(f"client: ping answered by a pong in {elapsed_ms:.1f} ms", flush=True)

            # heartbeat() runs forever while pongs come back; stop it after a
            # few intervals. A missing pong would raise trio.TooSlowError.
            with trio.move_on_after(HEARTBEAT_RUN):
                await heartbeat(ws, HEARTBEAT_TIMEOUT, HEARTBEAT_INTERVAL)
            print(
                f"client: heartbeat pinged every {HEARTBEAT_INTERVAL} s for "
                f"{HEARTBEAT_RUN} s; every pong came back in time",
                flush=True,
            )
            print("client: closing", flush=True)
        reason = ws.closed
        assert reason is not None
        print(f"client: closed with code {reason.code} ({reason.name})", flush=True)
        return status


if __name__ == "__main__":
    sys.exit(trio.run(Demo().main))
