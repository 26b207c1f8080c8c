"""A chat server on every core: worker processes sharing one port, and
rooms shared through Redis, so people connected to different processes (or
machines) talk in the same room.

Needs the redis extra (``pip install ".[redis]"`` in a checkout of this
library; docs/installing.rst says why not by name) and a Redis server. Run
it, then chat with the command-line client from two terminals::

    redis-server --port 6379 --save '' --appendonly no
    python examples/redis_chat/chat.py --port 8000 --workers 2 --redis redis://127.0.0.1:6379/0
    python -m trio_websocket "ws://127.0.0.1:8000/lobby?name=alice"
    python -m trio_websocket "ws://127.0.0.1:8000/lobby?name=bob"

The path names the room, ``?name=`` the speaker. Run the same command on a
second machine with the same ``--redis`` and both servers share the rooms.
Ctrl-C (or SIGTERM) stops the workers: each closes its connections with
1001 (Going Away) first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WorkerPool,
    run_websocket_workers,
)
from trio_websocket.redis_hub import RedisHub, RedisUnavailable

#: How the workers learn the Redis URL: they inherit the parent's environment.
REDIS_URL_ENV = "CHAT_REDIS_URL"
MAX_NAME = 32
#: The longest line anyone may say (a chat message, not a file transfer).
MAX_MESSAGE = 4096


def room_and_name(path: str) -> tuple[str, str]:
    parts = urlsplit(path)
    room = parts.path.strip("/") or "lobby"
    name = parse_qs(parts.query).get("name", ["anonymous"])[0][:MAX_NAME]
    return room, name


@asynccontextmanager
async def app() -> AsyncIterator[Callable[[WebSocketRequest], Awaitable[None]]]:
    """Run once in each worker: its own link to Redis, around its handler."""
    async with RedisHub(os.environ[REDIS_URL_ENV], overflow="close") as hub:

        async def chat(request: WebSocketRequest) -> None:
            room, name = room_and_name(request.path)
            ws = await request.accept()
            async with hub.subscribed(ws, room):
                try:
                    await hub.publish(room, f"* {name} joined {room}")
                    while True:
                        message = await ws.get_message()
                        if not isinstance(message, str):
                            await ws.aclose(1003, "text only")
                            return
                        if len(message) > MAX_MESSAGE:
                            await ws.aclose(1009, f"at most {MAX_MESSAGE} characters")
                            return
                        await hub.publish(room, f"{name}: {message}")
                except ConnectionClosed:
                    pass
                except RedisUnavailable:
                    await ws.aclose(1013, "chat is unavailable, try again later")

        yield chat


def print_urls(pool: WorkerPool) -> None:
    for endpoint in pool.listeners:
        print(f"chat on {endpoint.url}/ (workers: {', '.join(map(str, pool.pids))})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(message)s")
    os.environ[REDIS_URL_ENV] = args.redis
    # Workers import this file as the module "chat" (its directory is on
    # their import path, as it is on ours).
    return run_websocket_workers(
        "chat:app", args.host, args.port, workers=args.workers, on_ready=print_urls
    )


if __name__ == "__main__":
    sys.exit(main())
