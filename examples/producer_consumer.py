"""A producer and a consumer on one connection: the client sends jobs while,
at the same time, it reads the results coming back; the server works on
each job and answers it.

Shows the two-task pattern (one task only sends, one only receives, both on
the same connection, in one nursery) and application-level flow control: a
``trio.Semaphore`` keeps at most ``--window`` jobs unanswered, so a slow
server slows the producer down instead of piling jobs up in memory.

Run both sides in one process (it finishes by itself)::

    python examples/producer_consumer.py --jobs 20 --window 4

or each side on its own::

    python examples/producer_consumer.py serve --port 8000
    python examples/producer_consumer.py produce ws://127.0.0.1:8000/ --jobs 20

Messages are JSON: ``{"job": id, "n": number}`` to the server, which
answers ``{"job": id, "square": n * n}``; ``{"done": true}`` asks for a
``{"summary": {"jobs": count, "total": sum of squares}}`` and ends the
session. The producer prints each result, the largest number of jobs that
were in flight at once, and the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

if sys.version_info < (3, 11):  # trio installs this backport on Python 3.10
    from exceptiongroup import BaseExceptionGroup

#: Seconds the server spends on one job (stands in for real work).
WORK_TIME = 0.01


async def worker(request: WebSocketRequest) -> None:
    """The server: square each number, one job at a time, until asked for
    the summary."""
    ws = await request.accept()
    jobs = total = 0
    while True:  # until the summary, or the client leaves (ConnectionClosed)
        message = json.loads(await ws.get_message())
        if message.get("done"):
            await ws.send_message(json.dumps({"summary": {"jobs": jobs, "total": total}}))
            return
        await trio.sleep(WORK_TIME)
        square = message["n"] ** 2
        jobs += 1
        total += square
        await ws.send_message(json.dumps({"job": message["job"], "square": square}))


@dataclass
class Progress:
    """What the producer side saw."""

    results: dict[int, int] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0
    summary: dict[str, int] | None = None
    #: Set when the connection closed before the summary came.
    closed_early: ConnectionClosed | None = None


async def produce(
    ws: WebSocketConnection,
    jobs: int,
    window: trio.Semaphore,
    window_size: int,
    progress: Progress,
) -> None:
    """Send ``jobs`` jobs, never more than the window's size unanswered,
    then ask for the summary once every job is answered."""
    for job in range(jobs):
        await window.acquire()  # released by the consumer, one per result
        progress.in_flight += 1
        progress.most_in_flight = max(progress.most_in_flight, progress.in_flight)
        await ws.send_message(json.dumps({"job": job, "n": job}))
    for _ in range(window_size):
        await window.acquire()  # all results are in
    await ws.send_message(json.dumps({"done": True}))


async def consume(ws: WebSocketConnection, window: trio.Semaphore, progress: Progress) -> None:
    """Read results (and finally the summary), freeing a window slot for
    each."""
    while progress.summary is None:
        message = json.loads(await ws.get_message())
        if "summary" in message:
            progress.summary = message["summary"]
        else:
            progress.results[message["job"]] = message["square"]
            progress.in_flight -= 1
            window.release()
            print(f"job {message['job']}: {message['square']}", flush=True)


async def run_jobs(ws: WebSocketConnection, jobs: int, window_size: int) -> Progress:
    """The client: the producer and the consumer, side by side. If the
    connection closes early, both stop and ``closed_early`` says why."""
    progress = Progress()
    window = trio.Semaphore(window_size)

    async def until_closed(task: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            await task(ws, *args)
        except ConnectionClosed as exc:
            progress.closed_early = exc
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_closed, produce, jobs, window, window_size, progress)
        nursery.start_soon(until_closed, consume, window, progress)
    return progress


async def produce_to(url: str, jobs: int, window_size: int) -> int:
    """Run the client against ``url``; returns the exit status."""
    async with open_websocket_url(url) as ws:
        progress = await run_jobs(ws, jobs, window_size)
    print(f"at most {progress.most_in_flight} jobs in flight", flush=True)
    if progress.summary is None:
        reason = progress.closed_early.reason if progress.closed_early else None
        print(f"error: the connection closed early: {reason}", file=sys.stderr)
        return 1
    print(
        f"summary: {progress.summary['jobs']} jobs, total {progress.summary['total']}", flush=True
    )
    return 0


async def both(jobs: int, window_size: int) -> int:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, worker, "127.0.0.1", 0, None)
        status = await produce_to(f"ws://127.0.0.1:{server.port}/", jobs, window_size)
        nursery.cancel_scope.cancel()
    return status


async def serve(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, worker, host, port, None)
        print(f"listening on ws://{host}:{server.port}/", flush=True)


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C, alone or as it leaves a trio nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_ctrl_c(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description="A producer and a consumer on one WebSocket.")
    parser.add_argument("--jobs", type=positive, default=20, help="how many jobs to send")
    parser.add_argument("--window", type=positive, default=4, help="most jobs unanswered")
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser("serve", help="run only the server")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    produce_parser = commands.add_parser("produce", help="run only the client")
    produce_parser.add_argument("url")
    produce_parser.add_argument("--jobs", type=positive, default=20)
    produce_parser.add_argument("--window", type=positive, default=4)
    args = parser.parse_args()
    try:
        if args.command == "serve":
            trio.run(serve, args.host, args.port)
            return 0
        if args.command == "produce":
            return trio.run(produce_to, args.url, args.jobs, args.window)
        return trio.run(both, args.jobs, args.window)
    except BaseException as exc:
        if not is_ctrl_c(exc):
            raise
        print("stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
