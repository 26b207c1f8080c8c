"""Echo server for the trio_websocket API (used for both `ours` and the
PyPI trio-websocket 0.12.2 stand-in): serve_websocket + accept() +
get_message/send_message.  Prints `PORT <n>`; runs until killed.
--compression accepts permessage-deflate (our defaults, threshold 0: every
message compressed, like websockets); only for `ours`.  --http2 serves
WebSockets over HTTP/2 too (RFC 8441; on plain TCP by prior knowledge,
told apart from HTTP/1.1 by the connection preface); only for `ours`.
--h2-max-streams / --h2-stream-window set those fields of its
HTTP2Limits (the HTTP/2 scenario raises the streams, default 100, so one
connection can carry its 1,020 idle WebSockets).
--tls serves over TLS with the bench's self-signed certificate (with
--http2, ALPN chooses between h2 and http/1.1)."""

import argparse
from functools import partial

import trio
from benchutil import MAX_MESSAGE_SIZE, emit, raise_nofile, server_tls_context, watchdog

from trio_websocket import ConnectionClosed, serve_websocket


async def handler(request):
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except ConnectionClosed:
        pass


async def main(host, port, compression, http2, tls, h2_limits):
    extra = {}
    ssl_context = server_tls_context() if tls else None
    if http2:
        extra["http2"] = True
    if h2_limits:
        from trio_websocket import HTTP2Limits
        extra["http2_limits"] = HTTP2Limits(**h2_limits)
    if compression:
        from trio_websocket import DeflateConfig
        extra["compression"] = DeflateConfig(threshold=0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            serve_websocket, handler, host, port, ssl_context,
            max_message_size=MAX_MESSAGE_SIZE, **extra))
        emit("PORT", server.port)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--compression", action="store_true")
    p.add_argument("--http2", action="store_true")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--h2-max-streams", type=int)
    p.add_argument("--h2-stream-window", type=int)
    a = p.parse_args()
    limits = {name: value for name, value in (
        ("max_concurrent_streams", a.h2_max_streams),
        ("stream_window", a.h2_stream_window)) if value is not None}
    watchdog(a.lifetime)
    raise_nofile()
    trio.run(main, a.host, a.port, a.compression, a.http2, a.tls, limits)
