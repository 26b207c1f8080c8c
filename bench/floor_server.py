"""Handshake floor experiment (see bench/README.md, "handshake floor"):
the least a trio server must do for one WebSocket open + close, with no
library: accept, read the request up to the blank line, answer a fixed
101 (the accept key computed), read the client's close frame, echo a close
frame, close the socket. --tasks 2 adds a second task per connection (the
shape of a reader task feeding a handler) to price that hand-over; --tasks 0 is one task on the
bare socket (non-blocking calls and trio.lowlevel.wait_readable, no
SocketStream), to price trio's stream layer. --tls (with --tasks 1 or 2)
does the same over trio.SSLStream (trio.serve_ssl_over_tcp and the
bench's certificate, as the "raw trio TLS" row of run.py --tls serves):
the least a WebSocket handshake costs over TLS on trio. --lean (with
--tasks 1 or 2) accepts as trio_websocket's server does
(`_wire.socket_stream.acceptor_for` on the listener: lean socket streams,
in TLS through `_wire.tls_stream`'s stream when --tls), so it prices the
same exchange on the library's own stream layer, the least the library
could reach (needs trio_websocket importable: ab.py's PYTHONPATH).
Prints `PORT <n>`."""

import argparse
import base64
import hashlib
from functools import partial

import trio
from benchutil import emit, raise_nofile, server_tls_context, watchdog

CHECKPOINTS = False
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_1000 = b"\x88\x02\x03\xe8"


def answer(head):
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
            break
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


async def read_close(stream, buf):
    while len(buf) < 8:  # a masked close frame with a 2-byte code: 8 bytes
        data = await stream.receive_some(65536)
        if not data:
            return
        buf += data


async def one_task(stream):
    async with stream:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        await stream.send_all(answer(head))
        await read_close(stream, rest)
        await stream.send_all(CLOSE_1000)


async def two_tasks(stream):
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    await stream.send_all(answer(head))
    closed = trio.Event()

    async def reader():
        async with stream:
            await read_close(stream, rest)
            await stream.send_all(CLOSE_1000)
        closed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await closed.wait()


async def raw_connection(sock):
    """One connection on the bare socket: trio's lowlevel waits only."""
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not data:
                return
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        sock.send(answer(head))
        if CHECKPOINTS:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while len(rest) < 8:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not data:
                return
            rest += data
        sock.send(CLOSE_1000)
        if CHECKPOINTS:
            await trio.lowlevel.cancel_shielded_checkpoint()
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def raw_server(host, port, task_status):
    import socket
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    task_status.started(listener.getsockname()[1])
    async with trio.open_nursery() as nursery:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(raw_connection, sock)


async def lean_server(handler, listener, task_status):
    """Accept as trio_websocket's server does (its accept loop, less the
    retry on EMFILE): a task per connection on the library's own streams."""
    from trio_websocket._wire.socket_stream import acceptor_for

    accept = acceptor_for(listener)
    task_status.started()
    async with listener, trio.open_nursery() as nursery:
        while True:
            nursery.start_soon(handler, await accept())


async def main(host, port, tasks, tls, lean):
    async with trio.open_nursery() as nursery:
        if tasks == 0:
            emit("PORT", await nursery.start(raw_server, host, port))
            return
        handler = one_task if tasks == 1 else two_tasks
        if lean:
            if tls:
                listener = (await trio.open_ssl_over_tcp_listeners(
                    port, server_tls_context(), host=host, https_compatible=True))[0]
                tcp = listener.transport_listener
            else:
                listener = tcp = (await trio.open_tcp_listeners(port, host=host))[0]
            await nursery.start(lean_server, handler, listener)
            emit("PORT", tcp.socket.getsockname()[1])
            return
        if tls:
            serve = partial(trio.serve_ssl_over_tcp, handler, port, server_tls_context(),
                            host=host)
        else:
            serve = partial(trio.serve_tcp, handler, port, host=host)
        listeners = await nursery.start(serve)
        listener = listeners[0]
        if tls:
            listener = listener.transport_listener
        emit("PORT", listener.socket.getsockname()[1])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tasks", type=int, default=1, choices=(0, 1, 2))
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--checkpoints", action="store_true",
                   help="with --tasks 0: a schedule point after each send, as trio's streams make")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--lean", action="store_true",
                   help="accept as trio_websocket's server does: its lean (TLS) streams")
    a = p.parse_args()
    if a.tls and a.tasks == 0:
        p.error("--tls needs --tasks 1 or 2")
    if a.lean and a.tasks == 0:
        p.error("--lean needs --tasks 1 or 2")
    CHECKPOINTS = a.checkpoints
    watchdog(a.lifetime)
    raise_nofile()
    trio.run(main, a.host, a.port, a.tasks, a.tls, a.lean)
