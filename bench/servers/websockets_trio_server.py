"""Echo server on websockets' Trio API (websockets.trio.server.serve),
compression and keepalive pings off (--compression: permessage-deflate
with websockets' defaults; --tls: over TLS with the bench's self-signed
certificate).  Prints `PORT <n>`."""

import argparse
from functools import partial

import trio
from benchutil import MAX_MESSAGE_SIZE, emit, raise_nofile, server_tls_context, watchdog
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import serve


async def handler(ws):
    try:
        while True:
            message = await ws.recv()
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(host, port, compression, tls):
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            serve, handler, port, host=host,
            compression="deflate" if compression else None,
            ping_interval=None, max_size=MAX_MESSAGE_SIZE,
            ssl=server_tls_context() if tls else None))
        emit("PORT", server.listeners[0].socket.getsockname()[1])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--compression", action="store_true")
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    trio.run(main, a.host, a.port, a.compression, a.tls)
