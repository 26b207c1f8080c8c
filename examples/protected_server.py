"""A server that guards its WebSocket port: a health check answered over
plain HTTP, HTTP Basic auth, an Origin allow-list, limits on the request
head and on the number of connections.

Run the self-contained demo, which starts the server, sends it a few good
and bad requests, prints each answer and finishes by itself::

    python examples/protected_server.py

Or serve until Ctrl-C and try it with curl and a WebSocket client::

    python examples/protected_server.py --serve --port 8000
    curl -i http://127.0.0.1:8000/health
    python examples/client.py ws://alice:wonderland@127.0.0.1:8000/ hello
"""

from __future__ import annotations

import argparse
import re
import signal
from functools import partial

import trio

from trio_websocket import (
    BasicAuth,
    ConnectionRejected,
    Endpoint,
    HTTPRequest,
    HTTPResponse,
    RequestLimits,
    WebSocketRequest,
    basic_auth_credentials,
    open_websocket_url,
    serve_websocket,
)

#: Browsers send their page's origin; scripts usually send none (None).
ALLOWED_ORIGINS = [
    "https://chat.example.com",
    re.compile(r"https://[a-z0-9-]+\.preview\.example\.com"),
    None,
]
check_password = BasicAuth({"alice": "wonderland"}, realm="demo")


async def process_request(request: HTTPRequest) -> HTTPResponse | None:
    """Plain HTTP first: the health check needs no password; everything
    else must authenticate before the upgrade."""
    if request.path == "/health":
        return HTTPResponse(200, [("content-type", "text/plain")], "ok\n")
    return await check_password(request)


async def handler(request: WebSocketRequest) -> None:
    credentials = basic_auth_credentials(request.headers)
    user = credentials[0] if credentials else "?"
    ws = await request.accept()
    while True:  # until the client leaves (ConnectionClosed)
        message = await ws.get_message()
        await ws.send_message(f"{user} said: {message}")


async def http_status(port: int, request: bytes) -> str:
    """Send raw HTTP and return the status line of the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = await stream.receive_some()
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n")[0].decode()


async def demo(port: int) -> None:
    base = f"127.0.0.1:{port}"
    print("GET /health ->", await http_status(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    print("GET / ->", await http_status(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    authorization = b"Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n"  # alice:wonderland
    print(
        "GET / with password ->",
        await http_status(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + authorization + b"\r\n"),
    )
    print(
        "huge header ->",
        await http_status(
            port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        ),
    )
    for label, url, headers in [
        ("no password", f"ws://{base}/", []),
        ("wrong password", f"ws://alice:nope@{base}/", []),
        (
            "foreign origin",
            f"ws://alice:wonderland@{base}/",
            [(b"origin", b"https://evil.example")],
        ),
    ]:
        try:
            async with open_websocket_url(url, extra_headers=headers):
                print(f"{label} -> connected?!")
        except ConnectionRejected as rejected:
            print(f"{label} -> refused with {rejected.status_code}")
    async with open_websocket_url(f"ws://alice:wonderland@{base}/") as ws:
        await ws.send_message("hello")
        print("good credentials ->", await ws.get_message())


async def main(host: str, port: int, serve: bool) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                host,
                port,
                None,
                process_request=process_request,
                origins=ALLOWED_ORIGINS,
                max_connections=1000,
                request_limits=RequestLimits(max_header_size=4096),
                connect_timeout=10,
            )
        )
        print(f"listening on {Endpoint(host, server.port, is_ssl=False).url}/", flush=True)
        if serve:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        else:
            await demo(server.port)
        await server.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A guarded WebSocket server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--serve", action="store_true", help="serve until Ctrl-C or SIGTERM (no demo)"
    )
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.serve)
