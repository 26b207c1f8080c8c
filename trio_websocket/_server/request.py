"""One client's opening request on the server side: reading it, the
plain HTTP answers, and the :class:`WebSocketRequest` a handler accepts or
rejects.

Rules:
- Builds on ``_core.connection`` and the pure modules; never imports ``_client.client``
  or ``_server.server`` (the server drives these pieces; see its rules for the
  order of the checks).
- The request head is parsed once: a plain, valid upgrade by ``_server.upgrade``
  (the strict parser of ``_server.http``, no h11), which also writes the 101
  answer when no extension or extra header is wanted; any other request by
  wsproto (h11 inside it), which decides every refusal. A request read the
  short way keeps its raw head, replayed through wsproto only if the
  handler rejects it or accepts it with extra headers or an extension. The
  ``_server.http`` parser reads the head again only for a ``process_request`` hook
  or a request wsproto refused.
- A head is judged as early as its bytes allow (``_server.http.EarlyHeadCheck``
  on every partial read, and on a whole head before h11 sees it): what can
  never become a valid request gets 400 at once.
- Every plain HTTP answer ends with ``Connection: close``, and the stream
  lingers briefly so that the answer is not destroyed by a reset.
- A request the handler neither accepted nor rejected gets 403 (returned)
  or 500 (raised) when the handler ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

from .._core.close import INTERNAL_ERROR, NORMAL_CLOSURE, CloseReason
from .._core.compression import DeflateConfig
from .._core.config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    DEFAULT_RECEIVE_BUFFER_SIZE,
    ConnectionOptions,
)
from .._core.connection import STREAM_ERRORS, WebSocketConnection
from .._core.contracts import OpeningConnection, ServedConnection
from .._core.deflate import DeflateExtension
from .._core.endpoint import Endpoint, stream_endpoint
from .._core.errors import ConnectionClosed, HandshakeError, Headers
from .._h2.frame_guard import CLIENT_PREFACE
from .._h2.stream import HTTP2Stream
from .http import (
    HEADERS_TOO_LARGE,
    SHUTTING_DOWN,
    UPGRADE_REQUIRED,
    URI_TOO_LONG,
    EarlyHeadCheck,
    HTTPRequest,
    HTTPResponse,
    normalize_headers,
    parse_request_head,
    text_response,
)
from .limits import DEFAULT_REQUEST_LIMITS, HeadScanner, RequestLimits, RequestTooLarge
from .upgrade import accept_response, read_upgrade

#: After a plain HTTP answer, how long and how much the server goes on
#: reading (and discarding) what the client still sends before it closes:
#: closing with unread data makes the kernel send a reset, which can destroy
#: the answer before the client reads it.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 1024
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 34\r\n"
    b"connection: close\r\n\r\n"
    b"Invalid WebSocket opening request\n"
)


class WebSocketRequest:
    """A client's opening handshake, waiting for the handler to
    :meth:`accept` or :meth:`reject` it."""

    __slots__ = (
        "_connection",
        "_early_frames",
        "_event",
        "_handshake",
        "_local",
        "_nursery",
        "_options",
        "_refusal",
        "_remote",
        "_stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handshake: H11Handshake | bytes,
        event: Request,
        nursery: trio.Nursery,
        *,
        options: ConnectionOptions,
        early_frames: bytes = b"",
    ) -> None:
        self._stream = stream
        # Bytes the client sent right behind its request, before our 101
        # (RFC 6455 says it must wait; one that does not loses nothing):
        # the connection parses them first.
        self._early_frames = early_frames
        # Until the one decision: wsproto's handshake, or the raw head of a
        # request read without it (see the module rules).
        self._handshake: H11Handshake | bytes | None = handshake
        self._event = event
        self._nursery = nursery
        self._options = options
        self._connection: WebSocketConnection | None = None
        # Set when a shutting-down server answered this request itself.
        self._refusal: CloseReason | None = None
        self._local = stream_endpoint(stream, local=True)
        self._remote = stream_endpoint(stream, local=False)

    @property
    def headers(self) -> Headers:
        """The request's headers as ``(name, value)`` byte pairs (names in
        lower case; Host and the Sec-WebSocket-Protocol/-Extensions headers
        are parsed out)."""
        return self._event.extra_headers

    @property
    def path(self) -> str:
        """The requested resource: path and query string."""
        return self._event.target

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order."""
        return tuple(self._event.subprotocols)

    @property
    def http_version(self) -> str:
        """``"1.1"`` for an HTTP/1.1 upgrade, ``"2"`` for an extended CONNECT
        on an HTTP/2 stream (RFC 8441; the server's ``http2`` option)."""
        return "1.1"

    @property
    def local(self) -> Endpoint | str:
        """The server's endpoint of this connection."""
        return self._local

    @property
    def remote(self) -> Endpoint | str:
        """The client's endpoint."""
        return self._remote

    def _claim(self) -> H11Handshake | bytes:
        """Take the handshake for the one decision on this request; the
        request then drops it (it is not needed once answered, and an
        idle connection should not keep its HTTP parser)."""
        handshake = self._handshake
        if handshake is None:
            if self._refusal is not None:
                raise ConnectionClosed(self._refusal)
            raise RuntimeError("this request was already accepted or rejected")
        self._handshake = None
        return handshake

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: Headers | None = None,
    ) -> WebSocketConnection:
        """Accept the connection and return it.

        :param subprotocol: one of :attr:`proposed_subprotocols`, or None.
        :param extra_headers: more response headers as byte pairs.
        :raises ValueError: for a subprotocol the client did not offer.
        :raises ConnectionClosed: if the client is already gone, or the
            server is shutting down (it answered the client with 503).
        """
        if subprotocol is not None and subprotocol not in self._event.subprotocols:
            raise ValueError(f"the client did not offer subprotocol {subprotocol!r}")
        handshake = self._claim()
        extensions: list[Extension] = []
        compression = self._options.compression
        if compression is not None and self._event.extensions:
            # Accepts the client's first acceptable offer, if any.
            extensions.append(
                DeflateExtension(
                    compression, is_client=False, max_message_size=self._options.max_message_size
                )
            )
        protocol, send_answer = self._accepting(handshake, subprotocol, extra_headers, extensions)
        if self._early_frames:
            # (wsproto's own handshake drops them: it builds the connection
            # without h11's trailing data.)
            protocol.receive_data(self._early_frames)
            self._early_frames = b""
        connection = WebSocketConnection(
            self._stream,
            protocol,
            is_client=False,
            path=self._event.target,
            subprotocol=subprotocol,
            handshake_headers=self._event.extra_headers,
            options=self._options,
            extensions=[extension for extension in extensions if extension.enabled()]
            if extensions
            else extensions,
            endpoints=(self._local, self._remote),
            http_version=self.http_version,
        )
        self._connection = connection
        opening: OpeningConnection = connection
        try:
            await send_answer()
        except BaseException as exc:
            opening._opening_failed()
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, STREAM_ERRORS):
                raise ConnectionClosed(connection.closed) from exc
            raise
        opening._start(self._nursery)
        if self._refusal is not None:
            # The server began shutting down while the answer was on its way.
            reason = self._refusal
            self._nursery.start_soon(connection.aclose, reason.code, reason.reason)
        return connection

    def _accepting(
        self,
        handshake: H11Handshake | bytes,
        subprotocol: str | None,
        extra_headers: Headers | None,
        extensions: list[Extension],
    ) -> tuple[Connection, Callable[[], Awaitable[None]]]:
        """The protocol of the accepted connection (its extensions
        negotiated), and what writes the answer that accepts it."""
        # The short way (``_server.upgrade``) writes no extension and no extra
        # header: an answer with either goes through wsproto, which
        # validates and negotiates them.
        protocol: Connection | None
        if isinstance(handshake, bytes) and not extra_headers and not extensions:
            data = accept_response(self._event, subprotocol)
            protocol = Connection(ConnectionType.SERVER)
        else:
            handshake = _replayed(handshake)
            data = handshake.send(
                AcceptConnection(
                    subprotocol=subprotocol,
                    extra_headers=list(extra_headers or []),
                    extensions=extensions,
                )
            )
            protocol = handshake.connection
        assert protocol is not None
        return protocol, partial(self._stream.send_all, data)

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: Headers | None = None,
        body: bytes | None = None,
    ) -> None:
        """Refuse the connection with an HTTP response, then close it.

        :param status_code: an HTTP status of 200 or more (1xx is refused).
        :param extra_headers: response headers as byte pairs.
        :param body: the response body, if any.

        Does nothing when a shutting-down server has already answered the
        request with 503.
        """
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise TypeError("status_code must be an int")
        if not 200 <= status_code <= 999:
            raise ValueError(f"cannot reject with HTTP status {status_code}")
        if self._refusal is not None and self._connection is None:
            return
        await self._reject_with(self._claim(), status_code, list(extra_headers or []), body or b"")

    async def _reject_with(
        self, handshake: H11Handshake | bytes, status_code: int, headers: Headers, body: bytes
    ) -> None:
        """Write the rejection and close the stream."""
        await self._send_rejection(_replayed(handshake), status_code, headers, body)

    async def _send_rejection(
        self, handshake: H11Handshake, status_code: int, headers: Headers, body: bytes
    ) -> None:
        if body:
            data = handshake.send(
                RejectConnection(status_code=status_code, headers=headers, has_body=True)
            )
            data += handshake.send(RejectData(data=body, body_finished=True))
        else:
            data = handshake.send(RejectConnection(status_code=status_code, headers=headers))
        try:
            await self._stream.send_all(data)
            await self._stream.aclose()
        except STREAM_ERRORS:
            pass
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _finish(self, handler_failed: bool, disconnect_timeout: float) -> None:
        """Close whatever the handler left open, within ``disconnect_timeout``."""
        with trio.move_on_after(disconnect_timeout):
            await self._close_after_handler(handler_failed)
        # The timeout cancelled aclose, which then aborted the connection.

    @property
    def _over(self) -> bool:
        """Whether the accepted connection is over (its reader has closed
        the stream, or it never started), so that
        :meth:`_close_after_handler` cannot wait."""
        connection = self._connection
        if connection is None:
            return False
        served: ServedConnection = connection
        return not served._reader_started or served._reader_ended

    async def _close_after_handler(self, handler_failed: bool) -> None:
        """:meth:`_finish` without its own time limit: the caller bounds it
        (a timeout cancels ``aclose``, which then aborts the connection)."""
        connection = self._connection
        if connection is not None:
            served: ServedConnection = connection
            if not served._reader_started:
                # accept() failed to send the 101 and closed the stream:
                # there is no reader to wait for, nothing left to close.
                return
            code = INTERNAL_ERROR if handler_failed else NORMAL_CLOSURE
            # (``aclose`` without its own bound, which would be the
            # caller's again: a cancel scope less per connection; and no
            # schedule point for a connection already over, as the
            # connection's task ends here.)
            await served._close_and_wait(code, None, checkpoint_if_ended=False)
        elif self._handshake is not None:
            await self._reject_with(self._claim(), 500 if handler_failed else 403, [], b"")

    async def _end(self) -> None:
        """Make sure the connection's reader has ended (it runs in the
        handlers' nursery, not under the handler): abort it if
        :meth:`_finish` could not close it, then wait, even when cancelled
        (the reader only has to close its stream then). A request never
        accepted has its stream closed (a refusal's 503 answer closes it
        by itself)."""
        connection = self._connection
        if connection is None:
            if self._refusal is None:
                await trio.aclose_forcefully(self._stream)
            return
        served: ServedConnection = connection
        if not served._reader_started or served._reader_ended:
            return
        served._abort()
        with trio.CancelScope(shield=True):
            await served._wait_reader_ended()

    def _closing_for_shutdown(
        self, reason: CloseReason
    ) -> tuple[Callable[[], Awaitable[object]] | None, bool]:
        """What a server's graceful shutdown must run to close this request
        (None: nothing), and whether the request was refused (answered
        with 503 by that closing; a later :meth:`accept` raises
        ``ConnectionClosed``). An open connection gets the close handshake
        with ``reason``; one being accepted right now is closed with it by
        :meth:`accept` once its reader starts; an undecided request is
        taken from its handler and refused."""
        connection = self._connection
        if connection is not None:
            served: ServedConnection = connection
            if served._reader_started:
                return partial(connection.aclose, reason.code, reason.reason), False
            self._refusal = reason
            return None, False
        if self._handshake is None:  # already rejected
            return None, False
        self._handshake = None
        self._refusal = reason
        return partial(send_http_answer, self._stream, SHUTTING_DOWN), True


def _replayed(handshake: H11Handshake | bytes) -> H11Handshake:
    """wsproto's handshake for a request, reading its raw head again if it
    was read the short way (``_server.upgrade``)."""
    if isinstance(handshake, H11Handshake):
        return handshake
    replayed = H11Handshake(ConnectionType.SERVER)
    replayed.receive_data(handshake)
    for _ in replayed.events():
        pass
    return replayed


class HTTP2Start:
    """A client that opened with the HTTP/2 connection preface: the server
    serves it as an HTTP/2 connection, starting with ``received``."""

    __slots__ = ("received",)

    def __init__(self, received: bytes) -> None:
        self.received = received


class NotWebSocket:
    """A valid HTTP request that is not a valid WebSocket upgrade, and the
    answer it gets unless a ``process_request`` hook answers it first."""

    __slots__ = ("answer", "problem", "request")

    def __init__(self, request: HTTPRequest, answer: HTTPResponse, problem: str) -> None:
        self.request = request
        self.answer = answer
        self.problem = problem


def _http_request(parsed: tuple[str, str, Headers], stream: trio.abc.Stream) -> HTTPRequest:
    method, target, headers = parsed
    return HTTPRequest(
        method=method,
        path=target,
        headers=headers,
        remote=stream_endpoint(stream, local=False),
        local=stream_endpoint(stream, local=True),
    )


def hook_view(request: WebSocketRequest | NotWebSocket, head: bytes) -> HTTPRequest:
    """The request as a ``process_request`` hook sees it, every header in."""
    if isinstance(request, NotWebSocket):
        return request.request
    parsed = parse_request_head(head)
    # wsproto accepted this head, so it parses; fall back to wsproto's view
    # (without the headers it keeps apart) should our parser ever disagree.
    if parsed is None:  # pragma: no cover
        parsed = ("GET", request.path, list(request.headers))
    return HTTPRequest(
        method=parsed[0],
        path=parsed[1],
        headers=parsed[2],
        remote=request.remote,
        local=request.local,
    )


async def _send_answer(stream: trio.abc.Stream, data: bytes) -> None:
    """Write a plain HTTP answer and close the stream, reading (and
    discarding) for a moment what the client still sends (see
    ``_LINGER_SECONDS``). Never raises a stream error."""
    try:
        await stream.send_all(data)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
            with trio.move_on_after(_LINGER_SECONDS):
                drained = 0
                while drained < _LINGER_BYTES:
                    chunk = await stream.receive_some(16384)
                    if not chunk:
                        break
                    drained += len(chunk)
        await stream.aclose()
    except STREAM_ERRORS:
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def send_http_answer(
    stream: trio.abc.Stream, response: HTTPResponse, method: str = "GET"
) -> None:
    """Answer with ``response`` (its head only to a HEAD request) and close
    the stream, as every plain HTTP answer is (also for ``_server.server``);
    on an HTTP/2 stream, as an HTTP/2 answer that ends the stream."""
    if isinstance(stream, HTTP2Stream):
        assert isinstance(response.body, bytes)
        await stream.respond(
            response.status_code,
            normalize_headers(response.headers),
            response.body,
            head_only=method == "HEAD",
        )
        return
    await _send_answer(stream, response.serialize(head_only=method == "HEAD"))


def _rejection_of(hint: object) -> HTTPResponse:
    """The answer to a WebSocket upgrade that wsproto refused, from the
    rejection wsproto suggests (400, or 426 with the version it speaks)."""
    status = getattr(hint, "status_code", 400)
    headers = [(bytes(name).lower(), bytes(value)) for name, value in getattr(hint, "headers", [])]
    return text_response(status, f"{status} Invalid WebSocket opening request\n", headers)


async def read_request(
    stream: trio.abc.Stream,
    nursery: trio.Nursery,
    *,
    options: ConnectionOptions,
    limits: RequestLimits = DEFAULT_REQUEST_LIMITS,
    detect_http2: bool = False,
) -> tuple[WebSocketRequest | NotWebSocket | HTTP2Start, bytes]:
    """Read the opening request and its raw head.

    Garbage gets 400 and a head over the limits 414/431 (both raise
    :exc:`HandshakeError`); a valid HTTP request that is no valid upgrade
    comes back as a :class:`NotWebSocket` for the caller to answer. With
    ``detect_http2``, a client that opens with the HTTP/2 connection
    preface (h2c with prior knowledge) comes back as an
    :class:`HTTP2Start` holding what it sent so far.
    """
    received: bytes | bytearray = b""
    scanner = HeadScanner(limits)
    early = EarlyHeadCheck()
    # The usual head comes in one read that is already there when the
    # connection's task starts: taken without a schedule point (the task
    # has one when it answers). Any later read is the stream's usual one.
    # (A TLS stream has none: not asked, as its __getattr__ is Python code.)
    receive_now: Callable[[int], bytes | None] | None = (
        None if type(stream) is trio.SSLStream else getattr(stream, "receive_now", None)
    )
    try:
        while True:
            data: bytes | bytearray | None = None
            if receive_now is not None:
                data = receive_now(options.receive_buffer_size)
                receive_now = None
            if data is None:
                data = await stream.receive_some(options.receive_buffer_size)
            if not data:
                raise HandshakeError("client closed the connection during the handshake")
            if not received:
                received = data  # the usual case: the whole head in one read
            elif isinstance(received, bytearray):
                received += data
            else:
                received = bytearray(received) + data
            if detect_http2 and CLIENT_PREFACE.startswith(received[: len(CLIENT_PREFACE)]):
                if len(received) >= len(CLIENT_PREFACE):
                    return HTTP2Start(bytes(received)), b""
                continue
            try:
                head_length = scanner.feed(received)
            except RequestTooLarge as exc:
                too_large = URI_TOO_LONG if exc.status_code == 414 else HEADERS_TOO_LARGE
                await send_http_answer(stream, too_large)
                raise HandshakeError(f"request too large: {exc}") from exc
            if head_length is not None:
                break
            # Judged as early as the bytes allow (a TLS ClientHello, garbage,
            # bare LFs never end in the blank line we wait for).
            problem = early.problem(received)
            if problem is not None:
                await _send_answer(stream, _BAD_REQUEST)
                raise HandshakeError(f"invalid opening request: {problem}")
        head = bytes(received[:head_length])
        if b"\n " in head or b"\n\t" in head:
            # Obsolete line folding: refused (RFC 9112 section 5.2 allows
            # it), so that h11 and the hook's parser never disagree.
            await _send_answer(stream, _BAD_REQUEST)
            raise HandshakeError("invalid opening request: folded header line")
        early_frames = bytes(received[head_length:])
        upgrade = read_upgrade(head)
        if upgrade is not None:
            accepted = WebSocketRequest(
                stream, head, upgrade, nursery, options=options, early_frames=early_frames
            )
            return accepted, head
        # The same rules for a head that came whole (h11 would take bare
        # LFs, which a head in pieces is refused for).
        problem = EarlyHeadCheck().problem(head)
        if problem is not None:
            await _send_answer(stream, _BAD_REQUEST)
            raise HandshakeError(f"invalid opening request: {problem}")
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.receive_data(bytes(received))
        except (ProtocolError, UnicodeError) as exc:
            # (wsproto decodes the Host header as IDNA: a name that is not
            # valid IDNA raises UnicodeError, not a protocol error.)
            parsed = parse_request_head(head)
            if parsed is None:
                await _send_answer(stream, _BAD_REQUEST)
                raise HandshakeError(f"invalid opening request: {exc}") from exc
            request = _http_request(parsed, stream)
            if not request.is_websocket:
                return NotWebSocket(request, UPGRADE_REQUIRED, "not a WebSocket request"), head
            answer = _rejection_of(getattr(exc, "event_hint", None))
            return NotWebSocket(request, answer, str(exc)), head
        for event in handshake.events():
            if isinstance(event, Request):
                accepted = WebSocketRequest(
                    stream, handshake, event, nursery, options=options, early_frames=early_frames
                )
                return accepted, head
        raise HandshakeError("invalid opening request")  # pragma: no cover
    except STREAM_ERRORS as exc:
        raise HandshakeError(f"connection lost during the opening handshake: {exc}") from exc


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    message_queue_size: int = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = DEFAULT_RECEIVE_BUFFER_SIZE,
    *,
    ping_interval: float | None = None,
    ping_timeout: float | None = None,
    max_buffered_bytes: int | None = None,
    compression: str | DeflateConfig | None = None,
) -> WebSocketRequest:
    """Read a client's opening handshake from a stream you accepted.

    :param nursery: where the connection's reader runs once accepted.
    :param max_buffered_bytes: see :func:`open_websocket` (the other
        options too).
    :param compression: ``"deflate"`` or a :class:`DeflateConfig` to accept
        permessage-deflate (RFC 7692) when the client offers it; None (the
        default) never compresses.
    :returns: the request, for you to accept or reject.
    :raises HandshakeError: the client sent no valid request: the stream
        was answered (``426`` for an HTTP request that is not an upgrade,
        ``414``/``431`` for one over the default :class:`RequestLimits`,
        ``400`` otherwise) and closed.
    """
    options = ConnectionOptions.build(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        max_buffered_bytes=max_buffered_bytes,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        compression=compression,
    )
    try:
        request, _ = await read_request(stream, nursery, options=options)
        assert not isinstance(request, HTTP2Start)  # (not asked to detect it)
        if isinstance(request, NotWebSocket):
            await send_http_answer(stream, request.answer, request.request.method)
            raise HandshakeError(f"invalid opening request: {request.problem}")
        return request
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


