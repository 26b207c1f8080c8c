"""Echo server on hypercorn's asyncio worker: an ASGI application that
accepts every WebSocket and sends each received message back, served by
`hypercorn.asyncio.serve` in this process (so the benchmark's CPU and RSS
readings of this PID are the whole server).  The reference row of the
HTTP/2 scenario (run.py --http2).  Prints `PORT <n>`; runs until killed.

hypercorn speaks HTTP/1.1 and, on the same plain TCP port, HTTP/2 by prior
knowledge (it switches when a request starts with the connection preface);
its HTTP/2 side always announces SETTINGS_ENABLE_CONNECT_PROTOCOL, so
RFC 8441 WebSockets need no option.  Settings the other stacks share:
4 MiB message limit, no keepalive pings; no access log.  --max-streams
raises hypercorn's SETTINGS_MAX_CONCURRENT_STREAMS (default 100) so one
connection can carry the 1,000 WebSockets of the idle-streams test, and
with it the size of the `priority` tree hypercorn keeps per connection
(that library refuses a 1,001st stream and hypercorn then drops the whole
connection), and its requests-per-connection limit (1,000, after which it
sends GOAWAY); nothing else of hypercorn is changed.  --tls serves over
TLS with the bench's self-signed certificate (ALPN: h2, http/1.1)."""

import argparse
import asyncio
import functools
import socket

import hypercorn.protocol.h2
import priority
from benchutil import MAX_MESSAGE_SIZE, emit, raise_nofile, self_signed_certificate, watchdog
from hypercorn.asyncio import serve
from hypercorn.config import Config


async def echo_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    event = await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return  # websocket.disconnect
        if event.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": event["bytes"]})
        else:
            await send({"type": "websocket.send", "text": event["text"]})


async def main(host, port, max_streams, tls):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, port))
    config = Config()
    # hypercorn binds this descriptor itself (fd://): the port is known
    # before it starts, so it can be printed
    config.bind = [f"fd://{listener.detach()}"]
    config.backlog = 1024
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.websocket_max_message_size = MAX_MESSAGE_SIZE
    config.websocket_ping_interval = None
    config.h2_max_concurrent_streams = max_streams
    config.keep_alive_max_requests = 1 << 30
    hypercorn.protocol.h2.priority.PriorityTree = functools.partial(
        priority.PriorityTree, maximum_streams=max_streams)
    config.include_date_header = False
    if tls:
        cert, key = self_signed_certificate()
        config.certfile, config.keyfile = str(cert), str(key)
    bound = socket.socket(fileno=int(config.bind[0][5:]))
    emit("PORT", bound.getsockname()[1])
    bound.detach()
    await serve(echo_app, config, mode="asgi")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--max-streams", type=int, default=4096)
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    asyncio.run(main(a.host, a.port, a.max_streams, a.tls))
