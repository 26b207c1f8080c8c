"""Client under test for the trio_websocket API (ours / 0.12.2):
open_websocket_url + send_message/get_message, driven by clientcore.
With --compression it offers permessage-deflate (threshold 0); a wss://
URL connects with clientcore's TLS context."""

from contextlib import asynccontextmanager

from benchutil import MAX_MESSAGE_SIZE
from clientcore import run_trio

from trio_websocket import open_websocket_url


@asynccontextmanager
async def session(url, compression=False, ssl_context=None):
    extra = {}
    if ssl_context is not None:
        extra["ssl_context"] = ssl_context
    if compression:
        from trio_websocket import DeflateConfig
        extra["compression"] = DeflateConfig(threshold=0)
    async with open_websocket_url(url,
                                  max_message_size=MAX_MESSAGE_SIZE,
                                  **extra) as ws:
        yield ws.send_message, ws.get_message


if __name__ == "__main__":
    run_trio(session, __doc__)
