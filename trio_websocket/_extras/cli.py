"""The command line, ``python -m trio_websocket``: an interactive client and
an echo server.

    python -m trio_websocket ws://host:port/path [--insecure]
        [--subprotocol P ...] [--header "Name: value" ...]
        [--ping-interval SECONDS] [--proxy URL | --unix-socket PATH]
        [--linger SECONDS] [--close-timeout SECONDS] [--http2 | --require-http2]
    python -m trio_websocket serve [--host 127.0.0.1] [--port 8000] [--workers N]
        [--ping-interval SECONDS] [--max-connections N] [--max-handshakes N]
        [--unix-socket PATH] [--http2]

Rules:
- Top layer: uses only the package's public names (``from .. import ...``),
  like any other program would; nothing in the package imports this module
  but ``__main__``, so ``import trio_websocket`` never loads argparse.
- Data and diagnostics apart: the client writes each incoming message, and
  nothing else, to stdout (text as is, binary as a one-line hex summary);
  the status lines (connected, closed, errors) go to stderr, one line each.
  The server writes its URL to stdout (one line per listener, flushed, so a
  parent process can read the port picked by ``--port 0``; ``unix:PATH``
  for ``--unix-socket``) and its connection log and shutdown report to
  stderr.
- Exit status: 0 when the connection closed with 1000 (Ctrl-D sends it) or
  the server stopped on SIGINT/SIGTERM; 1 when no connection could be
  opened (or the server could not listen); 2 for a usage error (argparse's
  own); 3 when the connection closed with any other code (1006 when it was
  lost, 1011 when the client's keepalive got no pong in time).
- Stdin is read the Trio way, by a ``trio.lowlevel.FdStream``, so reading
  is cancelled like any other wait and no thread is left blocked on it. The
  stream gets its own file description (a terminal is reopened by name, a
  pipe is ``dup``-ed): ``FdStream`` makes it non-blocking, which must not
  leak to stdout when both are the same terminal. Stdin that cannot be
  polled (a regular file, ``/dev/null``) is read in short worker-thread
  calls that never block for long and are never abandoned.
- End of input (Ctrl-D, or the end of a pipe) does not close at once:
  replies to the last lines may still be on their way, and a server that
  receives our close frame may no longer send them (this library's server
  answers a close at once). So the client keeps printing until nothing has
  arrived for ``--linger`` seconds (``DEFAULT_LINGER``; 0: close at once),
  then closes with 1000 and still prints what the server sends before it
  answers the close. Each of the two waits is bounded by
  ``--close-timeout`` (``CLOSE_TIMEOUT``): a server that is never quiet is
  closed anyway, and one that does not answer the close is dropped (exit
  status 3). Ctrl-C (SIGINT) cancels the session, which drops the
  connection, and exits with 130.
- HTTP/2 (RFC 8441) is opt-in, as in the library: ``serve --http2`` serves
  h2c (prior knowledge, the server has no TLS) next to HTTP/1.1; the
  client's ``--http2`` tries HTTP/2 and falls back to the HTTP/1.1 upgrade,
  ``--require-http2`` fails instead (exit status 1). The status lines say
  when a WebSocket went over HTTP/2. Without the ``h2`` package either
  side says so in one line and exits with 1.
- The server stops with its own graceful shutdown
  (``WebSocketServer.aclose``) on the first SIGINT/SIGTERM: open
  connections get 1001, handshakes in progress 503, handlers still running
  after ``SHUTDOWN_TIMEOUT`` seconds are cancelled; the
  :class:`ShutdownReport` goes to stderr as one line. A second signal
  cancels every handler at once. With ``--workers`` each worker does the
  same, and the parent logs each worker's report.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import signal
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio

from .. import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    Proxy,
    ShutdownReport,
    WebSocketConnection,
    WebSocketRequest,
    WorkerPool,
    __version__,
    open_websocket_url,
    run_websocket_workers,
    serve_websocket,
)

EXIT_OK = 0
EXIT_CONNECT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABNORMAL_CLOSE = 3
EXIT_INTERRUPTED = 130

#: Where ``serve`` listens unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Seconds the server waits for its connections' closing handshakes on stop.
SHUTDOWN_TIMEOUT = 5.0
#: Seconds the client waits for the server to answer its close (Ctrl-D),
#: and at most for the server to fall quiet before that.
CLOSE_TIMEOUT = 10.0
#: Seconds without a message after end of input before the client closes.
DEFAULT_LINGER = 1.0
#: Bytes of a binary message shown in hex.
HEX_PREVIEW = 16
READ_SIZE = 65536


# ----------------------------------------------------------------------
# Output


def _status(line: str) -> None:
    """One diagnostic line on stderr (newlines folded: always one line)."""
    print(" ".join(line.splitlines()), file=sys.stderr, flush=True)


def _show_message(message: str | bytes) -> None:
    if isinstance(message, str):
        print(message, flush=True)
    else:
        preview = message[:HEX_PREVIEW].hex(" ")
        more = " ..." if len(message) > HEX_PREVIEW else ""
        print(f"[binary, {len(message)} bytes: {preview}{more}]", flush=True)


def describe_close(reason: CloseReason | None) -> str:
    if reason is None:
        return "no close code"
    text = f"code {reason.code} ({reason.name})"
    if reason.reason:
        text += f", reason: {reason.reason}"
    return text


def _describe_handshake_error(exc: HandshakeError) -> str:
    if isinstance(exc, ConnectionRejected):
        text = str(exc)
        if exc.body:
            first = exc.body.decode("utf-8", "replace").strip().splitlines()
            if first:
                text += f": {first[0][:200]}"
        return text
    if isinstance(exc, ConnectionTimeout):
        return f"timed out: {exc}"
    text = str(exc).rstrip().rstrip(":") or type(exc).__name__
    root = _root_cause(exc)
    detail = str(root)
    if root is not exc and detail and detail not in text:
        text += f" ({detail})"
    if isinstance(root, ssl.SSLCertVerificationError):
        text += " (use --insecure to accept a self-signed certificate)"
    return text


def _ungrouped(exc: BaseException) -> BaseException:
    """The first error inside (single-member) exception groups."""
    while True:
        members = getattr(exc, "exceptions", None)
        if not (isinstance(members, tuple) and members and isinstance(members[0], BaseException)):
            return exc
        exc = members[0]


def _root_cause(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` (and single-member groups, as trio's "all
    attempts to connect failed" carries) down to the first error."""
    while True:
        members = getattr(exc, "exceptions", None)  # an exception group
        if isinstance(members, tuple) and members and isinstance(members[0], BaseException):
            exc = members[0]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return exc


def _describe_endpoint(endpoint: Endpoint | str) -> str:
    return endpoint.host_port if isinstance(endpoint, Endpoint) else endpoint


# ----------------------------------------------------------------------
# Stdin, line by line


def _stdin_is_pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return stat.S_ISCHR(mode) and os.isatty(fd)


class _ThreadReader:
    """Reads a file that cannot be polled; each read returns promptly."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def receive_some(self, max_bytes: int) -> bytes:
        return await trio.to_thread.run_sync(os.read, self._fd, max_bytes)

    async def aclose(self) -> None:
        os.close(self._fd)
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def _stdin_lines() -> AsyncIterator[AsyncIterator[str]]:
    """The lines typed on stdin, without their line ends, until end of input
    (a last line without a newline included)."""
    fd = 0
    own_fd = os.open(os.ttyname(fd), os.O_RDONLY | os.O_NOCTTY) if os.isatty(fd) else os.dup(fd)
    reader: trio.lowlevel.FdStream | _ThreadReader = (
        trio.lowlevel.FdStream(own_fd) if _stdin_is_pollable(own_fd) else _ThreadReader(own_fd)
    )

    async def lines() -> AsyncIterator[str]:
        buffer = bytearray()
        while True:
            data = await reader.receive_some(READ_SIZE)
            if not data:
                break
            buffer += data
            *complete, rest = buffer.split(b"\n")
            buffer = bytearray(rest)
            for line in complete:
                yield _decode_line(line)
        if buffer:
            yield _decode_line(bytes(buffer))

    try:
        yield lines()
    finally:
        await reader.aclose()


def _decode_line(line: bytes | bytearray) -> str:
    return bytes(line).removesuffix(b"\r").decode("utf-8", "replace")


# ----------------------------------------------------------------------
# The client


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _parse_header(text: str) -> tuple[bytes, bytes]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f'expected "Name: value", got {text!r}')
    try:
        return name.encode("ascii"), value.strip().encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"header {text!r}: names must be ASCII, values Latin-1"
        ) from None


def _check_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected a ws:// or wss:// URL, got {text!r}")
    return text


@dataclass
class _Arrivals:
    """When the last message arrived (``trio.current_time()``)."""

    last: float = -math.inf


async def _print_incoming(
    ws: WebSocketConnection, input_scope: trio.CancelScope, arrivals: _Arrivals
) -> None:
    """Print every message until the connection closes, then stop the wait
    for input (if input has not ended already)."""
    try:
        while True:
            message = await ws.get_message()
            arrivals.last = trio.current_time()
            _show_message(message)
    except ConnectionClosed:
        pass
    finally:
        input_scope.cancel()


async def _wait_until_quiet(arrivals: _Arrivals, quiet: float) -> None:
    """Return once no message has arrived for ``quiet`` seconds (counted
    from the call at the earliest). Unbounded by itself: the caller bounds
    it, since a server may never fall quiet."""
    start = trio.current_time()
    while True:
        quiet_from = max(arrivals.last, start) + quiet
        if trio.current_time() >= quiet_from:
            return
        await trio.sleep_until(quiet_from)


async def _send_lines(ws: WebSocketConnection) -> bool:
    """Send each line of stdin; True at end of input, False when the
    connection closed first."""
    async with _stdin_lines() as lines:
        async for line in lines:
            try:
                await ws.send_message(line)
            except ConnectionClosed:
                return False
    return True


async def run_client(
    url: str,
    *,
    insecure: bool = False,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[bytes, bytes]] = (),
    ping_interval: float | None = None,
    proxy: str | None = None,
    unix_socket_path: str | None = None,
    linger: float = DEFAULT_LINGER,
    close_timeout: float = CLOSE_TIMEOUT,
    http2: bool | str = False,
) -> int:
    """The interactive client; returns the exit status. ``http2`` is the
    library's option: False, True (try HTTP/2) or ``"require"``."""
    status = EXIT_INTERRUPTED
    connection_options = _ClientOptions(
        ping_interval, proxy, unix_socket_path, linger, close_timeout, http2
    )
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            status = await _client_session(url, insecure, subprotocols, headers, connection_options)
            nursery.cancel_scope.cancel()
    if status == EXIT_INTERRUPTED:
        _status("interrupted")
    return status


@dataclass(frozen=True)
class _ClientOptions:
    """The client's connection options beyond the handshake's own."""

    ping_interval: float | None = None
    proxy: str | None = None
    unix_socket_path: str | None = None
    linger: float = DEFAULT_LINGER
    close_timeout: float = CLOSE_TIMEOUT
    http2: bool | str = False


async def _client_session(
    url: str,
    insecure: bool,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[bytes, bytes]],
    options: _ClientOptions = _ClientOptions(),
) -> int:
    ssl_context = _insecure_context() if insecure and url.lower().startswith("wss:") else None
    connected = False
    closed_by_us = False
    close_timed_out = False
    try:
        async with open_websocket_url(
            url,
            ssl_context,
            subprotocols=list(subprotocols),
            extra_headers=list(headers),
            ping_interval=options.ping_interval,
            proxy=options.proxy,
            unix_socket_path=options.unix_socket_path,
            http2=options.http2,
        ) as ws:
            connected = True
            _status(f"connected to {url}{_connection_details(ws)}")
            async with trio.open_nursery() as nursery:
                input_scope = trio.CancelScope()
                arrivals = _Arrivals()
                nursery.start_soon(_print_incoming, ws, input_scope, arrivals)
                end_of_input = False
                with input_scope:
                    end_of_input = await _send_lines(ws)
                    if end_of_input and options.linger > 0:
                        # Replies to the last lines may be on their way.
                        with trio.move_on_after(options.close_timeout):
                            await _wait_until_quiet(arrivals, options.linger)
                # Else (or if the server closed meanwhile) the printer
                # showed what was left, saw the close and cancelled the
                # waits above.
                if end_of_input and ws.closed is None:
                    # Close with 1000, and keep printing what the server
                    # sends until it answers: the printer ends by itself.
                    closed_by_us = True
                    with trio.move_on_after(options.close_timeout) as closing:
                        await ws.aclose(keep_receiving=True)
                    close_timed_out = closing.cancelled_caught
    except HandshakeError as exc:
        if isinstance(exc, DisconnectionTimeout) or connected:
            _status(f"error: the closing handshake failed: {exc}")
            return EXIT_ABNORMAL_CLOSE
        _status(f"error: {url}: {_describe_handshake_error(exc)}")
        return EXIT_CONNECT_FAILED
    except ValueError as exc:
        if connected:
            raise
        _status(f"error: {exc}")
        return EXIT_USAGE
    except RuntimeError as exc:
        if connected or not options.http2:
            raise
        # HTTP/2 without the h2 package: the library says what to install.
        _status(f"error: {exc}")
        return EXIT_CONNECT_FAILED
    if close_timed_out:
        _status(
            f"error: the server did not answer the close within {options.close_timeout:g} s"
        )
        return EXIT_ABNORMAL_CLOSE
    reason = ws.closed
    if closed_by_us:
        who = "closed at end of input"
    elif reason is not None and reason.code == 1006:
        who = "connection lost"
    elif ws.close_sent is not None and ws.close_received != reason:
        # Our close came first without Ctrl-D: the keepalive gave up.
        who = "closed by the client"
    else:
        who = "closed by the server"
    _status(f"{who}: {describe_close(reason)}")
    return EXIT_OK if reason is not None and reason.code == 1000 else EXIT_ABNORMAL_CLOSE


def _connection_details(ws: WebSocketConnection) -> str:
    """What the "connected" line adds: HTTP/2, the subprotocol."""
    details = []
    if ws.http_version == "2":
        details.append("HTTP/2")
    if ws.subprotocol:
        details.append(f"subprotocol: {ws.subprotocol}")
    return f" ({', '.join(details)})" if details else ""


# ----------------------------------------------------------------------
# The echo server


async def echo_handler(request: WebSocketRequest) -> None:
    """Echoes every message, with the first subprotocol offered."""
    proposed = request.proposed_subprotocols
    ws = await request.accept(subprotocol=proposed[0] if proposed else None)
    over = " over HTTP/2" if ws.http_version == "2" else ""
    _status(f"connection from {_describe_endpoint(ws.remote)} to {ws.path}{over}")
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed as exc:
        _status(f"closed {_describe_endpoint(ws.remote)}: {describe_close(exc.reason)}")


#: The echo handler each worker process of ``serve --workers N`` imports.
worker_echo_handler = echo_handler


def _print_worker_urls(pool: WorkerPool) -> None:
    for endpoint in pool.listeners:
        print(f"listening on {_listen_url(endpoint)}", flush=True)


def _listen_url(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, Endpoint):
        return endpoint.url + "/"
    return endpoint


@dataclass(frozen=True)
class ServerOptions:
    """The ``serve`` options that go to :func:`serve_websocket`."""

    ping_interval: float | None = None
    max_connections: int | None = None
    unix_socket_path: str | None = None
    #: None: serve_websocket's default.
    max_handshakes: int | None = None
    #: Serve WebSockets over HTTP/2 too (h2c: this server has no TLS).
    http2: bool = False


def describe_report(report: ShutdownReport) -> str:
    return (
        f"shut down: {report.closed_cleanly} closed cleanly, {report.forced} forced, "
        f"{report.refused} refused"
    )


async def run_server(
    host: str | None, port: int | None, options: ServerOptions = ServerOptions()
) -> int:
    """The echo server; returns the exit status once stopped by a signal."""
    unix_socket_path = options.unix_socket_path
    where = unix_socket_path if unix_socket_path is not None else f"{host or '*'} port {port}"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                server = await nursery.start(
                    partial(
                        serve_websocket,
                        echo_handler,
                        host,
                        port,
                        None,
                        ping_interval=options.ping_interval,
                        max_connections=options.max_connections,
                        unix_socket_path=unix_socket_path,
                        http2=options.http2,
                        **_given(max_handshakes=options.max_handshakes),
                    )
                )
            except Exception as exc:  # in a group, from the nursery of ``start``
                error = _ungrouped(exc)
                if isinstance(error, RuntimeError) and options.http2:
                    # HTTP/2 without the h2 package: the library says what to install.
                    _status(f"error: {error}")
                    return EXIT_CONNECT_FAILED
                root = _root_cause(exc)
                if not isinstance(root, OSError):
                    raise
                _status(f"error: cannot listen on {where}: {root}")
                return EXIT_CONNECT_FAILED
            if unix_socket_path is not None:
                print(f"listening on unix:{unix_socket_path}", flush=True)
            else:
                for endpoint in server.listeners:
                    print(f"listening on {_listen_url(endpoint)}", flush=True)
            async for signum in signals:
                _status(f"stopping ({signal.Signals(signum).name})")
                break
            # A second signal cancels the handlers (serving) at once.
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope, "stopping now")
            report = await server.aclose(timeout=SHUTDOWN_TIMEOUT)
            _status(describe_report(report))
            nursery.cancel_scope.cancel()
    _status("stopped")
    return EXIT_OK


async def _cancel_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, message: str | None = None
) -> None:
    async for _ in signals:
        if message:
            _status(message)
        scope.cancel()
        return


# ----------------------------------------------------------------------
# Arguments


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more: {text!r}")
    return value


def _proxy_url(text: str) -> str:
    try:
        Proxy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None), to leave the others at the
    library's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _connection_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of connections: {text!r}")
    return int(text)


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_websocket",
        description=(
            "Connect to a WebSocket server: print each message received, send each "
            "line typed as a text message; at end of input (Ctrl-D) close once the "
            "server has been quiet for --linger seconds. "
            "Or run an echo server: python -m trio_websocket serve --help"
        ),
    )
    parser.add_argument("url", type=_check_url, help="a ws:// or wss:// URL")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="wss:// only: accept any certificate (self-signed, other host)",
    )
    parser.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="P",
        help="offer subprotocol P (repeat for more, in order of preference)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        type=_parse_header,
        metavar='"NAME: VALUE"',
        help="send this request header (repeatable)",
    )
    parser.add_argument(
        "--ping-interval",
        type=_seconds,
        metavar="SECONDS",
        help="send a ping every SECONDS; close (1011) if its pong is later than that",
    )
    parser.add_argument(
        "--linger",
        type=_seconds_or_zero,
        default=DEFAULT_LINGER,
        metavar="SECONDS",
        help=(
            "at end of input, keep printing until nothing arrived for SECONDS, then"
            " close (replies to the last lines are not lost; 0: close at once;"
            " default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--close-timeout",
        type=_seconds,
        default=CLOSE_TIMEOUT,
        metavar="SECONDS",
        help=(
            "at most SECONDS for the server to fall quiet at end of input, and as"
            " much for it to answer the close (default: %(default)s)"
        ),
    )
    http2 = parser.add_mutually_exclusive_group()
    http2.add_argument(
        "--http2",
        dest="http2",
        action="store_const",
        const=True,
        default=False,
        help=(
            "open the WebSocket over HTTP/2 (RFC 8441) if the server takes it, else"
            " over HTTP/1.1 (wss:// by ALPN, ws:// as h2c; needs the h2 package)"
        ),
    )
    http2.add_argument(
        "--require-http2",
        dest="http2",
        action="store_const",
        const="require",
        help="as --http2, but fail if the server does not take WebSockets over HTTP/2",
    )
    connect_via = parser.add_mutually_exclusive_group()
    connect_via.add_argument(
        "--proxy",
        type=_proxy_url,
        metavar="URL",
        help="connect through this proxy: http://, https://, socks5:// or socks5h://",
    )
    connect_via.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="connect to this Unix socket; the URL still gives Host and path",
    )
    parser.add_argument("--version", action="version", version=f"trio-websocket {__version__}")
    # The usage (in --help and before every usage error) names both
    # commands: argparse's own would show the client's only.
    client_usage = parser.format_usage().removeprefix("usage: ").rstrip()
    serve_usage = _server_parser().format_usage().removeprefix("usage: ").rstrip()
    parser.usage = f"{client_usage}\n       {serve_usage}"
    return parser


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_websocket serve",
        description="Run a WebSocket echo server until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, help=f"TCP port, 0 for any (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (Linux; default: %(default)s)",
    )
    parser.add_argument(
        "--ping-interval",
        type=_seconds,
        metavar="SECONDS",
        help="ping each client every SECONDS; close (1011) if its pong is later than that",
    )
    parser.add_argument(
        "--max-connections",
        type=_connection_count,
        metavar="N",
        help="answer 503 beyond N open connections (per worker with --workers)",
    )
    parser.add_argument(
        "--max-handshakes",
        type=_connection_count,
        metavar="N",
        help=(
            "read at most N opening requests at once, dropping the oldest incomplete"
            " one beyond (default: the library's; per worker with --workers)"
        ),
    )
    parser.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="listen on this Unix socket instead of TCP (not with --host, --port, --workers)",
    )
    parser.add_argument(
        "--http2",
        action="store_true",
        help=(
            "serve WebSockets over HTTP/2 (RFC 8441) too, as h2c next to HTTP/1.1 on"
            " the same port (needs the h2 package)"
        ),
    )
    return parser


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}")
    return int(text)


def _serve(argv: Sequence[str]) -> int:
    parser = _server_parser()
    args = parser.parse_args(argv)
    host: str | None = DEFAULT_HOST if args.host is None else args.host or None
    port: int = DEFAULT_PORT if args.port is None else args.port
    if args.unix_socket is not None and (
        args.host is not None or args.port is not None or args.workers > 1
    ):
        parser.error("--unix-socket cannot be combined with --host, --port or --workers")
    # The library's warnings and errors (a worker that died, a handler that
    # failed) go to stderr; the library itself only has a NullHandler.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.workers > 1:
        # The parent's INFO lines too: listening, stopping, each report.
        logging.getLogger("trio_websocket.workers").setLevel(logging.INFO)
        try:
            return run_websocket_workers(
                "trio_websocket._extras.cli:worker_echo_handler",
                host,
                port,
                workers=args.workers,
                on_ready=_print_worker_urls,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                ping_interval=args.ping_interval,
                max_connections=args.max_connections,
                http2=args.http2,
                **_given(max_handshakes=args.max_handshakes),
            )
        except RuntimeError as exc:
            if not args.http2:
                raise
            # HTTP/2 without the h2 package: the library says what to install.
            _status(f"error: {exc}")
            return EXIT_CONNECT_FAILED
    options = ServerOptions(
        args.ping_interval,
        args.max_connections,
        args.unix_socket,
        args.max_handshakes,
        http2=args.http2,
    )
    if args.unix_socket is not None:
        return trio.run(run_server, None, None, options)
    return trio.run(run_server, host, port, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if args_list[:1] == ["serve"]:
            return _serve(args_list[1:])
        args = _client_parser().parse_args(args_list)
        return trio.run(
            partial(
                run_client,
                args.url,
                insecure=args.insecure,
                subprotocols=args.subprotocol,
                headers=args.header,
                ping_interval=args.ping_interval,
                proxy=args.proxy,
                unix_socket_path=args.unix_socket,
                linger=args.linger,
                close_timeout=args.close_timeout,
                http2=args.http2,
            )
        )
    except KeyboardInterrupt:
        _status("interrupted")
        return EXIT_INTERRUPTED
