"""Client under test on websockets' asyncio API (websockets.asyncio.client
.connect), compression/pings/proxy off (a wss:// URL: clientcore's TLS
context), driven by clientcore."""

from contextlib import asynccontextmanager

from benchutil import MAX_MESSAGE_SIZE
from clientcore import run_asyncio
from websockets.asyncio.client import connect


@asynccontextmanager
async def session(url, ssl_context=None):
    async with connect(url, compression=None, ping_interval=None,
                       ssl=ssl_context,
                       max_size=MAX_MESSAGE_SIZE, proxy=None) as ws:
        yield ws.send, ws.recv


if __name__ == "__main__":
    run_asyncio(session, __doc__)
