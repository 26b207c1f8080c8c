"""``python -m trio_websocket``, run as real processes.

Each test starts the command line as a subprocess of this interpreter with
pipes for stdin, stdout and stderr, talks to it through them, and reads its
exit status. The peer is either the CLI's own echo server (``serve --port
0``, whose URL is read from its stdout) or a server run here, in the test's
own event loop. Every wait has a deadline, and every process started here is
killed by its own handle (its PID) if it is still running when the test
ends.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trustme
from conftest import accept_by_hand, echo_handler, read_request_head
from wsproto.events import CloseConnection, Ping, TextMessage

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX signals and pollable pipes on stdin"
)

#: Seconds for any one step (a line to appear, a process to exit).
STEP = 5.0

#: ``cli(setup=...)`` code that makes the server's graceful shutdown wait
#: up to an hour for its handlers.
HOUR_LONG_SHUTDOWN = (
    "import trio_websocket._extras.cli\ntrio_websocket._extras.cli.SHUTDOWN_TIMEOUT = 3600.0"
)


class Lines:
    """Reads a process's output stream line by line, with deadlines."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._eof = False

    async def readline(self) -> str:
        """The next line (without its newline); ``EOFError`` at the end."""
        with trio.fail_after(STEP):
            while b"\n" not in self._buffer and not self._eof:
                data = await self._stream.receive_some()
                if not data:
                    self._eof = True
                self._buffer += data
        if not self._buffer:
            raise EOFError
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line.decode("utf-8")

    async def rest(self) -> list[str]:
        """The remaining lines, up to the end of the stream."""
        lines = []
        while True:
            try:
                lines.append(await self.readline())
            except EOFError:
                return lines


class Cli:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout and process.stderr
        self.stdin = process.stdin
        self.stdout = Lines(process.stdout)
        self.stderr = Lines(process.stderr)

    async def send_line(self, text: str) -> None:
        assert self.stdin is not None
        with trio.fail_after(STEP):
            await self.stdin.send_all(text.encode("utf-8") + b"\n")

    async def end_input(self) -> None:
        assert self.stdin is not None
        await self.stdin.aclose()

    async def wait(self, timeout: float = STEP) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def cli(*args: str, stdin: int = subprocess.PIPE, setup: str = "") -> AsyncIterator[Cli]:
    """``python -m trio_websocket *args``; with ``setup``, that Python code
    runs first in the process (to change a module constant)."""
    if setup:
        run_cli = "import sys, trio_websocket._extras.cli as c\nsys.exit(c.main())"
        command = ["-c", f"{setup}\n{run_cli}"]
    else:
        command = ["-m", "trio_websocket"]
    process = await trio.lowlevel.open_process(
        [sys.executable, *command, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield Cli(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(STEP) as scope:
            scope.shield = True
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


@asynccontextmanager
async def echo_server_process(setup: str = "") -> AsyncIterator[tuple[Cli, str]]:
    async with cli("serve", "--port", "0", setup=setup) as server:
        line = await server.stdout.readline()
        match = re.fullmatch(r"listening on (ws://127\.0\.0\.1:(\d+)/)", line)
        assert match, line
        assert int(match.group(2)) > 0
        yield server, match.group(1)


async def connected(client: Cli, url: str) -> str:
    line = await client.stderr.readline()
    assert line.startswith(f"connected to {url}"), line
    return line


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----------------------------------------------------------------------
# The CLI client against the CLI echo server


async def test_echo_session_ends_cleanly_at_end_of_input() -> None:
    async with echo_server_process() as (server, url):
        async with cli(url + "chat", "--subprotocol", "chat", "--subprotocol", "other") as client:
            line = await connected(client, url + "chat")
            assert line.endswith("(subprotocol: chat)")
            for text in ["hello", "", "héllo wörld ✓", "a longer line " * 50]:
                await client.send_line(text)
                assert await client.stdout.readline() == text
            await client.end_input()
            assert await client.wait() == 0
            assert await client.stderr.rest() == [
                "closed at end of input: code 1000 (NORMAL_CLOSURE)"
            ]
            assert await client.stdout.rest() == []

        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        log = await server.stderr.rest()
        assert log[-3:] == [
            "stopping (SIGTERM)",
            "shut down: 0 closed cleanly, 0 forced, 0 refused",
            "stopped",
        ]
        assert any(line.endswith("code 1000 (NORMAL_CLOSURE)") for line in log), log


async def test_server_closes_connections_with_1001_on_sigterm() -> None:
    async with echo_server_process() as (server, url), cli(url) as client:
        await connected(client, url)
        await client.send_line("ping")
        assert await client.stdout.readline() == "ping"

        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        # The client still has stdin open: the close alone ends it.
        assert await client.wait() == 3
        assert await client.stderr.rest() == [
            "closed by the server: code 1001 (GOING_AWAY), reason: server shutting down"
        ]
        log = await server.stderr.rest()
        assert "shut down: 1 closed cleanly, 0 forced, 0 refused" in log, log


async def test_ctrl_d_on_a_terminal_closes_cleanly() -> None:
    # Stdin is a pseudo-terminal, as when typing: the client reopens it by
    # name, so the non-blocking mode does not reach its stdout. Five
    # sessions: before --linger, lines pasted with Ctrl-D right after them
    # lost some of their echoes in four runs of this test out of five.
    async with echo_server_process() as (server, url):
        for _ in range(5):
            await terminal_session(url)
        server.process.send_signal(signal.SIGINT)
        assert await server.wait() == 0


async def terminal_session(url: str) -> None:
    primary, secondary = pty.openpty()
    try:
        async with cli(url, stdin=secondary) as client:
            await connected(client, url)
            os.write(primary, b"typed\n")
            assert await client.stdout.readline() == "typed"
            # Lines typed (pasted) and Ctrl-D at once: their echoes, still
            # on their way at end of input, are printed all the same.
            pasted = [f"line {number}" for number in range(10)]
            # (Ctrl-D at the start of a line.)
            os.write(primary, "".join(f"{line}\n" for line in pasted).encode() + b"\x04")
            assert await client.wait() == 0
            assert await client.stdout.rest() == pasted
            assert await client.stderr.rest() == [
                "closed at end of input: code 1000 (NORMAL_CLOSURE)"
            ]
    finally:
        os.close(primary)
        os.close(secondary)


def filled_pipe(data: bytes) -> int:
    """The read end of a pipe holding ``data`` and then its end, as
    ``printf ... | python -m trio_websocket`` gives the client: every line
    and the end of input arrive at once."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


# (Four rounds, each waiting up to 6 STEPs for its slowest client: the
# suite's default limit would end the test before its own waits do.)
@pytest.mark.time_limit(4 * 6 * STEP + STEP)
async def test_piped_input_prints_every_echo(nursery: trio.Nursery) -> None:
    # The server (this library's) answers a close frame at once and sends
    # nothing after it: a client that closed at end of input lost the
    # echoes of lines sent just before (in 12 of 20 runs, all of them).
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"

    async def one_run(outputs: list[tuple[int, list[str], list[str]]]) -> None:
        stdin = filled_pipe(b"one\ntwo\nthree\n")
        try:
            async with cli(url, stdin=stdin) as client:
                # Five Pythons start at once: on a busy two-core machine
                # one may take several STEPs just to import.
                status = await client.wait(timeout=6 * STEP)
                outputs.append((status, await client.stdout.rest(), await client.stderr.rest()))
        finally:
            os.close(stdin)

    outputs: list[tuple[int, list[str], list[str]]] = []
    for _ in range(4):  # 20 runs, 5 at a time
        async with trio.open_nursery() as runs:
            for _ in range(5):
                runs.start_soon(one_run, outputs)
    assert len(outputs) == 20
    for status, out, err in outputs:
        assert (status, out) == (0, ["one", "two", "three"]), (status, out, err)
        assert err[-1] == "closed at end of input: code 1000 (NORMAL_CLOSURE)", err


async def test_a_server_that_closes_while_the_client_lingers(nursery: trio.Nursery) -> None:
    async def one_answer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())
        await ws.aclose(1000, "one is enough")

    server = await nursery.start(serve_websocket, one_answer, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    stdin = filled_pipe(b"only line\n")
    try:
        # The linger lasts until the close timeout (10 s, longer than a
        # step): only the server's close ends it in time.
        async with cli(url, "--linger", "600", stdin=stdin) as client:
            assert await client.wait() == 0
            assert await client.stdout.rest() == ["only line"]
            assert (await client.stderr.rest())[-1] == (
                "closed by the server: code 1000 (NORMAL_CLOSURE), reason: one is enough"
            )
    finally:
        os.close(stdin)


async def test_end_of_input_closes_even_if_the_server_never_falls_quiet(
    nursery: trio.Nursery,
) -> None:
    async def chatty(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            for tick in range(10_000):
                await ws.send_message(f"tick {tick}")
                await trio.sleep(0.05)
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, chatty, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    async with cli(url, "--linger", "0.5", "--close-timeout", "1") as client:
        await connected(client, url)
        assert (await client.stdout.readline()).startswith("tick ")
        ended = trio.current_time()
        await client.end_input()
        assert await client.wait() == 0
        assert trio.current_time() - ended < STEP
        assert await client.stderr.rest() == [
            "closed at end of input: code 1000 (NORMAL_CLOSURE)"
        ]


async def test_linger_zero_closes_at_end_of_input_at_once(nursery: trio.Nursery) -> None:
    closed = trio.Event()

    async def silent(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed:
            closed.set()

    server = await nursery.start(serve_websocket, silent, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    # Ten minutes of lingering unless --linger 0 turns it off.
    async with cli(url, "--linger", "0", "--close-timeout", "600") as client:
        await connected(client, url)
        await client.end_input()
        assert await client.wait() == 0
    assert closed.is_set()


def test_usage_names_both_commands() -> None:
    for args in ([], ["--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "trio_websocket", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        usage = (result.stdout if args else result.stderr).split("\n\n")[0]
        assert usage.startswith("usage: python -m trio_websocket "), usage
        assert "python -m trio_websocket serve " in usage, usage
        assert result.returncode == (0 if args else 2)


async def test_ctrl_c_interrupts_the_client() -> None:
    async with echo_server_process() as (server, url), cli(url) as client:
        await connected(client, url)
        client.process.send_signal(signal.SIGINT)
        assert await client.wait() == 130
        assert (await client.stderr.rest())[-1] == "interrupted"
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0


async def test_server_on_a_busy_port_fails_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with cli("serve", "--port", str(port)) as server:
            assert await server.wait() == 1
            errors = await server.stderr.rest()
            assert errors == [
                f"error: cannot listen on 127.0.0.1 port {port}: [Errno 98] Address already in use"
            ] or (len(errors) == 1 and errors[0].startswith("error: cannot listen")), errors
            assert await server.stdout.rest() == []


async def test_client_to_a_closed_port_fails_with_one_line() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/"
    async with cli(url) as client:
        await client.end_input()
        assert await client.wait() == 1
        errors = await client.stderr.rest()
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"error: {url}: could not connect"), errors
        assert await client.stdout.rest() == []


async def test_bad_arguments_are_usage_errors() -> None:
    async with cli("http://example.com/") as client:
        assert await client.wait() == 2
        assert "expected a ws:// or wss:// URL" in (await client.stderr.rest())[-1]
    async with cli("ws://127.0.0.1:1/", "--header", "no colon") as client:
        assert await client.wait() == 2


# ----------------------------------------------------------------------
# The CLI client against servers run here


async def test_client_shows_messages_and_the_servers_close_code(nursery: trio.Nursery) -> None:
    seen: list[object] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.append(dict(request.headers).get(b"x-token"))
        ws = await request.accept()
        await ws.send_message(bytes(range(20)))
        await ws.send_message("text\nin two lines")
        seen.append(await ws.get_message())
        await ws.aclose(4321, "custom reason")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/close"
    async with cli(url, "--header", "X-Token: secret value") as client:
        await connected(client, url)
        assert await client.stdout.readline() == (
            "[binary, 20 bytes: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ...]"
        )
        assert await client.stdout.readline() == "text"
        assert await client.stdout.readline() == "in two lines"
        await client.send_line("now close")
        # Stdin stays open: the close must cancel the wait for input.
        assert await client.wait() == 3
        assert await client.stderr.rest() == [
            "closed by the server: code 4321 (PRIVATE_RESERVED), reason: custom reason"
        ]
    assert seen == [b"secret value", "now close"]


def text_frame(text: str) -> bytes:
    """An unmasked (server) text frame, built by hand: wsproto will not send
    data once the client's close has arrived, but RFC 6455 allows it."""
    payload = text.encode("utf-8")
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload


async def test_ctrl_d_still_prints_what_arrives_before_the_close_answer(
    nursery: trio.Nursery,
) -> None:
    received: list[str] = []

    async def late_replier(stream: trio.SocketStream) -> None:
        # Answers the client's close only after two more messages.
        connection = await accept_by_hand(stream, await read_request_head(stream))
        for _ in range(1000):
            data = await stream.receive_some()
            if not data:
                return
            connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, TextMessage):
                    received.append(event.data)
                elif isinstance(event, CloseConnection):
                    await stream.send_all(text_frame("reply 1") + text_frame("reply 2"))
                    await stream.send_all(connection.send(event.response()))
                    await stream.aclose()
                    return

    listeners = await nursery.start(partial(trio.serve_tcp, late_replier, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    async with cli(url) as client:
        await connected(client, url)
        await client.send_line("last words")
        await client.end_input()
        assert await client.wait() == 0
        assert await client.stdout.rest() == ["reply 1", "reply 2"]
        assert await client.stderr.rest() == [
            "closed at end of input: code 1000 (NORMAL_CLOSURE)"
        ]
    assert received == ["last words"]


async def test_client_reports_a_rejected_handshake(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(404, body=b"no such chat room\n")

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/missing"
    async with cli(url) as client:
        assert await client.wait() == 1
        assert await client.stderr.rest() == [
            f"error: {url}: server rejected the WebSocket handshake with HTTP 404: "
            "no such chat room"
        ]


@pytest.fixture(scope="module")
def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_wss_with_insecure_accepts_a_self_signed_certificate(
    nursery: trio.Nursery, tls_context: ssl.SSLContext
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, tls_context)
    url = f"wss://localhost:{server.port}/"
    async with cli(url, "--insecure") as client:
        await connected(client, url)
        await client.send_line("over TLS")
        assert await client.stdout.readline() == "over TLS"
        await client.end_input()
        assert await client.wait() == 0


async def test_wss_without_insecure_fails_on_the_certificate(
    nursery: trio.Nursery, tls_context: ssl.SSLContext
) -> None:
    closes: list[object] = []

    async def handler(request: WebSocketRequest) -> None:  # pragma: no cover
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            closes.append(exc.reason)

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, tls_context)
    url = f"wss://localhost:{server.port}/"
    async with cli(url) as client:
        assert await client.wait() == 1
        errors = await client.stderr.rest()
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"error: {url}: "), errors
        assert "CERTIFICATE_VERIFY_FAILED" in errors[0]
        assert errors[0].endswith("(use --insecure to accept a self-signed certificate)")
    assert closes == []


# ----------------------------------------------------------------------
# Keepalive, proxy and Unix socket options


async def test_client_ping_interval_closes_with_1011_when_pongs_never_come(
    nursery: trio.Nursery,
) -> None:
    pings: list[bytes] = []

    async def deaf_server(stream: trio.SocketStream) -> None:
        # Accepts, then reads everything and never answers a ping.
        connection = await accept_by_hand(stream, await read_request_head(stream))
        with trio.move_on_after(10):
            while data := await stream.receive_some():
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, Ping):
                        pings.append(bytes(event.payload))
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, deaf_server, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    async with cli(url, "--ping-interval", "0.2") as client:
        await connected(client, url)
        assert await client.wait() == 3
        assert await client.stderr.rest() == [
            "closed by the client: code 1011 (INTERNAL_ERROR), reason: keepalive ping timeout"
        ]
    assert len(pings) >= 1


async def test_client_ping_interval_keeps_a_quiet_connection_open(nursery: trio.Nursery) -> None:
    # A pong may take as long as the interval (half a second): wide enough
    # for two busy processes to exchange one.
    pings: list[bytes] = []
    two_pings_answered = trio.Event()

    async def answering_echo_server(stream: trio.SocketStream) -> None:
        connection = await accept_by_hand(stream, await read_request_head(stream))
        for _ in range(10_000):
            data = await stream.receive_some()
            if not data:
                return
            connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, Ping):
                    await stream.send_all(connection.send(event.response()))
                    pings.append(bytes(event.payload))
                    if len(pings) == 2:
                        two_pings_answered.set()
                elif isinstance(event, TextMessage):
                    await stream.send_all(connection.send(TextMessage(data=event.data)))
                elif isinstance(event, CloseConnection):
                    await stream.send_all(connection.send(event.response()))
                    await stream.aclose()
                    return

    listeners = await nursery.start(
        partial(trio.serve_tcp, answering_echo_server, 0, host="127.0.0.1")
    )
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    async with cli(url, "--ping-interval", "0.5") as client:
        await connected(client, url)
        with trio.fail_after(STEP):
            await two_pings_answered.wait()  # a second without a message
        await client.send_line("still here")
        assert await client.stdout.readline() == "still here"
        await client.end_input()
        assert await client.wait() == 0
        assert await client.stderr.rest() == [
            "closed at end of input: code 1000 (NORMAL_CLOSURE)"
        ]
    assert len(set(pings)) == len(pings) >= 2


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
async def test_bad_ping_interval_is_a_usage_error(value: str) -> None:
    async with cli("ws://127.0.0.1:1/", "--ping-interval", value) as client:
        assert await client.wait() == 2
        assert "not a number of seconds" in (await client.stderr.rest())[-1]


@pytest.mark.parametrize(
    "args", [["--linger", "-1"], ["--linger", "soon"], ["--close-timeout", "0"]]
)
async def test_bad_linger_and_close_timeout_are_usage_errors(args: list[str]) -> None:
    async with cli("ws://127.0.0.1:1/", *args) as client:
        assert await client.wait() == 2
        assert "not a number of seconds" in (await client.stderr.rest())[-1]


class ConnectProxy:
    """A tiny HTTP CONNECT proxy that remembers each target."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def handle(self, client: trio.SocketStream) -> None:
        head = await read_request_head(client)
        request_line, _, _ = head.partition(b"\r\n")
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        assert method == "CONNECT"
        self.targets.append(target)
        host, _, port = target.rpartition(":")
        upstream = await trio.open_tcp_stream(host, int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        leftover = head.partition(b"\r\n\r\n")[2]
        if leftover:
            await upstream.send_all(leftover)
        async with upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some():
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()


async def test_client_goes_through_the_proxy(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    proxy = ConnectProxy()
    listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
    proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    url = f"ws://127.0.0.1:{server.port}/"
    async with cli(url, "--proxy", proxy_url) as client:
        await connected(client, url)
        await client.send_line("through the tunnel")
        assert await client.stdout.readline() == "through the tunnel"
        await client.end_input()
        assert await client.wait() == 0
    assert proxy.targets == [f"127.0.0.1:{server.port}"]


async def test_client_reports_a_proxy_that_is_not_there() -> None:
    url = "ws://127.0.0.1:1/"
    async with cli(url, "--proxy", f"http://127.0.0.1:{closed_port()}") as client:
        assert await client.wait() == 1
        errors = await client.stderr.rest()
        assert len(errors) == 1 and errors[0].startswith(f"error: {url}: "), errors


@pytest.mark.parametrize(
    "args",
    [
        ["--proxy", "ftp://127.0.0.1:21"],
        ["--proxy", "http://"],
        ["--proxy", "http://127.0.0.1:8080", "--unix-socket", "/tmp/x.sock"],
    ],
)
async def test_bad_proxy_arguments_are_usage_errors(args: list[str]) -> None:
    async with cli("ws://127.0.0.1:1/", *args) as client:
        assert await client.wait() == 2
        assert (await client.stderr.rest())[-1].startswith("python -m trio_websocket: error:")


def raw_upgrade() -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


async def test_server_ping_interval_pings_each_client() -> None:
    async with cli("serve", "--port", "0", "--ping-interval", "0.1") as server:
        line = await server.stdout.readline()
        port = int(line.rsplit(":", 1)[1].rstrip("/"))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw_upgrade())
            received = b""
            with trio.fail_after(STEP):
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some()
                head, _, frames = received.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                while len(frames) < 2:
                    frames += await stream.receive_some()
            # Unasked, the server's first frame is a ping (FIN + opcode 9).
            assert frames[0] == 0x89
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0


async def test_server_max_connections_answers_503_beyond_it() -> None:
    async with cli("serve", "--port", "0", "--max-connections", "1") as server:
        url = (await server.stdout.readline()).split()[-1]
        async with open_websocket_url(url) as first:
            await first.send_message("one")
            assert await first.get_message() == "one"
            with pytest.raises(ConnectionRejected) as caught:
                async with open_websocket_url(url):
                    pass  # pragma: no cover
            assert caught.value.status_code == 503
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0


async def test_server_on_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory(prefix="tws-") as directory:
        path = os.path.join(directory, "echo.sock")
        async with cli("serve", "--unix-socket", path) as server:
            assert await server.stdout.readline() == f"listening on unix:{path}"
            async with open_websocket_url("ws://localhost/room", unix_socket_path=path) as ws:
                await ws.send_message("over the socket")
                assert await ws.get_message() == "over the socket"
                # The CLI client reaches it too.
                async with cli("ws://localhost/", "--unix-socket", path) as client:
                    await connected(client, "ws://localhost/")
                    await client.send_line("from the cli")
                    assert await client.stdout.readline() == "from the cli"
                    await client.end_input()
                    assert await client.wait() == 0
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.get_message()
                assert caught.value.reason.code == 1001
            assert await server.wait() == 0
            log = await server.stderr.rest()
            assert "shut down: 1 closed cleanly, 0 forced, 0 refused" in log, log
            assert not os.path.exists(path)  # noqa: ASYNC240


@pytest.mark.parametrize(
    "args",
    [
        ["--unix-socket", "/tmp/x.sock", "--port", "0"],
        ["--unix-socket", "/tmp/x.sock", "--host", "::1"],
        ["--unix-socket", "/tmp/x.sock", "--workers", "2"],
        ["--max-connections", "0"],
        ["--ping-interval", "never"],
    ],
)
async def test_bad_server_options_are_usage_errors(args: list[str]) -> None:
    async with cli("serve", *args) as server:
        assert await server.wait() == 2
        assert await server.stdout.rest() == []


async def test_a_second_signal_stops_the_server_at_once() -> None:
    # An hour of grace for the first signal: only the second one can make
    # the server exit within a step, however slow the machine is.
    async with echo_server_process(setup=HOUR_LONG_SHUTDOWN) as (server, url), cli(url) as client:
        await connected(client, url)
        # SIGSTOP the client: it cannot answer the close, so the server's
        # shutdown would wait the whole grace period for its handler.
        client.process.send_signal(signal.SIGSTOP)
        try:
            server.process.send_signal(signal.SIGTERM)
            while await server.stderr.readline() != "stopping (SIGTERM)":
                pass
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait() == 0  # within STEP, not an hour
            log = await server.stderr.rest()
            # The connection's close may be logged before or after "stopping
            # now" (its closer task and the second signal race): leave it out.
            assert [line for line in log if not line.startswith("closed ")] == [
                "stopping now",
                "stopped",
            ], log
        finally:
            client.process.send_signal(signal.SIGCONT)


# ----------------------------------------------------------------------
# HTTP/2 (RFC 8441)

#: ``cli(setup=...)`` code that makes the h2 package impossible to import.
WITHOUT_H2 = "import sys\nsys.modules['h2'] = None"


async def test_http2_client_and_server_talk_over_http2() -> None:
    async with cli("serve", "--port", "0", "--http2") as server:
        url = (await server.stdout.readline()).split()[-1]
        async with cli(url + "chat", "--require-http2", "--subprotocol", "chat") as client:
            line = await connected(client, url + "chat")
            assert line.endswith("(HTTP/2, subprotocol: chat)"), line
            await client.send_line("over a stream")
            assert await client.stdout.readline() == "over a stream"
            await client.end_input()
            assert await client.wait() == 0
            assert await client.stderr.rest() == [
                "closed at end of input: code 1000 (NORMAL_CLOSURE)"
            ]
        # The same port still serves HTTP/1.1, and library clients over HTTP/2.
        async with open_websocket_url(url) as ws:
            assert ws.http_version == "1.1"
            await ws.send_message("one")
            assert await ws.get_message() == "one"
        async with open_websocket_url(url, http2="require") as ws:
            assert ws.http_version == "2"
            await ws.send_message("two")
            assert await ws.get_message() == "two"
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
        log = await server.stderr.rest()
        over_http2 = [line for line in log if line.startswith("connection from ")]
        assert [line.endswith(" over HTTP/2") for line in over_http2] == [True, False, True], log


async def test_http2_client_falls_back_to_http1(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    async with cli(url, "--http2") as client:
        line = await connected(client, url)
        assert line == f"connected to {url}", line  # no "(HTTP/2)"
        await client.send_line("over HTTP/1.1")
        assert await client.stdout.readline() == "over HTTP/1.1"
        await client.end_input()
        assert await client.wait() == 0


async def test_require_http2_fails_against_an_http1_server(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/"
    async with cli(url, "--require-http2") as client:
        assert await client.wait() == 1
        errors = await client.stderr.rest()
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"error: {url}: "), errors
        assert "does not take WebSockets over HTTP/2" in errors[0], errors
        assert await client.stdout.rest() == []


async def test_http2_over_tls_with_insecure(
    nursery: trio.Nursery, tls_context: ssl.SSLContext
) -> None:
    server = await nursery.start(
        partial(serve_websocket, echo_handler, "127.0.0.1", 0, tls_context, http2=True)
    )
    url = f"wss://localhost:{server.port}/"
    async with cli(url, "--insecure", "--require-http2") as client:
        line = await connected(client, url)
        assert line.endswith("(HTTP/2)"), line  # chosen by ALPN
        await client.send_line("over TLS and HTTP/2")
        assert await client.stdout.readline() == "over TLS and HTTP/2"
        await client.end_input()
        assert await client.wait() == 0


@pytest.mark.parametrize(
    "args", [["--http2", "ws://127.0.0.1:1/"], ["serve", "--port", "0", "--http2"]]
)
async def test_http2_without_h2_fails_with_one_line(args: list[str]) -> None:
    async with cli(*args, setup=WITHOUT_H2) as process:
        assert await process.wait() == 1
        errors = await process.stderr.rest()
        assert len(errors) == 1, errors
        assert errors[0].startswith("error: HTTP/2 needs the h2 package"), errors
        assert "pip install" in errors[0], errors
        assert await process.stdout.rest() == []


async def test_http2_and_require_http2_exclude_each_other() -> None:
    async with cli("--http2", "--require-http2", "ws://127.0.0.1:1/") as client:
        assert await client.wait() == 2
        assert "not allowed with argument" in "".join(await client.stderr.rest())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers need SO_REUSEPORT")
async def test_http2_workers_serve_http2() -> None:
    async with cli("serve", "--port", "0", "--workers", "2", "--http2") as server:
        url = (await server.stdout.readline()).split()[-1]
        for _ in range(2):
            async with open_websocket_url(url, http2="require") as ws:
                assert ws.http_version == "2"
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0
