"""Echo server for bench/instructions.py: the trio_websocket API
(serve_websocket + accept() + get_message/send_message) echoing a given
number of messages on the first connection (message size limit as in
trio_websocket_server.py), then exiting. Prints `PORT <n>`.
`count_echo_server.py COUNT [tls]`: with `tls`, over TLS with the bench's
self-signed certificate, as trio_websocket_server.py --tls."""

import sys
from functools import partial

import trio
from benchutil import MAX_MESSAGE_SIZE, server_tls_context

from trio_websocket import serve_websocket


async def main(count, tls):
    done = trio.Event()

    async def handler(request):
        ws = await request.accept()
        for _ in range(count):
            await ws.send_message(await ws.get_message())
        done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                "127.0.0.1",
                0,
                server_tls_context() if tls else None,
                max_message_size=MAX_MESSAGE_SIZE,
            )
        )
        print("PORT", server.port, flush=True)
        await done.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2:] == ["tls"])
