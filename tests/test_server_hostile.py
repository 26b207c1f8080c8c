"""A server facing peers that misbehave: it keeps serving whatever they do.

Each test is the regression test of one hardening fix: a reset before the
101, slots held by failed accepts, bytes that can never be an HTTP request,
Ctrl-C while serving, and floods of half-open connections.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from server_fixtures import MemoryListener, read_until_eof, start_memory_server, upgrade_request

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    serve_websocket_workers,
    wrap_client_stream,
)
from trio_websocket._server.http import EarlyHeadCheck
from trio_websocket.testing import open_memory_client

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def never_called(request: WebSocketRequest) -> None:
    raise AssertionError("the handler ran")


async def echo_once(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


# ----------------------------------------------------------------------
# A peer that resets before the 101


async def slow_to_accept(request: WebSocketRequest) -> None:
    """The README's shape of handler (accept outside any try), awaiting
    something first, as a handler that checks a token would."""
    await trio.sleep(0.2)
    ws = await request.accept()
    while True:
        await ws.send_message(await ws.get_message())


async def test_a_reset_before_the_101_leaves_the_server_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_websocket")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, slow_to_accept, "127.0.0.1", 0, None)
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(upgrade_request())
                reset(sock)
            await trio.sleep(0.5)  # every accept() has now failed
            await echo_once(f"ws://127.0.0.1:{server.port}/")
            nursery.cancel_scope.cancel()
    # Logged as the peer's doing, never as a handler error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("handler ended by ConnectionClosed" in r.getMessage() for r in caplog.records)


async def test_connection_closed_escaping_a_handler_later_is_logged_not_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handled = trio.Event()

    async def careless(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()  # raises: the client closes
        finally:
            handled.set()

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, careless)
        client = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
        await client.aclose()
        await handled.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert server.connection_count == 0
        nursery.cancel_scope.cancel()


async def test_connection_closed_from_a_nursery_in_the_handler_is_the_peers_doing_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended = trio.Event()

    async def two_loops(request: WebSocketRequest) -> None:
        ws = await request.accept()

        async def consume() -> None:
            while True:
                await ws.get_message()

        async def produce() -> None:
            while True:
                await ws.send_message("tick")
                await trio.sleep(1)

        try:
            async with trio.open_nursery() as nursery:  # strict: a group leaves
                nursery.start_soon(consume)
                nursery.start_soon(produce)
        finally:
            ended.set()

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, two_loops)
        client = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
        assert await client.get_message() == "tick"
        await client.aclose()
        await ended.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert server.connection_count == 0
        nursery.cancel_scope.cancel()


async def test_a_group_with_another_error_in_it_still_propagates() -> None:
    async def buggy(request: WebSocketRequest) -> None:
        ws = await request.accept()
        async with trio.open_nursery():
            await ws.get_message()
            raise ZeroDivisionError

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(nursery, buggy)
            client = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
            await client.send_message("boom")
            with pytest.raises(ConnectionClosed):
                await client.get_message()


async def test_other_handler_errors_still_propagate() -> None:
    async def buggy(request: WebSocketRequest) -> None:
        await request.accept()
        raise ZeroDivisionError

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            _, listener = await start_memory_server(nursery, buggy)
            client = await wrap_client_stream(nursery, await listener.connect(), "example.com", "/")
            with pytest.raises(ConnectionClosed) as info:
                await client.get_message()
            assert info.value.reason is not None and info.value.reason.code == 1011


# ----------------------------------------------------------------------
# A failed accept frees its slot at once


async def test_failed_accepts_free_their_connection_slots_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def accept_late(request: WebSocketRequest) -> None:
        await trio.sleep(1)
        ws = await request.accept()
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(
            nursery, accept_late, max_connections=2, disconnect_timeout=60
        )
        for _ in range(5):
            hostile = await listener.connect()
            await hostile.send_all(upgrade_request())
            await hostile.aclose()  # gone before the 101
        await trio.sleep(2)  # every accept() has failed by now
        good = await listener.connect()
        with trio.fail_after(3):
            await good.send_all(upgrade_request())
            answer = await good.receive_some()
        assert answer.startswith(b"HTTP/1.1 101 ")
        assert server.connection_count == 1
        nursery.cancel_scope.cancel()


async def test_failed_accepts_over_tcp_do_not_lock_out_good_clients() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, slow_to_accept, "127.0.0.1", 0, None, max_connections=3)
            )
            for _ in range(6):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(upgrade_request())
                reset(sock)
            await trio.sleep(0.5)
            with trio.fail_after(1):
                await echo_once(f"ws://127.0.0.1:{server.port}/")
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------
# Ctrl-C and sys.exit leave the server as themselves

SERVER_SCRIPT = """
import os, signal, sys, threading, time
import trio
from trio_websocket import serve_websocket, serve_websocket_workers

MODE = sys.argv[1]

async def handler(request):
    if MODE == "raise-in-handler":
        raise KeyboardInterrupt
    if MODE == "exit-in-handler":
        sys.exit(3)
    if MODE == "signal-in-handler":
        signal.raise_signal(signal.SIGINT)
    await trio.sleep_forever()

def ctrl_c_soon():
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)

class Status:
    def started(self, server=None):
        print(server.port, flush=True)
        if MODE.endswith("signal-while-idle"):
            threading.Thread(target=ctrl_c_soon, daemon=True).start()

async def main():
    if MODE.startswith("workers"):
        await serve_websocket_workers(
            "trio_websocket._extras.cli:worker_echo_handler", "127.0.0.1", 0, workers=1,
            task_status=Status(),
        )
    else:
        await serve_websocket(handler, "127.0.0.1", 0, None, task_status=Status())

trio.run(main)
"""


async def run_server_script(mode: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", textwrap.dedent(SERVER_SCRIPT), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(15):
            port = b""
            while not port.endswith(b"\n"):
                chunk = await process.stdout.receive_some(100)
                assert chunk, "the server script exited before it listened"
                port += chunk
            if not mode.endswith("signal-while-idle"):
                sock = socket.create_connection(("127.0.0.1", int(port)))
                sock.sendall(upgrade_request())
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return subprocess.CompletedProcess(process.args, returncode, port, stderr)


@pytest.mark.time_limit(30)
@pytest.mark.parametrize(
    "mode",
    [
        "signal-while-idle",
        "signal-in-handler",
        "raise-in-handler",
        pytest.param(
            "workers-signal-while-idle",
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="workers are Linux only"
            ),
        ),
    ],
)
async def test_ctrl_c_leaves_serve_websocket_as_keyboard_interrupt(mode: str) -> None:
    result = await run_server_script(mode)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert "ExceptionGroup" not in stderr
    # Only the interrupt's own traceback: nothing logged or chained.
    assert stderr.count("Traceback (most recent call last)") == 1


@pytest.mark.time_limit(30)
async def test_sys_exit_in_a_handler_leaves_serve_websocket_as_system_exit() -> None:
    result = await run_server_script("exit-in-handler")
    assert result.returncode == 3
    assert result.stderr == b""


async def test_keyboard_interrupt_in_a_handler_leaves_run_as_itself() -> None:
    async def interrupting(request: WebSocketRequest) -> None:
        raise KeyboardInterrupt

    listener = MemoryListener()
    server = WebSocketServer(interrupting, [listener])
    client = await listener.connect()  # queued for the server to accept
    await client.send_all(upgrade_request())
    with pytest.raises(KeyboardInterrupt), trio.fail_after(5):
        await server.run()  # called directly: no nursery of ours around it


# ----------------------------------------------------------------------
# Bytes that can never become a request are answered at once


def tls_client_hello() -> bytes:
    """The first bytes a TLS client sends (a real ClientHello)."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


NEVER_A_REQUEST = {
    "tls client hello": tls_client_hello(),
    "binary garbage": bytes(range(256)),
    "a line of text": b"hello there, is anybody home?\n",
    "bare LF request line": b"GET / HTTP/1.1\nHost: example.com\n",
    "bare LF header line": b"GET / HTTP/1.1\r\nHost: example.com\nUpgrade: websocket\n",
    "non-token method": b"G(T / HTTP/1.1\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\n",
    "not HTTP/1.x": b"GET / HTTP/2.0\r\n",
    "NUL in a header": b"GET / HTTP/1.1\r\nHost: exa\x00mple.com\r\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: x\rUpgrade: websocket\r\n",
    "ssh banner": b"SSH-2.0-OpenSSH_9.6\r\n",
}


@pytest.mark.parametrize("data", NEVER_A_REQUEST.values(), ids=NEVER_A_REQUEST.keys())
async def test_bytes_that_cannot_become_a_request_get_400_at_once(
    data: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        _, listener = await start_memory_server(nursery, never_called, connect_timeout=60)
        stream = await listener.connect()
        start = trio.current_time()
        await stream.send_all(data)  # and nothing more: no blank line ever
        answer = await read_until_eof(stream)
        assert trio.current_time() - start < 2  # the linger after the answer, at most
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"\r\nconnection: close\r\n" in answer
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("name", ["tls client hello", "binary garbage", "bare LF request line"])
async def test_bytes_that_cannot_become_a_request_over_tcp_are_answered_at_once(
    name: str,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, never_called, "127.0.0.1", 0, None)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        with trio.fail_after(1):
            await stream.send_all(NEVER_A_REQUEST[name])
            answer = await stream.receive_some()
        assert answer.startswith(b"HTTP/1.1 400 ")
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_whole_head_with_bare_lf_lines_gets_400_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One policy whether the head arrives whole or in pieces (h11 alone
    # would take this one).
    request = upgrade_request().replace(b"Host: example.com\r\n", b"Host: example.com\n")
    async with trio.open_nursery() as nursery:
        _, listener = await start_memory_server(nursery, never_called)
        stream = await listener.connect()
        await stream.send_all(request)
        assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 400 ")
        nursery.cancel_scope.cancel()


async def test_a_valid_request_sent_byte_by_byte_is_still_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def accept(request: WebSocketRequest) -> None:
        await request.accept()

    async with trio.open_nursery() as nursery:
        _, listener = await start_memory_server(nursery, accept, connect_timeout=60)
        stream = await listener.connect()
        request = upgrade_request("/chat?room=1", b"Origin: https://example.com\r\n")
        for index in range(len(request)):
            await stream.send_all(request[index : index + 1])
            await trio.sleep(0.05)
        assert (await stream.receive_some()).startswith(b"HTTP/1.1 101 ")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "head",
    [
        upgrade_request("/chat?room=1", b"Origin: https://example.com\r\nX-Empty:\r\n"),
        b"GET / HTTP/1.0\r\nUser-Agent: caf\xc3\xa9\r\n\r\n",  # obs-text in a value
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_no_prefix_of_a_valid_head_is_judged_invalid(head: bytes) -> None:
    # Fed growing prefixes (a bytearray, as a head in pieces is kept), and
    # each prefix afresh: never a problem.
    check = EarlyHeadCheck()
    received = bytearray()
    for byte in head:
        received.append(byte)
        assert check.problem(received) is None, bytes(received)
        assert EarlyHeadCheck().problem(bytes(received)) is None, bytes(received)


# ----------------------------------------------------------------------
# A flood of half-open connections: bounded, and good clients still served


async def accept_and_echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        await ws.send_message(await ws.get_message())


async def is_dropped(stream: trio.abc.Stream) -> bool:
    """Whether the server closed ``stream`` (without a word) by now."""
    with trio.move_on_after(0.01):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_beyond_max_handshakes_the_oldest_incomplete_request_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(
            nursery, accept_and_echo, max_handshakes=3, connect_timeout=60
        )
        slow = []
        for _ in range(10):
            stream = await listener.connect()
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            await trio.testing.wait_all_tasks_blocked()
            slow.append(stream)
        assert len(server._reading) == 3
        assert [await is_dropped(stream) for stream in slow] == [True] * 7 + [False] * 3
        # A new client takes the place of the oldest slow one, at once.
        good = await listener.connect()
        start = trio.current_time()
        await good.send_all(upgrade_request())
        assert (await good.receive_some()).startswith(b"HTTP/1.1 101 ")
        assert trio.current_time() - start < 1
        assert [await is_dropped(stream) for stream in slow[7:]] == [True, False, False]
        nursery.cancel_scope.cancel()


def test_max_handshakes_is_checked() -> None:
    with pytest.raises(ValueError):
        WebSocketServer(accept_and_echo, [MemoryListener()], max_handshakes=0)
    with pytest.raises(TypeError):
        WebSocketServer(accept_and_echo, [MemoryListener()], max_handshakes=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        trio.run(partial(serve_websocket, accept_and_echo, "127.0.0.1", 0, None, max_handshakes=-1))


@pytest.mark.time_limit(40)
async def test_a_flood_of_half_open_connections_stays_in_bounded_memory() -> None:
    limit = 16
    flood = 200
    pad = 12_000  # most of a head each, within the default limits
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    accept_and_echo,
                    "127.0.0.1",
                    0,
                    None,
                    max_handshakes=limit,
                    connect_timeout=60,
                )
            )
            gc.collect()
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                hostile = []
                for _ in range(flood):
                    sock = socket.create_connection(("127.0.0.1", server.port))
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * pad)
                    hostile.append(sock)
                    await trio.lowlevel.checkpoint()
                await trio.sleep(0.5)  # the server has read what it will read
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - baseline
            finally:
                tracemalloc.stop()
            # The heads of at most ``limit`` connections, not of all
            # ``flood`` (2.4 MB; 4 MB held without the limit), and some
            # change per connection (the test's own sockets, trio's
            # deadline heap, which drops cancelled entries lazily).
            assert held < limit * pad * 2 + flood * 2048, held
            assert len(server._reading) <= limit
            with trio.fail_after(1):
                await echo_once(f"ws://127.0.0.1:{server.port}/")
            for sock in hostile:
                sock.close()
            nursery.cancel_scope.cancel()


async def check_one_handshake_at_a_time(port: int) -> None:
    """A server with max_handshakes=1 at ``port`` drops a slow sender when
    the next connection comes, and serves a good client at once."""
    first = await trio.open_tcp_stream("127.0.0.1", port)
    await first.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await trio.sleep(0.2)  # read, and counted
    second = await trio.open_tcp_stream("127.0.0.1", port)
    await second.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with trio.fail_after(2):
        assert await first.receive_some() == b""
    with trio.fail_after(2):
        await echo_once(f"ws://127.0.0.1:{port}/")  # and the second goes
    await first.aclose()
    await second.aclose()


@pytest.mark.time_limit(30)
async def test_max_handshakes_reaches_the_cli_server() -> None:
    env = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT))
    command = [sys.executable, "-m", "trio_websocket", "serve", "--port", "0"]
    process = await trio.lowlevel.open_process(
        [*command, "--max-handshakes", "1"], stdout=subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(15):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(200)
                assert chunk, "the CLI exited before it listened"
                line += chunk
        port = int(line.split()[-1].rstrip(b"/").rsplit(b":", 1)[-1])
        await check_one_handshake_at_a_time(port)
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.time_limit(30)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are Linux only")
async def test_max_handshakes_reaches_the_workers() -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            pool = await nursery.start(
                partial(
                    serve_websocket_workers,
                    "trio_websocket._extras.cli:worker_echo_handler",
                    "127.0.0.1",
                    0,
                    workers=1,
                    max_handshakes=1,
                )
            )
        await check_one_handshake_at_a_time(pool.port)
        await pool.stop()


async def test_the_testing_kit_takes_connection_closed_as_a_server_does() -> None:
    # The README's handler, which lets ConnectionClosed end it.
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        while True:
            await ws.send_message(await ws.get_message())

    with trio.fail_after(5):
        async with open_memory_client(echo) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        # Leaving the block closed the client; the handler's
        # ConnectionClosed is no error, so nothing was raised.


# ----------------------------------------------------------------------
# Frames sent right behind the request, before the 101


GLUED_REQUEST = (
    b"GET /glued HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    key = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


@pytest.mark.parametrize(
    "accept_options",
    [{}, {"extra_headers": [(b"x-path", b"h11")]}],
    ids=["short-path", "wsproto-path"],
)
async def test_frames_glued_to_the_request_are_not_lost(
    nursery: trio.Nursery, accept_options: dict[str, object], autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 6455 asks a client to wait for the 101, but one that does not must
    # not lose its first messages: they come with the request's last read.
    client, server_stream = trio.testing.memory_stream_pair()
    await client.send_all(
        GLUED_REQUEST + masked_text_frame("first") + masked_text_frame("second")
    )
    from trio_websocket import wrap_server_stream

    request = await wrap_server_stream(nursery, server_stream)
    ws = await request.accept(**accept_options)  # type: ignore[arg-type]
    with trio.fail_after(5):
        assert await ws.get_message() == "first"
        assert await ws.get_message() == "second"
