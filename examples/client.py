"""A command-line client: send each message given, print each reply.

Shows ``open_websocket_url`` (the connection is closed cleanly when the
block ends) and the two errors a client should expect: ``HandshakeError``
when no WebSocket could be opened, ``ConnectionClosed`` when the server goes
away mid-conversation.

Run it against examples/echo_server.py (or any server that answers each
message with one message)::

    python examples/client.py ws://127.0.0.1:8000/ hello "second message"

Output: ``> message`` for each message sent, ``< reply`` for each reply.
Exits 1 with an ``error:`` line on stderr when the connection fails.
"""

from __future__ import annotations

import argparse
import sys

import trio

from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url


async def main(url: str, messages: list[str]) -> int:
    try:
        async with open_websocket_url(url) as ws:
            print(f"connected to {url}", flush=True)
            for message in messages:
                await ws.send_message(message)
                print(f"> {message}", flush=True)
                reply = await ws.get_message()
                print(f"< {reply if isinstance(reply, str) else repr(reply)}", flush=True)
        reason = ws.closed
        assert reason is not None  # the block closed the connection
        print(f"closed with code {reason.code} ({reason.name})", flush=True)
    except HandshakeError as exc:
        print(f"error: could not open a WebSocket to {url}: {exc}", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        reason = exc.reason
        how = f"code {reason.code} ({reason.name})" if reason else "no close code"
        print(f"error: the server closed the connection: {how}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send messages over a WebSocket.")
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument("messages", nargs="*", help="text messages to send, in order")
    args = parser.parse_args()
    try:
        status = trio.run(main, args.url, args.messages)
    except ValueError as exc:  # not a ws:// or wss:// URL
        parser.error(str(exc))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
