"""A client that reaches its WebSocket server through a proxy.

Shows the ``proxy=`` argument: a proxy URL (``http://``, ``https://``,
``socks5://``, ``socks5h://``, with ``user:password@`` if the proxy wants
credentials), ``proxy=True`` to take it from the environment like curl
(``https_proxy``/``http_proxy``, ``all_proxy``, ``no_proxy``), and a
:class:`Proxy` to trust a private authority for an ``https://`` proxy. Also
the errors worth telling apart: the proxy wants credentials, the proxy
failed or refused, the server failed.

Run it against examples/echo_server.py through any proxy::

    python examples/proxy.py ws://127.0.0.1:8000/ --proxy socks5h://127.0.0.1:1080 hello
    https_proxy=http://127.0.0.1:3128 python examples/proxy.py wss://example.com/ --proxy env
    python examples/proxy.py ws://127.0.0.1:8000/ --proxy https://proxy:8443 \\
        --proxy-cafile proxy-ca.pem hello

Output: ``connected to URL via PROXY`` (or ``directly``), then ``> message``
for each message sent and ``< reply`` for each reply. Exits 1 with an
``error:`` line on stderr when the connection fails.
"""

from __future__ import annotations

import argparse
import ssl
import sys

import trio

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    Proxy,
    ProxyAuthenticationError,
    ProxyError,
    open_websocket_url,
)


def proxy_setting(value: str, cafile: str | None) -> Proxy | bool:
    """``--proxy`` as the ``proxy=`` argument: True for "env", else a Proxy."""
    if value == "env":
        if cafile:
            raise ValueError("--proxy-cafile needs an https:// proxy URL, not env")
        return True
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    return Proxy(value, ssl_context=context)


async def main(url: str, proxy: Proxy | bool, messages: list[str]) -> int:
    via = "the environment's proxy, if any" if proxy is True else repr(proxy)
    try:
        async with open_websocket_url(url, proxy=proxy, connect_timeout=30) as ws:
            print(f"connected to {url} via {via}", flush=True)
            for message in messages:
                await ws.send_message(message)
                print(f"> {message}", flush=True)
                reply = await ws.get_message()
                print(f"< {reply if isinstance(reply, str) else repr(reply)}", flush=True)
    except ProxyAuthenticationError as exc:
        print(f"error: the proxy wants (other) credentials: {exc}", file=sys.stderr)
        return 1
    except ProxyError as exc:
        print(f"error: the proxy failed: {exc}", file=sys.stderr)
        return 1
    except HandshakeError as exc:
        print(f"error: could not open a WebSocket to {url}: {exc}", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        print(f"error: the server closed the connection: {exc.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send messages over a WebSocket via a proxy.")
    parser.add_argument("url", help="ws:// or wss:// URL of the server")
    parser.add_argument(
        "--proxy",
        required=True,
        help='proxy URL (http, https, socks5, socks5h), or "env" to read the environment',
    )
    parser.add_argument("--proxy-cafile", help="CA certificates to trust for an https:// proxy")
    parser.add_argument("messages", nargs="*", help="text messages to send, in order")
    args = parser.parse_intermixed_args()
    try:
        setting = proxy_setting(args.proxy, args.proxy_cafile)
    except (ValueError, OSError) as exc:  # a bad URL, an unreadable CA file
        parser.error(str(exc))
    try:
        status = trio.run(main, args.url, setting, args.messages)
    except ValueError as exc:  # not a ws:// or wss:// URL
        parser.error(str(exc))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
