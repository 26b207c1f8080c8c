"""Plain trio TCP echo server, no WebSocket: messages are a 4-byte
big-endian length + payload; each complete message is echoed with its own
send_all (message-at-a-time, like the WebSocket servers).  The floor row.
--tls serves the same over trio.SSLStream (trio.serve_ssl_over_tcp, the
bench's self-signed certificate): the "raw trio TLS" row of run.py --tls.
Prints `PORT <n>`."""

import argparse
from functools import partial

import trio
from benchutil import emit, raise_nofile, server_tls_context, watchdog


async def handler(stream):
    buf = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
            while len(buf) >= 4:
                end = 4 + int.from_bytes(buf[:4], "big")
                if len(buf) < end:
                    break
                message = bytes(buf[:end])
                del buf[:end]
                await stream.send_all(message)
    except trio.BrokenResourceError:
        pass
    finally:
        try:
            await stream.aclose()
        except trio.BrokenResourceError:  # TLS: the peer left first
            pass


async def main(host, port, tls):
    async with trio.open_nursery() as nursery:
        if tls:
            listeners = await nursery.start(partial(
                trio.serve_ssl_over_tcp, handler, port, server_tls_context(),
                host=host))
            sock = listeners[0].transport_listener.socket
        else:
            listeners = await nursery.start(partial(
                trio.serve_tcp, handler, port, host=host))
            sock = listeners[0].socket
        emit("PORT", sock.getsockname()[1])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    trio.run(main, a.host, a.port, a.tls)
