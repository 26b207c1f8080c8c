"""Echo server for bench/soak.py: serve_websocket with the limits the soak
states (max_message_size, max_buffered_bytes, message_queue_size,
max_connections, connect_timeout; --compression accepts permessage-deflate
with the library's defaults).

Rules:
- Prints `PORT <n>` once listening, then a `STATS {json}` line every
  --stats-interval seconds: how late that line's timer fired (the event
  loop's lag), open connections (the server's own count), living trio
  tasks, handlers started and finished, messages echoed, and handler
  exceptions by type.
- The handler survives anything a client does: ConnectionClosed is the
  normal end; any other exception from the library's public calls is a
  finding, so it is counted (its first traceback of each type printed) and
  the handler returns instead of taking the server down. An error that
  escapes the library's own tasks still ends the process, which the soak
  reports as a crash.
- Runs until killed (SIGTERM from soak.py, by PID) or --lifetime.
"""

import argparse
import time
import traceback
from collections import Counter
from functools import partial

import trio
from benchutil import emit, raise_nofile, watchdog

from trio_websocket import ConnectionClosed, serve_websocket


class Tally:
    """What the handlers did, read by the stats task."""

    def __init__(self):
        self.started = 0
        self.finished = 0
        self.echoed = 0
        self.echoed_bytes = 0
        self.errors = Counter()


async def echo_handler(tally, request):
    tally.started += 1
    try:
        ws = await request.accept()
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
            tally.echoed += 1
            tally.echoed_bytes += len(message)
    except ConnectionClosed:
        pass
    except Exception as exc:  # a finding: counted, first of each type printed
        name = type(exc).__name__
        if not tally.errors[name]:
            print(f"handler error {name}:", flush=True)
            traceback.print_exc()
        tally.errors[name] += 1
    finally:
        tally.finished += 1


async def report_stats(server, tally, interval):
    due = trio.current_time()
    while True:
        # How late this timer fired: how long the event loop was stuck.
        lag = trio.current_time() - due
        stats = trio.lowlevel.current_statistics()
        emit("STATS", {
            "time": time.time(),
            "loop_lag": round(lag, 3),
            "connections": server.connection_count,
            "tasks": stats.tasks_living,
            "handlers_started": tally.started,
            "handlers_finished": tally.finished,
            "echoed": tally.echoed,
            "echoed_bytes": tally.echoed_bytes,
            "handler_errors": dict(tally.errors),
        })
        due = max(due + interval, trio.current_time())
        await trio.sleep_until(due)


async def main(args):
    extra = {}
    if args.compression:
        extra["compression"] = "deflate"
    tally = Tally()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            serve_websocket, partial(echo_handler, tally), "127.0.0.1", 0, None,
            max_message_size=args.max_message_size,
            max_buffered_bytes=args.max_buffered_bytes,
            message_queue_size=args.message_queue_size,
            max_connections=args.max_connections,
            connect_timeout=args.connect_timeout,
            disconnect_timeout=args.disconnect_timeout,
            **extra))
        emit("PORT", server.port)
        nursery.start_soon(report_stats, server, tally, args.stats_interval)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--max-message-size", type=int, required=True)
    p.add_argument("--max-buffered-bytes", type=int, required=True)
    p.add_argument("--message-queue-size", type=int, required=True)
    p.add_argument("--max-connections", type=int, required=True)
    p.add_argument("--connect-timeout", type=float, required=True)
    p.add_argument("--disconnect-timeout", type=float, required=True)
    p.add_argument("--compression", action="store_true")
    p.add_argument("--stats-interval", type=float, default=1.0)
    p.add_argument("--lifetime", type=float, default=3600)
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    trio.run(main, a)
