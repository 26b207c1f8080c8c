"""Client under test on websockets' Trio API (websockets.trio.client
.connect), compression/pings/proxy off (--compression: permessage-deflate
with websockets' defaults), driven by clientcore."""

from contextlib import asynccontextmanager

from benchutil import MAX_MESSAGE_SIZE
from clientcore import run_trio
from websockets.trio.client import connect


@asynccontextmanager
async def session(url, compression=False):
    async with connect(url, compression="deflate" if compression else None,
                       ping_interval=None,
                       max_size=MAX_MESSAGE_SIZE, proxy=None) as ws:
        yield ws.send, ws.recv


if __name__ == "__main__":
    run_trio(session, __doc__)
