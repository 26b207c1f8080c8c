"""The server application of bench/scale.py, imported by each worker
process as ``scale_app:app`` (bench/ is on the workers' import path).

Paths:
  /echo     echoes every message (the 1-vs-2-workers throughput runs)
  /sub      subscribes to the topic "fan", says "subscribed", then only reads
  /control  publishes each message it receives to "fan", answers with the
            number of receivers ``publish`` returned

``SCALE_HUB=local`` uses the in-process Hub; ``SCALE_HUB=redis`` a RedisHub
on ``SCALE_REDIS_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from trio_websocket import ConnectionClosed, Hub, WebSocketRequest

Handler = Callable[[WebSocketRequest], Awaitable[None]]


def _hub() -> AbstractAsyncContextManager[Hub]:
    if os.environ.get("SCALE_HUB", "local") == "redis":
        from trio_websocket.redis_hub import RedisHub

        return RedisHub(os.environ["SCALE_REDIS_URL"], queue_size=256)
    return Hub(queue_size=256)


@asynccontextmanager
async def app() -> AsyncIterator[Handler]:
    async with _hub() as hub:

        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            try:
                if request.path.startswith("/sub"):
                    async with hub.subscribed(ws, "fan"):
                        await ws.send_message("subscribed")
                        while True:
                            await ws.get_message()
                elif request.path.startswith("/control"):
                    while True:
                        message = await ws.get_message()
                        await ws.send_message(str(await hub.publish("fan", message)))
                else:
                    while True:
                        await ws.send_message(await ws.get_message())
            except ConnectionClosed:
                pass

        yield handler
