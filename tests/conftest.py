"""Shared test fixtures and the per-test time limit.

Every test runs under a wall-clock limit (default 20 s, or the
``time_limit(seconds)`` marker): a test that hangs is named, every thread's
stack is dumped to the real stderr (not the hung test's capture, which
nobody would read) and the run ends, so a hang can never pass silently or
stall CI.
Timeouts inside tests use trio's autojump clock where they can.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from hypothesis import HealthCheck, settings
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, CloseConnection, Request
from wsproto.handshake import H11Handshake

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
)
from trio_websocket._wire import fast_paths
from trio_websocket.testing import memory_pair

DEFAULT_TIME_LIMIT = 20.0

# Hypothesis profiles for the fuzz tests (tests/test_fuzz_*.py), chosen by
# the HYPOTHESIS_PROFILE environment variable (tests/README.md): "default"
# keeps every property to 150 examples, so that all the fuzz files together
# take well under a minute; "long" runs a hundred times as many, for a
# fuzzing session. Examples run trio with startup costs that vary, so no
# per-example deadline; the tests' time limit is FUZZ_TIME_LIMIT instead.
FUZZ_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("long", settings.get_profile("default"), max_examples=15_000)
settings.load_profile(FUZZ_PROFILE)
#: The wall-clock limit of one fuzz test (its ``time_limit`` marker).
FUZZ_TIME_LIMIT = 6 * 3600.0 if FUZZ_PROFILE == "long" else 60.0

#: Seconds past a test's limit before faulthandler's own watchdog ends the
#: run, should the hang report's thread not get to run (a C call holding
#: the GIL).
WATCHDOG_MARGIN = 5.0

#: A copy of the real stderr for hang reports, taken in pytest_configure,
#: where pytest's output capture is suspended (during a test, file
#: descriptor 2 goes to that test's capture).
_report_fd = -1


def pytest_configure(config: pytest.Config) -> None:
    global _report_fd
    config.addinivalue_line(
        "markers", "time_limit(seconds): wall-clock limit for one test (default 20 s)"
    )
    _let_children_take_ctrl_c()
    _report_fd = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _report_fd >= 0:
        os.close(_report_fd)


def _let_children_take_ctrl_c() -> None:
    """Undo an inherited "ignore SIGINT" before any test starts a process.

    A shell starts a background job (``bash .ci/run &`` in a script, nohup)
    with SIGINT ignored, and an ignored signal stays ignored across exec:
    every program the tests start would then ignore the Ctrl-C they send it
    to check a clean stop, and each such test would hang until its timeout.
    A handled signal is reset to the default in a child, so handling it
    here gives the children Python's usual KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("time_limit")
    seconds = float(marker.args[0]) if marker else DEFAULT_TIME_LIMIT
    report = threading.Timer(seconds, _report_hang_and_exit, (request.node.nodeid, seconds))
    report.daemon = True
    report.start()
    faulthandler.dump_traceback_later(seconds + WATCHDOG_MARGIN, exit=True, file=_report_fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        report.cancel()


def _report_hang_and_exit(nodeid: str, seconds: float) -> None:
    # A trio test's stack shows only the event loop: the name is the clue.
    message = f"\n{nodeid} still running after its {seconds:g} s limit; every thread:\n"
    os.write(_report_fd, message.encode())
    faulthandler.dump_traceback(_report_fd, all_threads=True)
    os._exit(1)


async def open_pair(
    nursery: trio.Nursery,
    client_stream: trio.abc.Stream | None = None,
    server_stream: trio.abc.Stream | None = None,
    *,
    subprotocols: list[str] | None = None,
    accept_subprotocol: str | None = None,
    client_options: dict[str, object] | None = None,
    server_options: dict[str, object] | None = None,
) -> tuple[WebSocketConnection, WebSocketConnection]:
    """A connected (client, server) pair over in-memory streams (or the
    streams given), both readers running in ``nursery``: the testing kit's
    :func:`~trio_websocket.testing.memory_pair` with this suite's host and
    resource."""
    return await memory_pair(
        nursery,
        client_stream,
        server_stream,
        host="example.com",
        resource="/path?q=1",
        subprotocols=subprotocols,
        accept_subprotocol=accept_subprotocol,
        client_options=client_options,
        server_options=server_options,
    )


class ReaderSteps(trio.abc.Instrument):
    """An instrument counting the steps of WebSocket reader tasks (named
    "... reader"), with an event set when one ends."""

    def __init__(self) -> None:
        self.steps = 0
        self.ended = trio.Event()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(" reader"):
            self.steps += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(" reader"):
            self.ended.set()


def server_readers() -> int:
    """How many server WebSocket reader tasks run now."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:  # (bounded by the task tree)
        task = stack.pop()
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                if child.name.startswith("server-") and child.name.endswith(" reader"):
                    count += 1
                stack.append(child)
    return count


@pytest.fixture
def no_cyclic_collector() -> Iterator[None]:
    """Only reference counting frees objects during the test (for tests of
    what a finished connection leaves to the cyclic collector)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def fast_paths_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the fast paths on (``_wire.fast_paths``), also in CI's run of
    the suite with ``TRIO_WEBSOCKET_FAST_PATHS=0``: for the tests of a fast
    path's own workings (the rest of the suite runs in either mode)."""
    monkeypatch.setattr(fast_paths, "ENABLED", True)


# TLS material for tests over real TLS: a trustme CA, a server certificate
# for 127.0.0.1 and localhost, a client context that trusts the CA. Module
# scope: a test that changes a context changes it for its own file only. A
# file that needs other names on the certificate defines its own
# server_context.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def pair(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """A connected (client, server) pair over memory streams."""
    client, server = await open_pair(nursery)
    yield client, server
    for connection in (client, server):
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await connection.aclose()


async def echo_handler(request: WebSocketRequest) -> None:
    """A server handler that echoes every message (bounded) until closed."""
    ws = await request.accept()
    try:
        for _ in range(10_000):
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


class LoopbackResolver(trio.abc.HostnameResolver):
    """Resolves every name to 127.0.0.1:``target_port`` and records the
    (host, port) it was asked for (install with
    ``trio.socket.set_custom_hostname_resolver``)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.asked: list[tuple[object, object]] = []

    async def getaddrinfo(  # type: ignore[override]
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        self.asked.append((host, port))
        await trio.lowlevel.checkpoint()
        return [
            (
                socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                ("127.0.0.1", self.target_port),
            )
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


# A peer driven by hand with wsproto, for tests that need the raw wire.

async def read_request_head(stream: trio.abc.Stream) -> bytes:
    head = b""
    for _ in range(1000):
        chunk = await stream.receive_some()
        if not chunk:
            break
        head += chunk
        if b"\r\n\r\n" in head:
            return head
    raise AssertionError(f"incomplete request head: {head!r}")


async def accept_by_hand(stream: trio.abc.Stream, head: bytes) -> Connection:
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.receive_data(head)
    assert any(isinstance(event, Request) for event in handshake.events())
    await stream.send_all(handshake.send(AcceptConnection()))
    assert handshake.connection is not None
    return handshake.connection


async def answer_close_by_hand(stream: trio.abc.Stream, connection: Connection) -> None:
    for _ in range(10_000):
        data = await stream.receive_some()
        if not data:
            return
        connection.receive_data(data)
        for event in connection.events():
            if isinstance(event, CloseConnection):
                await stream.send_all(connection.send(event.response()))
                await stream.aclose()
                return
