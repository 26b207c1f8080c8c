"""Tools for testing code that uses trio_websocket: a connected client and
server in one process without sockets, and a stream wrapper that makes the
network slow, silent or broken on demand.

    from trio_websocket.testing import open_memory_pair

    async def test_echo():
        async with open_memory_pair() as (client, server):
            await client.send_message("hi")
            assert await server.get_message() == "hi"

Rules:
- Public module, not imported by ``trio_websocket`` itself (``import
  trio_websocket`` stays free of test helpers); it uses the same entry
  points as any program (``wrap_client_stream``, ``wrap_server_stream``).
- Faults are injected by wrapping a stream, never by hooks in the library:
  :class:`FaultyStream` works around any ``trio.abc.Stream``, so the same
  faults apply to memory streams, TCP or TLS.
- Time only passes through ``trio.sleep``, so delays are instant and exact
  under trio's autojump clock (``trio.testing.MockClock``).
- Nothing here hangs a test on its own: :func:`open_memory_pair` closes
  both connections within :data:`CLOSE_TIMEOUT` seconds and cancels
  whatever is left; only a black-holed stream waits forever, by design,
  until the test's own timeout (or keepalive) gives up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from ._client.client import wrap_client_stream
from ._core.connection import WebSocketConnection
from ._core.errors import ConnectionClosed, Headers
from ._core.groups import collapse_exception_groups, combine, only
from ._core.log import log_handler_error
from ._server.request import WebSocketRequest, wrap_server_stream
from ._server.server import ServedRequest

__all__ = [
    "CLOSE_TIMEOUT",
    "FaultyStream",
    "memory_pair",
    "open_memory_client",
    "open_memory_pair",
]

#: Seconds :func:`open_memory_pair` allows both closing handshakes when its
#: block exits, before it drops the connections.
CLOSE_TIMEOUT = 5.0

_Pair = tuple[WebSocketConnection, WebSocketConnection]


async def memory_pair(
    nursery: trio.Nursery,
    client_stream: trio.abc.Stream | None = None,
    server_stream: trio.abc.Stream | None = None,
    *,
    host: str = "localhost",
    resource: str = "/",
    subprotocols: list[str] | None = None,
    accept_subprotocol: str | None = None,
    client_options: Mapping[str, Any] | None = None,
    server_options: Mapping[str, Any] | None = None,
) -> _Pair:
    """Open a connected ``(client, server)`` pair whose readers run in
    ``nursery``, like :func:`~trio_websocket.connect_websocket` does. Both
    opening handshakes run concurrently; the pair is returned once both are
    done.

    :param nursery: where both connections' reader tasks run; it must
        outlive the connections' use.
    :param client_stream: the client's end of the transport, and
    :param server_stream: the server's end: both or neither. Default: a
        fresh ``trio.testing.memory_stream_pair()``. Pass wrapped ends (see
        :class:`FaultyStream`) to test delays and failures.
    :param host: the ``Host`` header the client sends.
    :param resource: the path and query string the client requests.
    :param subprotocols: the subprotocols the client offers.
    :param accept_subprotocol: the one the server picks (None: none).
    :param client_options: more keyword arguments for
        :func:`~trio_websocket.wrap_client_stream` (``message_queue_size``,
        ``max_message_size``, ``extra_headers``...).
    :param server_options: more keyword arguments for
        :func:`~trio_websocket.wrap_server_stream`.
    :raises ValueError: if only one of the two streams is given.
    """
    if (client_stream is None) != (server_stream is None):
        raise ValueError("give both client_stream and server_stream, or neither")
    if client_stream is None or server_stream is None:
        client_stream, server_stream = trio.testing.memory_stream_pair()
    result: dict[str, WebSocketConnection] = {}

    async def serve(stream: trio.abc.Stream) -> None:
        request = await wrap_server_stream(nursery, stream, **(server_options or {}))
        result["server"] = await request.accept(subprotocol=accept_subprotocol)

    async def connect(stream: trio.abc.Stream) -> None:
        result["client"] = await wrap_client_stream(
            nursery,
            stream,
            host,
            resource,
            subprotocols=subprotocols,
            **(client_options or {}),
        )

    # One error, not a group: a failed handshake on one side (a rejected
    # subprotocol, a bad option) reads as itself.
    with collapse_exception_groups():
        async with trio.open_nursery() as handshakes:
            handshakes.start_soon(serve, server_stream)
            handshakes.start_soon(connect, client_stream)
    return result["client"], result["server"]


@asynccontextmanager
async def open_memory_pair(
    client_stream: trio.abc.Stream | None = None,
    server_stream: trio.abc.Stream | None = None,
    *,
    host: str = "localhost",
    resource: str = "/",
    subprotocols: list[str] | None = None,
    accept_subprotocol: str | None = None,
    client_options: Mapping[str, Any] | None = None,
    server_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[_Pair]:
    """A connected ``(client, server)`` pair for the duration of a block::

        async with open_memory_pair() as (client, server):
            ...

    The arguments are those of :func:`memory_pair`. When the block exits,
    the client closes with 1000 (if neither side closed yet) and both
    connections are given :data:`CLOSE_TIMEOUT` seconds to finish their
    closing handshakes; then they are dropped and their tasks cancelled.
    An exception raised in the block comes out as itself, never inside an
    ``ExceptionGroup``.
    """
    user_error: BaseException | None = None
    internal_error: BaseException | None = None
    try:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                client, server = await memory_pair(
                    nursery,
                    client_stream,
                    server_stream,
                    host=host,
                    resource=resource,
                    subprotocols=subprotocols,
                    accept_subprotocol=accept_subprotocol,
                    client_options=client_options,
                    server_options=server_options,
                )
                try:
                    yield client, server
                except BaseException as exc:
                    # Raised below, outside the nursery, so not in a group.
                    user_error = exc
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await client.aclose()
                    await server.aclose()
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        internal_error = exc
    error = combine(user_error, internal_error)
    if error is not None:
        try:
            raise error
        finally:
            del error, user_error, internal_error


async def _serve_one(
    handler: Callable[[WebSocketRequest], Awaitable[object]],
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    server_options: Mapping[str, Any],
    handler_errors: list[Exception],
    done: trio.Event,
) -> None:
    """Run ``handler`` on the request read from ``stream`` and close what it
    left open, as a server does (1000 after a return, 1011 after an error;
    403 or 500 for a request it neither accepted nor rejected). As in a
    server, a ``ConnectionClosed`` escaping the handler is the peer's
    doing, not an error to report."""
    try:
        request = await wrap_server_stream(nursery, stream, **server_options)
        served: ServedRequest = request
        failed = False
        try:
            await handler(request)
        except Exception as exc:
            failed = True
            if not only(exc, ConnectionClosed):
                handler_errors.append(exc)
                log_handler_error(request, served._connection, exc)
        await served._finish(failed, CLOSE_TIMEOUT)
    finally:
        done.set()


@asynccontextmanager
async def open_memory_client(
    handler: Callable[[WebSocketRequest], Awaitable[object]],
    *,
    host: str = "localhost",
    resource: str = "/",
    subprotocols: list[str] | None = None,
    extra_headers: Headers | None = None,
    client_options: Mapping[str, Any] | None = None,
    server_options: Mapping[str, Any] | None = None,
    client_stream: trio.abc.Stream | None = None,
    server_stream: trio.abc.Stream | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A client connected, over memory streams, to a server ``handler`` (the
    function you give :func:`~trio_websocket.serve_websocket`), for the
    duration of a block::

        async with open_memory_client(my_handler, resource="/chat") as ws:
            await ws.send_message("hello")

    The handler runs as under a real server: it gets a
    :class:`~trio_websocket.WebSocketRequest`, and what it leaves open is
    closed when it returns (1000) or raises (1011). A handler that rejects
    the request makes this raise :exc:`~trio_websocket.ConnectionRejected`.

    When the block exits, the client closes with 1000 and the handler gets
    :data:`CLOSE_TIMEOUT` seconds to finish; then it is cancelled. If the
    handler raised, its exception is raised from here (with an error of the
    block as its context), so a handler bug never goes unnoticed.

    :param handler: ``async def handler(request)``.
    :param host: the ``Host`` header the client sends.
    :param resource: the path and query string the client requests.
    :param subprotocols: the subprotocols the client offers.
    :param extra_headers: more request headers, as ``(bytes, bytes)`` pairs.
    :param client_options: more keyword arguments for
        :func:`~trio_websocket.wrap_client_stream`.
    :param server_options: more keyword arguments for
        :func:`~trio_websocket.wrap_server_stream`.
    :param client_stream: the client's end of the transport, and
    :param server_stream: the handler's end: both or neither (default: a
        fresh ``trio.testing.memory_stream_pair()``), as in
        :func:`memory_pair`.
    :raises ValueError: if only one of the two streams is given.
    """
    if (client_stream is None) != (server_stream is None):
        raise ValueError("give both client_stream and server_stream, or neither")
    client_end: trio.abc.Stream
    server_end: trio.abc.Stream
    if client_stream is None or server_stream is None:
        client_end, server_end = trio.testing.memory_stream_pair()
    else:
        client_end, server_end = client_stream, server_stream
    handler_errors: list[Exception] = []
    handler_done = trio.Event()
    user_error: BaseException | None = None
    internal_error: BaseException | None = None
    try:
        with collapse_exception_groups():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _serve_one,
                    handler,
                    nursery,
                    server_end,
                    server_options or {},
                    handler_errors,
                    handler_done,
                )
                try:
                    client = await wrap_client_stream(
                        nursery,
                        client_end,
                        host,
                        resource,
                        subprotocols=subprotocols,
                        extra_headers=extra_headers,
                        **(client_options or {}),
                    )
                except BaseException:
                    # A failed handshake: the handler's own error, if it
                    # raised, says more than the client's 500.
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await handler_done.wait()
                    if handler_errors:
                        raise handler_errors[0] from None
                    raise
                try:
                    yield client
                except BaseException as exc:
                    # Raised below, outside the nursery, so not in a group.
                    user_error = exc
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await client.aclose()
                    await handler_done.wait()
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        internal_error = exc
    if handler_errors and internal_error is None:
        internal_error = handler_errors[0]
    error = combine(user_error, internal_error)
    if error is not None:
        try:
            raise error
        finally:
            del error, user_error, internal_error


class FaultyStream(trio.abc.Stream):
    """Wraps a stream and degrades it on request: slow (a delay per send or
    receive), silent (a black hole that swallows traffic) or broken (cut).

    Wrap one end of a pair; the faults act on what that end sends and
    receives, and the other end sees their effects as it would on a real
    network::

        client_end, server_end = trio.testing.memory_stream_pair()
        faulty = FaultyStream(client_end, send_delay=0.05)
        async with open_memory_pair(faulty, server_end) as (client, server):
            faulty.black_hole()      # the network goes silent, both ways
            ...                      # a keepalive should now time out

    The byte counts include the opening handshake.

    :param stream: the stream to wrap (any ``trio.abc.Stream``).
    :param send_delay: seconds each ``send_all`` waits before passing
        its bytes on (the sender waits too, as on a slow link).
    :param receive_delay: seconds each ``receive_some`` waits before
        it reads.
    :param cut_after: cut the stream (see :meth:`cut`) at the first send
        that would take the bytes sent past this count: the bytes up to the
        count still go out (so a frame can be broken half way), then that
        send raises ``trio.BrokenResourceError``.
    :param black_hole_after: go silent (see :meth:`black_hole`) at the
        first send that would pass this count: the bytes up to the count
        still go out, the rest vanish.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        send_delay: float = 0.0,
        receive_delay: float = 0.0,
        cut_after: int | None = None,
        black_hole_after: int | None = None,
    ) -> None:
        for name, value in (("cut_after", cut_after), ("black_hole_after", black_hole_after)):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a number of bytes >= 0, got {value!r}")
        self.stream = stream
        #: Seconds each send waits; may be changed at any time.
        self.send_delay: float = float(send_delay)
        #: Seconds each receive waits; may be changed at any time.
        self.receive_delay: float = float(receive_delay)
        #: Bytes passed on to the wrapped stream so far.
        self.bytes_sent: int = 0
        #: Bytes returned by ``receive_some`` so far.
        self.bytes_received: int = 0
        self._cut_after = cut_after
        self._black_hole_after = black_hole_after
        self._cut = False
        self._silent = False
        self._closed = False
        # Set by cut() and aclose(): wakes a receive that the black hole
        # keeps waiting after the wrapped stream ended.
        self._broken = trio.Event()

    @property
    def is_cut(self) -> bool:
        """Whether the stream was cut."""
        return self._cut

    @property
    def is_black_hole(self) -> bool:
        """Whether the stream swallows traffic."""
        return self._silent

    def black_hole(self) -> None:
        """From now on, swallow traffic both ways, as a network that went
        silent (a cable pulled, a NAT entry forgotten): ``send_all``
        succeeds without sending, ``receive_some`` reads and discards
        what arrives and never returns, not even end of stream. Only
        cancellation, :meth:`cut` or ``aclose`` end the wait.
        """
        self._silent = True

    async def cut(self) -> None:
        """Break the stream now, both ways: this end's calls raise
        ``trio.BrokenResourceError`` (a pending receive included), and the
        wrapped stream is closed, so the other end sees end of stream or
        ``BrokenResourceError``, as after a connection reset."""
        if self._cut:
            await trio.lowlevel.checkpoint()
            return
        self._cut = True
        self._broken.set()
        await trio.aclose_forcefully(self.stream)

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._cut:
            raise trio.BrokenResourceError("the stream was cut")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_usable()
        if self.send_delay > 0:
            await trio.sleep(self.send_delay)
            self._check_usable()
        if self._silent:
            await trio.lowlevel.checkpoint()
            return
        view = memoryview(data)
        room = self._bytes_before_fault()
        if room is None or len(view) <= room:
            await self._pass_on(view)
            return
        # This send passes a threshold: what fits goes out, then the fault.
        if room:
            await self._pass_on(view[:room])
        if self._cut_after is not None and self.bytes_sent >= self._cut_after:
            await self.cut()
            raise trio.BrokenResourceError("the stream was cut")
        self.black_hole()
        await trio.lowlevel.checkpoint()

    def _bytes_before_fault(self) -> int | None:
        """How many more bytes may be sent before a threshold is passed."""
        thresholds = [
            after for after in (self._cut_after, self._black_hole_after) if after is not None
        ]
        if not thresholds:
            return None
        return max(min(thresholds) - self.bytes_sent, 0)

    async def _pass_on(self, data: memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except trio.ClosedResourceError:
            if self._cut:
                raise trio.BrokenResourceError("the stream was cut") from None
            raise
        self.bytes_sent += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        self._check_usable()
        if self._silent:
            await trio.lowlevel.checkpoint()
            return
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._check_usable()
        if self.receive_delay > 0:
            await trio.sleep(self.receive_delay)
            self._check_usable()
        try:
            while True:
                if self._silent:
                    await self._swallow()
                data = await self.stream.receive_some(max_bytes)
                if not self._silent:
                    break
        except trio.ClosedResourceError:
            if self._cut:
                raise trio.BrokenResourceError("the stream was cut") from None
            raise
        self.bytes_received += len(data)
        return data

    async def _swallow(self) -> None:
        """Read and discard until the stream ends, then wait until this
        stream is cut or closed (the wrapped stream may have ended because
        of it: closing it can end a pending receive either way)."""
        while await self.stream.receive_some():
            pass
        await self._broken.wait()
        self._check_usable()

    async def aclose(self) -> None:
        self._closed = True
        self._broken.set()
        if self._cut:
            await trio.lowlevel.checkpoint()  # the wrapped stream is closed already
        else:
            await self.stream.aclose()

    def __repr__(self) -> str:
        state = "cut" if self._cut else "black hole" if self._silent else "open"
        return f"<FaultyStream ({state}) around {self.stream!r}>"
