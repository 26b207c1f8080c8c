"""Echo client for the Autobahn|Testsuite fuzzing server (wstest -m fuzzingserver).

Uses only the public API of trio_websocket. Asks the fuzzing server how many
cases it has (``/getCaseCount``), runs each one (``/runCase?case=N&agent=A``)
by echoing every message until the connection closes, then asks the server
to write its reports (``/updateReports?agent=A``). Every case connection
offers permessage-deflate (the 12.* and 13.* cases accept it), with a
threshold of 0 so that every echoed message goes through our compressor.

    python echo_client.py --port 9001 [--agent trio_websocket] [--case-timeout 120]
                          [--http2]

With ``--http2`` every connection is a WebSocket over HTTP/2 (RFC 8441, h2c
by prior knowledge, ``http2="require"``; run_h2.py puts nghttpx between it
and the fuzzing server).

Every wait is bounded: a case that does not finish within ``--case-timeout``
seconds is abandoned (and reported on stderr), and the whole run stops after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import trio

from trio_websocket import ConnectionClosed, DeflateConfig, HandshakeError, open_websocket_url

MAX_MESSAGE_SIZE = 32 * 1024 * 1024
COMPRESSION = DeflateConfig(threshold=0)
#: open_websocket_url's HTTP/2 option (main() sets it from --http2).
HTTP2: dict[str, str] = {}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def get_case_count(base: str, timeout: float) -> int:
    with trio.fail_after(timeout):
        async with open_websocket_url(f"{base}/getCaseCount", **HTTP2) as ws:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                raise RuntimeError("/getCaseCount closed without an answer") from None
    return int(json.loads(message))


async def run_case(base: str, case: int, agent: str, timeout: float) -> str:
    """Run one case; returns how it ended (for the log only: the verdict is
    Autobahn's, in its reports)."""
    url = f"{base}/runCase?case={case}&agent={agent}"
    echoed = 0
    with trio.move_on_after(timeout) as scope:
        try:
            async with open_websocket_url(
                url, max_message_size=MAX_MESSAGE_SIZE, compression=COMPRESSION, **HTTP2
            ) as ws:
                try:
                    while True:
                        message = await ws.get_message()
                        await ws.send_message(message)
                        echoed += 1
                except ConnectionClosed as exc:
                    ending = f"closed {exc.reason}"
        except HandshakeError as exc:
            ending = f"{type(exc).__name__}: {exc!r}"
        except ConnectionClosed as exc:  # raised by the closing of the block
            ending = f"closed on exit {exc.reason}"
        except Exception as exc:  # not expected from the public API: say so
            ending = f"UNEXPECTED {type(exc).__name__}: {exc!r}"
    if scope.cancelled_caught:
        ending = f"TIMEOUT after {timeout} s"
    return f"{echoed} echoed, {ending}"


async def update_reports(base: str, agent: str, timeout: float) -> None:
    with trio.fail_after(timeout):
        async with open_websocket_url(f"{base}/updateReports?agent={agent}", **HTTP2) as ws:
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                pass


async def main(args: argparse.Namespace) -> int:
    base = f"ws://127.0.0.1:{args.port}"
    if args.http2:
        HTTP2["http2"] = "require"
    with trio.move_on_after(args.max_seconds) as scope:
        count = await get_case_count(base, 30)
        log(f"echo client: {count} cases")
        for case in range(1, count + 1):
            started = time.monotonic()
            outcome = await run_case(base, case, args.agent, args.case_timeout)
            took = time.monotonic() - started
            if args.verbose or "TIMEOUT" in outcome or "UNEXPECTED" in outcome or took > 5:
                log(f"case {case}/{count}: {outcome} ({took:.2f} s)")
        # Writing every report can take a while with the 9.* cases.
        await update_reports(base, args.agent, 300)
        log("echo client: reports updated")
    if scope.cancelled_caught:
        log(f"echo client: stopped after --max-seconds={args.max_seconds}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agent", default="trio_websocket")
    parser.add_argument("--case-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=3000.0)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--http2", action="store_true", help="RFC 8441 (h2c) connections")
    sys.exit(trio.run(main, parser.parse_args()))
