"""Hostile peers for the tests/test_hostile_*.py suite: raw frames, a raw
client and a raw server that speak bytes over any trio stream, our server
and our client wired up for them, and a memory probe.

Rules:
- A hostile peer writes exactly the bytes a test asks for (frames are
  built here, never by wsproto) and reads only when the test says so: a
  peer that "never reads" really never calls ``receive_some``.
- In memory, the transport is ``trio.testing.lockstep_stream_pair()``: a
  write waits until the other side has read it, as TCP does once its
  buffers are full. So a side that stops reading stops the other side's
  writes, and nothing piles up in the transport where the memory probe
  would count it against the library.
- A "reset" is an RST on a socket (``SO_LINGER`` 0, then close) and an
  abrupt close (EOF) on a memory stream.
- Every loop here is bounded, by a count or by the caller's deadline.
- Our server under attack records what each handler saw (its connection,
  the exception that ended it) and whether the server itself died, so a
  test asserts on those instead of being torn down by them.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import socket
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
import trio.testing
from server_fixtures import MemoryListener, upgrade_request

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The mask key of every frame a raw client sends (any key is valid; a
#: fixed one keeps failures reproducible).
MASK_KEY = b"\x37\xfa\x21\x3d"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Bounds on what a raw peer reads: a frame or a response head bigger than
#: this is a test failure, not a reason to buffer on.
MAX_READ_FRAME = 4 * 2**20
MAX_HEAD = 64 * 1024
#: Every handler loop stops after this many rounds.
LOOP_BOUND = 100_000
#: How long the "slow-accept" handler waits before it accepts.
ACCEPT_DELAY = 0.2


# ---------------------------------------------------------------------------
# Frames


def mask(payload: bytes, key: bytes = MASK_KEY) -> bytes:
    """``payload`` XORed with the repeated 4-byte ``key`` (RFC 6455 5.3)."""
    if not payload:
        return b""
    size = len(payload)
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame as bytes, masked (as a client must send) unless
    ``masked`` is False. ``length`` overrides the declared payload length
    (a lie, for frames that are cut short or claim too much)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | opcode
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        head = bytes([first, mask_bit | declared])
    elif declared < 2**16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", declared)
    if masked:
        return head + MASK_KEY + mask(payload)
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def deflated(data: bytes) -> bytes:
    """``data`` compressed as one permessage-deflate message on its own
    (RFC 7692 7.2.1: raw deflate, sync flush, the 4-byte tail dropped)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        """The code of a close frame (1005 when it carries none)."""
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


def parse_frame(buffer: bytes | bytearray) -> tuple[Frame, int] | None:
    """The first whole frame in ``buffer`` and its size, or None if
    ``buffer`` holds only part of one."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    size = second & 0x7F
    at = 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size = struct.unpack("!H", buffer[2:4])[0]
        at = 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size = struct.unpack("!Q", buffer[2:10])[0]
        at = 10
    assert size <= MAX_READ_FRAME, f"peer sent a {size}-byte frame"
    key = None
    if second & 0x80:
        if len(buffer) < at + 4:
            return None
        key = bytes(buffer[at : at + 4])
        at += 4
    if len(buffer) < at + size:
        return None
    payload = bytes(buffer[at : at + size])
    if key is not None:
        payload = mask(payload, key)
    return Frame(bool(first & 0x80), bool(first & 0x40), first & 0x0F, payload), at + size


# ---------------------------------------------------------------------------
# Raw peers


def close_code(error: BaseException | None) -> int | None:
    """The close code a ``ConnectionClosed`` carries (None for anything
    else, or no reason)."""
    if isinstance(error, ConnectionClosed) and error.reason is not None:
        return error.reason.code
    return None


async def reset(stream: trio.abc.Stream) -> None:
    """Drop the connection the rude way: an RST for a socket (``SO_LINGER``
    0), an abrupt close (EOF for the other side) for a memory stream."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


class RawPeer:
    """One end of a WebSocket connection driven by hand (see the rules)."""

    def __init__(self, stream: trio.abc.Stream, *, is_client: bool, received: bytes = b"") -> None:
        self.stream = stream
        self.is_client = is_client
        self._buffer = bytearray(received)

    def frame(self, opcode: int, payload: bytes = b"", **options: Any) -> bytes:
        """A frame masked as this side must (a client masks)."""
        options.setdefault("masked", self.is_client)
        return frame(opcode, payload, **options)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        await self.stream.send_all(self.frame(opcode, payload, **options))

    async def reset(self) -> None:
        await reset(self.stream)

    async def next_frame(self, read_size: int = 65536, pause: float = 0.0) -> Frame | None:
        """The next frame, or None once the stream ended or broke. A slow
        reader reads ``read_size`` bytes at a time, ``pause`` seconds apart."""
        while True:
            parsed = parse_frame(self._buffer)
            if parsed is not None:
                found, size = parsed
                del self._buffer[:size]
                return found
            if pause:
                await trio.sleep(pause)
            try:
                data = await self.stream.receive_some(read_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return None
            if not data:
                return None
            self._buffer += data

    async def read_close_code(self, *, answer: bool = False) -> int | None:
        """Read (and drop) frames up to the first close frame and return its
        code; None (what the peer reports as 1006) if the stream ended
        without one. With ``answer``, echo the close frame."""
        for _ in range(LOOP_BOUND):
            found = await self.next_frame()
            if found is None:
                return None
            if found.opcode == OP_CLOSE:
                if answer:
                    try:
                        await self.send_frame(OP_CLOSE, found.payload[:2])
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                return found.close_code
        raise AssertionError("no close frame within the loop bound")


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """An HTTP head (up to the blank line) and the bytes after it."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        assert len(data) < MAX_HEAD, f"no end of head in {bytes(data[:200])!r}"
        chunk = await stream.receive_some(MAX_HEAD)
        if not chunk:
            raise EOFError(f"stream ended within the head: {bytes(data)!r}")
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def raw_client(stream: trio.abc.Stream, path: str = "/echo", extra: bytes = b"") -> RawPeer:
    """Open a WebSocket connection by hand over ``stream`` (the upgrade
    request of ``server_fixtures`` plus ``extra`` header lines)."""
    await stream.send_all(upgrade_request(path, extra))
    head, rest = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return RawPeer(stream, is_client=True, received=rest)


def accept_key(head: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value that answers a request head."""
    key = b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def raw_server(
    stream: trio.abc.Stream, extensions: bytes | None = None, glued: bytes = b""
) -> RawPeer:
    """Answer a client's opening request by hand with 101 (and the
    ``Sec-WebSocket-Extensions`` value given, if any), followed in the
    same write by the ``glued`` bytes (frames)."""
    head, rest = await read_head(stream)
    assert head.startswith(b"GET "), head
    accept = accept_key(head)
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    )
    if extensions is not None:
        answer += b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
    await stream.send_all(answer + b"\r\n" + glued)
    return RawPeer(stream, is_client=False, received=rest)


async def connect_raw(
    nursery: trio.Nursery,
    role: str,
    *,
    path: str = "/",
    extensions: bytes | None = None,
    extra: bytes = b"",
    **options: Any,
) -> tuple[WebSocketConnection, RawPeer]:
    """Our connection playing ``role`` (wrap_client_stream or
    wrap_server_stream, its reader in ``nursery``) and a raw peer playing
    the other role, over lockstep memory streams."""
    ours, theirs = trio.testing.lockstep_stream_pair()
    peers: list[RawPeer] = []

    async def peer_side() -> None:
        if role == "client":
            peers.append(await raw_server(theirs, extensions))
        else:
            peers.append(await raw_client(theirs, path, extra))

    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer_side)
        if role == "client":
            ws = await wrap_client_stream(nursery, ours, "example.com", path, **options)
        else:
            request = await wrap_server_stream(nursery, ours, **options)
            ws = await request.accept()
    return ws, peers[0]


# ---------------------------------------------------------------------------
# Time

#: How often :func:`poll_until` looks.
POLL_INTERVAL = 0.01


async def poll_until(predicate: Callable[[], object], timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` is true, looking every 10 ms; raise
    ``trio.TooSlowError`` after ``timeout`` seconds (for states the library
    signals with no event of its own, such as ``connection_count``)."""
    for _ in range(int(timeout / POLL_INTERVAL) + 1):
        if predicate():
            return
        await trio.sleep(POLL_INTERVAL)
    raise trio.TooSlowError(f"still not true after {timeout} s: {predicate}")


#: The targets that run over real sockets, where time must be real too.
SOCKET_KINDS = frozenset({"tcp", "url"})


def clock_for(kind: str) -> trio.testing.MockClock | None:
    """The clock for a test against ``kind``: the autojump clock in
    memory, real time with sockets (the autojump clock would jump while
    the kernel works). A test module's ``clock`` fixture returns this, and
    pytest-trio runs the test with it."""
    return None if kind in SOCKET_KINDS else trio.testing.MockClock(autojump_threshold=0)


# ---------------------------------------------------------------------------
# Memory


class MemoryProbe:
    """Python memory allocated during a block (tracemalloc), for checking
    that an attack stays within a bound::

        with MemoryProbe() as probe:
            await attack()
        assert probe.peak < bound

    ``peak`` is the most memory allocated since the block started and
    still held at any one moment (the hostile peer's own allocations
    included: peers keep theirs small). Not nestable: tracemalloc is one
    tracer for the process."""

    def __init__(self) -> None:
        self.peak = 0
        self.current = 0

    def __enter__(self) -> MemoryProbe:
        gc.collect()
        tracemalloc.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.current, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()


# ---------------------------------------------------------------------------
# Our server, attacked


class LockstepListener(MemoryListener):
    """``server_fixtures.MemoryListener`` with lockstep streams (see the
    rules): a client that stops reading stops the server's writes."""

    async def connect(self) -> trio.abc.Stream:
        if self.closed:
            raise OSError("connection refused: listener closed")
        client, server = trio.testing.lockstep_stream_pair()
        await self._send.send(server)
        return client


@dataclass
class Visit:
    """What one connection's handler saw: its mode (the request path), its
    connection once accepted, and the exception that ended it (None when
    the handler returned)."""

    mode: str
    connection: WebSocketConnection | None = None
    error: BaseException | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def closed(self) -> CloseReason | None:
        return None if self.connection is None else self.connection.closed


#: The two roles our side plays against a raw peer.
ROLES = ["client", "server"]

#: The server targets: serve_websocket over TCP, a WebSocketServer over
#: lockstep memory streams, and wrap_server_stream on each memory stream.
SERVER_KINDS = ["tcp", "server", "wrap"]
MEMORY_SERVER_KINDS = ["server", "wrap"]


class AttackedServer:
    """Our server, with a handler whose behaviour the request path picks:

    - ``/echo``: echo every message;
    - ``/idle``: accept, then read nothing until :attr:`release` is set,
      then echo;
    - ``/blast``: send 64 KiB binary messages until the connection closes;
    - ``/close``: close at once with 1000 (the server starts the closing
      handshake);
    - ``/slow-accept``: wait ``ACCEPT_DELAY`` before accepting, then echo.

    Accepting is done the way most handlers do it (``ws = await
    request.accept()``, unguarded), except in ``/careful-slow-accept``,
    which catches the ``ConnectionClosed`` of a client gone before the
    accept and returns. Each handler run is recorded as a
    :class:`Visit`; a server that died keeps its exception in
    :attr:`crash`."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.options = options
        self.visits: list[Visit] = []
        self.crash: BaseException | None = None
        self.release = trio.Event()
        self.server: WebSocketServer | None = None
        self._listener: LockstepListener | None = None
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> AttackedServer:
        self._nursery = nursery
        if self.kind == "tcp":
            self.server = await nursery.start(self._run_tcp)
        elif self.kind == "server":
            self._listener = LockstepListener()
            self.server = WebSocketServer(self.handler, [self._listener], **self.options)
            await nursery.start(self._run_memory)
        else:
            assert self.kind == "wrap", self.kind
        return self

    async def _run_tcp(self, *, task_status: trio.TaskStatus[WebSocketServer]) -> None:
        try:
            await serve_websocket(
                self.handler, "127.0.0.1", 0, None, task_status=task_status, **self.options
            )
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self.crash = exc

    async def _run_memory(self, *, task_status: trio.TaskStatus[WebSocketServer]) -> None:
        assert self.server is not None
        try:
            await self.server.run(task_status=task_status)
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self.crash = exc

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def connect(self) -> trio.abc.Stream:
        """A new raw transport to the server."""
        if self.kind == "tcp":
            return await trio.open_tcp_stream("127.0.0.1", self.port)
        if self.kind == "server":
            assert self._listener is not None
            return await self._listener.connect()
        client, server = trio.testing.lockstep_stream_pair()
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_wrapped, server)
        return client

    async def _serve_wrapped(self, stream: trio.abc.Stream) -> None:
        """What a program serving with ``wrap_server_stream`` does: the
        documented exceptions (a bad request, a client gone before the
        accept) end one connection; anything else is a crash."""
        assert self._nursery is not None
        try:
            options = {k: v for k, v in self.options.items() if k in _WRAP_OPTIONS}
            request = await wrap_server_stream(self._nursery, stream, **options)
            await self.handler(request)
        except (HandshakeError, ConnectionClosed):
            pass
        except trio.Cancelled:
            raise
        except BaseException as exc:
            self.crash = exc

    async def handler(self, request: WebSocketRequest) -> None:
        visit = Visit(request.path.lstrip("/"))
        self.visits.append(visit)
        try:
            if visit.mode.endswith("slow-accept"):
                await trio.sleep(ACCEPT_DELAY)
            if visit.mode.startswith("careful-"):
                try:
                    ws = await request.accept()
                except ConnectionClosed as exc:
                    visit.error = exc
                    return
            else:
                ws = await request.accept()
            visit.connection = ws
            try:
                await self._behave(visit.mode, ws)
            except ConnectionClosed as exc:
                visit.error = exc
            finally:
                if self.kind == "wrap":  # no server closes it for us
                    with trio.move_on_after(2):
                        await ws.aclose()
        except BaseException as exc:
            visit.error = exc
            raise
        finally:
            visit.done.set()

    async def _behave(self, mode: str, ws: WebSocketConnection) -> None:
        if mode == "idle":
            await self.release.wait()
        if mode == "close":
            await ws.aclose()
            return
        if mode == "blast":
            payload = b"\xab" * 65536
            for _ in range(LOOP_BOUND):
                await ws.send_message(payload)
            return
        for _ in range(LOOP_BOUND):
            await ws.send_message(await ws.get_message())

    async def round_trip(self, text: str = "still there?") -> None:
        """A well-behaved client connects, has one message echoed and
        closes, within 1 s; the server must not have died."""
        assert self.crash is None, f"the server died: {self.crash!r}"
        with trio.fail_after(1):
            if self.kind == "tcp":
                async with open_websocket_url(f"ws://127.0.0.1:{self.port}/echo") as ws:
                    await ws.send_message(text)
                    assert await ws.get_message() == text
            else:
                stream = await self.connect()
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(nursery, stream, "example.com", "/echo")
                    await ws.send_message(text)
                    assert await ws.get_message() == text
                    await ws.aclose()
        assert self.crash is None, f"the server died: {self.crash!r}"

    async def settle(self) -> None:
        """Wait (at most 3 s) until the server's connections are over, so
        that a handler's error has reached the server."""
        with trio.fail_after(3):
            for visit in self.visits:
                await visit.done.wait()
        server = self.server
        await poll_until(lambda: server is None or not server.connection_count, 3)
        # The connection's task raises (if it does) after leaving the
        # count; let that reach the server's nursery.
        await trio.sleep(0.1)

    async def visit_done(self, mode: str) -> Visit:
        """The one handler run in ``mode``, once it has ended (2 s at most)."""
        await poll_until(lambda: any(v.mode == mode for v in self.visits))
        visit = self.visit(mode)
        with trio.fail_after(2):
            await visit.done.wait()
        return visit

    def visit(self, mode: str) -> Visit:
        """The one handler run in ``mode``."""
        found = [v for v in self.visits if v.mode == mode]
        assert len(found) == 1, f"{len(found)} visits to /{mode}: {self.visits}"
        return found[0]

    def assert_no_groups(self) -> None:
        """No ExceptionGroup reached a handler or ended the server."""
        for error in [self.crash, *(v.error for v in self.visits)]:
            assert not isinstance(error, BaseExceptionGroup), f"a group escaped: {error!r}"


_WRAP_OPTIONS = frozenset(
    {
        "message_queue_size",
        "max_message_size",
        "receive_buffer_size",
        "ping_interval",
        "ping_timeout",
        "max_buffered_bytes",
        "compression",
    }
)


# ---------------------------------------------------------------------------
# Our client, attacked

#: The client targets: wrap_client_stream over lockstep memory streams,
#: open_websocket_url over TCP.
CLIENT_KINDS = ["wrap", "url"]

HostileServer = Callable[[trio.abc.Stream], Awaitable[None]]
ClientApp = Callable[[WebSocketConnection], Awaitable[None]]


@dataclass
class ClientRun:
    """How our client fared: the connection (once open) and the exception
    that ended the application's block (None when it ended normally)."""

    connection: WebSocketConnection | None = None
    error: BaseException | None = None


async def run_client(
    kind: str, hostile: HostileServer, app: ClientApp, **options: Any
) -> ClientRun:
    """Connect our client to ``hostile`` (a function given the server's
    end of the transport) and run ``app`` on the connection; the exception
    that leaves the public calls is recorded, never raised."""
    run = ClientRun()
    async with trio.open_nursery() as nursery:
        if kind == "url":
            listeners = await nursery.start(
                partial(trio.serve_tcp, _hostile_tcp_handler(hostile), 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            try:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/", **options) as ws:
                    run.connection = ws
                    await app(ws)
            except trio.Cancelled:
                raise
            except BaseException as exc:
                run.error = exc
        else:
            assert kind == "wrap", kind
            ours, theirs = trio.testing.lockstep_stream_pair()
            nursery.start_soon(_run_hostile, hostile, theirs)
            async with trio.open_nursery() as connection_nursery:
                # (Errors are caught in the nursery's body: what a public
                # call raised, not a group of our making.)
                try:
                    ws = await wrap_client_stream(
                        connection_nursery, ours, "example.com", "/", **options
                    )
                    run.connection = ws
                    try:
                        await app(ws)
                    finally:
                        with trio.move_on_after(5):
                            await ws.aclose()
                except trio.Cancelled:
                    raise
                except BaseException as exc:
                    run.error = exc
        nursery.cancel_scope.cancel()
    return run


def _hostile_tcp_handler(hostile: HostileServer) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def handle(stream: trio.SocketStream) -> None:
        await _run_hostile(hostile, stream)

    return handle


async def _run_hostile(hostile: HostileServer, stream: trio.abc.Stream) -> None:
    try:
        await hostile(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
