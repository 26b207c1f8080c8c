"""Client under test on websockets' Trio API (websockets.trio.client
.connect), compression/pings/proxy off (--compression: permessage-deflate
with websockets' defaults; a wss:// URL: clientcore's TLS context),
driven by clientcore."""

from contextlib import asynccontextmanager

from benchutil import MAX_MESSAGE_SIZE
from clientcore import run_trio
from websockets.trio.client import connect


@asynccontextmanager
async def session(url, compression=False, ssl_context=None):
    async with connect(url, compression="deflate" if compression else None,
                       ssl=ssl_context,
                       ping_interval=None,
                       max_size=MAX_MESSAGE_SIZE, proxy=None) as ws:
        yield ws.send, ws.recv


if __name__ == "__main__":
    run_trio(session, __doc__)
