"""Echo server on websockets' asyncio API (websockets.asyncio.server.serve),
compression and keepalive pings off; --tls serves over TLS with the
bench's self-signed certificate.  Prints `PORT <n>`."""

import argparse
import asyncio

from benchutil import MAX_MESSAGE_SIZE, emit, raise_nofile, server_tls_context, watchdog
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def handler(ws):
    try:
        while True:
            message = await ws.recv()
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(host, port, tls):
    async with serve(handler, host, port, compression=None,
                     ping_interval=None, max_size=MAX_MESSAGE_SIZE,
                     ssl=server_tls_context() if tls else None) as server:
        emit("PORT", server.sockets[0].getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    asyncio.run(main(a.host, a.port, a.tls))
