"""The chat room, the producer/consumer pair and the live browser page in
examples/ work as their headers say.

Each is tested twice where it can be: its pieces imported and run over the
testing kit's memory streams (fast, autojump clock), and the script run as
a real process, stopped by its own PID. The live page is opened in headless
Chromium (the DevTools machinery of test_interop_browser.py) and what it
displays is read back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing
from test_examples import EXAMPLES, SUBPROCESS_TIMEOUT, script_env
from test_interop_browser import Cdp, _http_get_json, chromium, devtools  # noqa: F401

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from trio_websocket.testing import FaultyStream, open_memory_client

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals/select")


def load_example(name: str) -> ModuleType:
    """Import examples/``name``.py (registered in ``sys.modules``, which
    dataclasses need)."""
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """One line of the process's stdout (with its newline), or fail after
    ``timeout`` s. Reads the pipe byte by byte, below Python's buffering,
    so the next line stays in the pipe for the next call's ``select``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            pytest.fail(f"no complete line within {timeout} s: {line!r}")
        byte = os.read(fd, 1)
        if not byte:
            pytest.fail(f"the process exited early: {line!r}")
        line += byte
    return line.decode("utf-8")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def start_script(
    started: list[subprocess.Popen[str]], name: str, *args: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    started.append(process)
    return process


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C the process; its exit status and stderr."""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    return process.returncode, err


# ----------------------------------------------------------------------
# chat.py


@pytest.fixture(scope="module")
def chat() -> ModuleType:
    return load_example("chat")


@asynccontextmanager
async def join(chat: ModuleType, room: Any, name: str) -> AsyncIterator[WebSocketConnection]:
    async with open_memory_client(room.handler, resource=f"/?name={name}") as ws:
        yield ws


async def test_chat_broadcasts_to_every_member(chat: ModuleType) -> None:
    room = chat.ChatRoom()
    async with join(chat, room, "alice") as alice:
        assert await alice.get_message() == "* alice joined (1 here)"
        async with join(chat, room, "bob") as bob:
            assert await bob.get_message() == "* bob joined (2 here)"
            assert await alice.get_message() == "* bob joined (2 here)"
            await bob.send_message("hi all")
            assert await alice.get_message() == "bob: hi all"
            assert await bob.get_message() == "bob: hi all"
            assert sorted(room.members) == ["alice", "bob"]
        assert await alice.get_message() == "* bob left"
        assert list(room.members) == ["alice"]
    assert room.members == {}


async def test_chat_refuses_bad_and_taken_names(chat: ModuleType) -> None:
    room = chat.ChatRoom()
    for resource, status in [("/", 400), ("/?name=", 400), ("/?name=a%20b", 400)]:
        with pytest.raises(ConnectionRejected) as caught:
            async with open_memory_client(room.handler, resource=resource):
                pass  # pragma: no cover
        assert caught.value.status_code == status, resource
    async with join(chat, room, "carol"):
        with pytest.raises(ConnectionRejected) as caught:
            async with join(chat, room, "carol"):
                pass  # pragma: no cover
        assert caught.value.status_code == 409
        assert b"already in the room" in (caught.value.body or b"")


async def test_a_member_too_slow_to_keep_up_is_dropped_not_waited_for(chat: ModuleType) -> None:
    room = chat.ChatRoom()
    outbox, inbox = trio.open_memory_channel[str](2)
    slow = chat.Member("slow", outbox)
    room.members["slow"] = slow
    async with join(chat, room, "fast") as fast:
        for number in range(5):  # never blocks, though "slow" reads nothing
            await fast.send_message(f"line {number}")
        assert [await fast.get_message() for _ in range(6)][-1] == "fast: line 4"
    assert slow.kicked and "slow" not in room.members
    assert [line async for line in inbox] == ["* fast joined (2 here)", "fast: line 0"]


async def test_a_kicked_member_is_closed_with_1008(chat: ModuleType) -> None:
    room = chat.ChatRoom()
    async with join(chat, room, "dave") as dave:
        assert await dave.get_message() == "* dave joined (1 here)"
        room.kick(room.members["dave"])
        with pytest.raises(ConnectionClosed) as caught:
            await dave.get_message()
        assert caught.value.reason.code == 1008


@POSIX_ONLY
@pytest.mark.time_limit(2 * SUBPROCESS_TIMEOUT)
async def test_chat_server_script(started: list[subprocess.Popen[str]]) -> None:
    process = start_script(started, "chat.py", "--port", "0")
    line = read_line(process, SUBPROCESS_TIMEOUT)
    match = re.fullmatch(r"listening on (ws://127\.0\.0\.1:\d+)/\?name=YOUR_NAME\n", line)
    assert match, line
    base = match.group(1)
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        async with open_websocket_url(f"{base}/?name=erin") as erin:
            assert await erin.get_message() == "* erin joined (1 here)"
            async with open_websocket_url(f"{base}/?name=frank") as frank:
                await frank.send_message("hello from frank")
                assert await erin.get_message() == "* frank joined (2 here)"
                assert await erin.get_message() == "frank: hello from frank"
            assert await erin.get_message() == "* frank left"
    status, err = await trio.to_thread.run_sync(stop, process)
    assert status == 0, err
    assert "erin joined from 127.0.0.1:" in err
    assert err.rstrip().endswith("stopped")


# ----------------------------------------------------------------------
# producer_consumer.py


@pytest.fixture(scope="module")
def jobs_example() -> ModuleType:
    return load_example("producer_consumer")


async def test_the_window_bounds_the_jobs_in_flight(
    jobs_example: ModuleType, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_memory_client(jobs_example.worker) as ws:
        progress = await jobs_example.run_jobs(ws, 9, 2)
    assert progress.results == {job: job * job for job in range(9)}
    assert progress.most_in_flight == 2
    assert progress.summary == {"jobs": 9, "total": sum(n * n for n in range(9))}
    assert progress.closed_early is None


async def test_the_producer_stops_cleanly_when_the_server_goes_away(
    jobs_example: ModuleType,
) -> None:
    async def quits_after_three(request: Any) -> None:
        ws = await request.accept()
        for _ in range(3):
            job = json.loads(await ws.get_message())
            await ws.send_message(json.dumps({"job": job["job"], "square": 0}))
        await ws.aclose(1001, "bye")

    async with open_memory_client(quits_after_three) as ws:
        progress = await jobs_example.run_jobs(ws, 10, 3)
    assert progress.summary is None
    assert progress.closed_early is not None
    assert progress.closed_early.reason.code == 1001
    assert len(progress.results) == 3


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_producer_consumer_script_finishes_by_itself() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "producer_consumer.py"), "--jobs", "12", "--window", "3"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=script_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:12]) == sorted(f"job {n}: {n * n}" for n in range(12))
    assert lines[12:] == [
        "at most 3 jobs in flight",
        f"summary: 12 jobs, total {sum(n * n for n in range(12))}",
    ]


@POSIX_ONLY
@pytest.mark.time_limit(2 * SUBPROCESS_TIMEOUT)
def test_producer_consumer_sides_run_as_separate_processes(
    started: list[subprocess.Popen[str]],
) -> None:
    server = start_script(started, "producer_consumer.py", "serve", "--port", "0")
    match = re.search(r"ws://127\.0\.0\.1:\d+/", read_line(server, SUBPROCESS_TIMEOUT))
    assert match
    client = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "producer_consumer.py"),
            "produce",
            match.group(0),
            *("--jobs", "5", "--window", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=script_env(),
        check=False,
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout.splitlines()[-1] == "summary: 5 jobs, total 30"
    status, err = stop(server)
    assert status == 0 and err.strip() == "stopped"


# ----------------------------------------------------------------------
# live/: the server and the page, in headless Chromium

LIVE_PAGE = EXAMPLES / "live" / "index.html"
#: What the page shows, as JSON.
READ_PAGE = """JSON.stringify({
  status: document.getElementById('status').textContent,
  count: Number(document.getElementById('count').textContent),
  tick: document.getElementById('tick').textContent,
  time: document.getElementById('time').textContent,
  value: document.getElementById('value').textContent,
  bars: document.getElementById('bars').children.length,
})"""


@asynccontextmanager
async def browser_tab(devtools_port: str, url: str) -> AsyncIterator[Cdp]:
    """A new Chromium tab showing ``url``, driven over CDP."""
    version = await trio.to_thread.run_sync(
        _http_get_json, f"http://127.0.0.1:{devtools_port}/json/version"
    )
    async with open_websocket_url(version["webSocketDebuggerUrl"]) as browser_ws:
        browser = Cdp(browser_ws)
        target_id = (await browser.call("Target.createTarget", url="about:blank"))["targetId"]
        try:
            targets = await trio.to_thread.run_sync(
                _http_get_json, f"http://127.0.0.1:{devtools_port}/json"
            )
            (target,) = [target for target in targets if target["id"] == target_id]
            async with open_websocket_url(target["webSocketDebuggerUrl"]) as page_ws:
                page = Cdp(page_ws)
                await page.call("Page.enable")
                navigation = await page.call("Page.navigate", url=url)
                assert "errorText" not in navigation, navigation
                await page.event("Page.loadEventFired")
                yield page
        finally:
            await browser.call("Target.closeTarget", targetId=target_id)


async def shown(page: Cdp) -> dict[str, Any]:
    evaluated = await page.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
    assert "exceptionDetails" not in evaluated, evaluated
    value: dict[str, Any] = json.loads(evaluated["result"]["value"])
    return value


async def wait_until_shown(page: Cdp, condition: Any) -> dict[str, Any]:
    """Poll what the page shows until ``condition`` holds (10 s at most)."""
    with trio.fail_after(10):
        while True:
            display = await shown(page)
            if condition(display):
                return display
            await trio.sleep(0.05)


def start_live_server(
    started: list[subprocess.Popen[str]],
) -> tuple[subprocess.Popen[str], str, str]:
    process = start_script(started, "live/server.py", "--port", "0", "--interval", "0.05")
    page = re.fullmatch(
        r"page: http://127\.0\.0\.1:(\d+)/\n", read_line(process, SUBPROCESS_TIMEOUT)
    )
    ws = re.fullmatch(r"websocket: ws://127\.0\.0\.1:(\d+)/ticks\n", read_line(process, 5))
    assert page and ws
    # One port: the page and the WebSocket.
    assert page.group(1) == ws.group(1)
    port = page.group(1)
    return process, f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ticks"


def check_live(display: dict[str, Any]) -> None:
    assert display["status"] == "live"
    assert display["bars"] == min(display["count"], 30)
    assert display["tick"].isdigit()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", display["time"])
    assert -1.0 <= float(display["value"]) <= 1.0


@POSIX_ONLY
@pytest.mark.time_limit(60)
async def test_live_page_shows_the_ticks_then_the_servers_goodbye(
    devtools: str,  # noqa: F811
    started: list[subprocess.Popen[str]],
) -> None:
    process, page_url, _ = start_live_server(started)
    async with browser_tab(devtools, page_url) as page:
        display = await wait_until_shown(page, lambda shown: shown["count"] >= 5)
        check_live(display)
        first_tick = int(display["tick"])
        later = await wait_until_shown(page, lambda shown: shown["count"] >= 40)
        check_live(later)
        assert later["bars"] == 30  # the page keeps the last 30
        assert int(later["tick"]) > first_tick
        process.send_signal(signal.SIGINT)
        closed = await wait_until_shown(page, lambda shown: shown["status"] != "live")
        assert closed["status"] == "closed (code 1001, server stopping)"
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        status = await trio.to_thread.run_sync(process.wait)
    assert status == 0
    assert process.stderr is not None
    assert process.stderr.read().split() == ["stopping", "stopped"]


@POSIX_ONLY
@pytest.mark.time_limit(60)
async def test_live_page_opened_as_a_file_takes_the_url_from_its_query(
    devtools: str,  # noqa: F811
    started: list[subprocess.Popen[str]],
) -> None:
    _, _, ws_url = start_live_server(started)
    async with browser_tab(devtools, f"{LIVE_PAGE.as_uri()}?ws={ws_url}") as page:
        check_live(await wait_until_shown(page, lambda shown: shown["count"] >= 3))


@POSIX_ONLY
@pytest.mark.time_limit(60)
async def test_live_page_without_a_url_says_so(devtools: str) -> None:  # noqa: F811
    async with browser_tab(devtools, LIVE_PAGE.as_uri()) as page:
        display = await shown(page)
    assert display["status"].startswith("no WebSocket URL")
    assert display["count"] == 0


def http_get(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
    raise AssertionError(f"no end of response: {answer[:200]!r}")


@POSIX_ONLY
@pytest.mark.time_limit(2 * SUBPROCESS_TIMEOUT)
def test_live_servers_http_side(started: list[subprocess.Popen[str]]) -> None:
    process, page_url, ws_url = start_live_server(started)
    port = int(page_url.rsplit(":", 1)[1].rstrip("/"))
    page = http_get(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert page.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f'<meta name="ws-url" content="{ws_url}">'.encode() in page
    # Without a Host header (HTTP/1.0): the URL the server printed.
    nameless = http_get(port, b"GET / HTTP/1.0\r\n\r\n")
    assert f'<meta name="ws-url" content="{ws_url}">'.encode() in nameless
    # Under another name, the page connects under that name.
    renamed = http_get(port, b"GET /index.html HTTP/1.1\r\nHost: localhost:1234\r\n\r\n")
    assert b'<meta name="ws-url" content="ws://localhost:1234/ticks">' in renamed
    host = b"Host: 127.0.0.1\r\n"
    assert http_get(port, b"GET /nope HTTP/1.1\r\n" + host + b"\r\n").startswith(b"HTTP/1.1 404 ")
    assert http_get(port, b"POST / HTTP/1.1\r\n" + host + b"\r\n").startswith(b"HTTP/1.1 405 ")
    assert http_get(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    head = http_get(port, b"HEAD / HTTP/1.1\r\n" + host + b"\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    # The ticks path without an upgrade: the server's own 426.
    assert http_get(port, b"GET /ticks HTTP/1.1\r\n" + host + b"\r\n").startswith(b"HTTP/1.1 426 ")
    status, err = stop(process)
    assert status == 0, err


def test_examples_live_next_to_each_other() -> None:
    assert (EXAMPLES / "live" / "server.py").exists() and LIVE_PAGE.exists()
    assert Path(EXAMPLES / "live" / "server.py").read_text().count("index.html") >= 1


async def test_a_member_stuck_in_a_write_is_dropped_too(chat: ModuleType) -> None:
    # Lockstep streams: a send waits until the other end reads. The stuck
    # member stops reading after joining, so the server's write to it
    # blocks; the kick must cancel that write rather than wait for it.
    room = chat.ChatRoom(queue_size=2)
    client_end, server_end = trio.testing.lockstep_stream_pair()
    stuck_end = FaultyStream(client_end)
    with trio.fail_after(10):
        async with open_memory_client(
            room.handler,
            resource="/?name=stuck",
            client_stream=stuck_end,
            server_stream=server_end,
        ) as stuck:
            assert await stuck.get_message() == "* stuck joined (1 here)"
            stuck_end.receive_delay = 3600  # stops reading
            async with join(chat, room, "talker") as talker:
                for number in range(5):
                    await talker.send_message(f"line {number}")
                # The talker's own lines come back; then "stuck" leaves.
                lines = [await talker.get_message() for _ in range(7)]
                assert lines[-1] == "* stuck left"
                assert list(room.members) == ["talker"]
