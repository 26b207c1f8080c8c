"""Plain trio TCP client (4-byte length prefix, no WebSocket), the floor
row for client measurements; --url is tcp://host:port, or tls://host:port
for the same over trio.SSLStream (raw trio TLS)."""

from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from clientcore import run_trio


@asynccontextmanager
async def session(url, ssl_context=None):
    parts = urlsplit(url)
    if ssl_context is not None:
        stream = await trio.open_ssl_over_tcp_stream(
            parts.hostname, parts.port, ssl_context=ssl_context)
    else:
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    buf = bytearray()

    async def send(payload):
        await stream.send_all(len(payload).to_bytes(4, "big") + payload)

    async def recv():
        while True:
            if len(buf) >= 4:
                end = 4 + int.from_bytes(buf[:4], "big")
                if len(buf) >= end:
                    message = bytes(buf[4:end])
                    del buf[:end]
                    return message
            data = await stream.receive_some(65536)
            if not data:
                raise EOFError("server closed")
            buf.extend(data)

    async with stream:
        yield send, recv


if __name__ == "__main__":
    run_trio(session, __doc__)
