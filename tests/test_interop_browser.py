"""Interoperability with a real browser: headless Chromium.

Two directions at once, as Selenium uses this library:

- our client drives Chromium over the Chrome DevTools Protocol: the browser
  endpoint (``Target.createTarget``), then the page target's
  ``webSocketDebuggerUrl`` (``Page.navigate``, ``Runtime.evaluate``);
- the page, ``interop_js/browser_peer.html``, opens a WebSocket to our
  server with subprotocols, exchanges non-ASCII text and ArrayBuffers
  (empty and 1 MiB) with it, and closes (or is closed) with a code and
  reason. Its results are read back over CDP and checked against what our
  server saw.

A browser cannot send pings from JavaScript, so only our server pings it.
Debian's ``chromium`` is installed by the session fixture when missing;
when that cannot be done the tests are skipped, or fail under ``CI=true``
(tests/peers.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from peers import require_program

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
PAGE = Path(__file__).parent / "interop_js" / "browser_peer.html"

#: The same strings as TEXT and CLOSE_REASON in browser_peer.html.
TEXT = "héllo wörld — ✓ 日本語 😀 \x00 end"
CLOSE_REASON = "fin — ✓ 😀"
MIB = 2**20

#: Our answer to a peer's close frame carries its code but not its reason.

#: The wall-clock bound of one browser test (seconds).
TEST_TIMEOUT = 25

pytestmark = pytest.mark.time_limit(TEST_TIMEOUT + 5)


# ---------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get if it is missing."""
    return require_program(
        CHROMIUM,
        peer="Chromium",
        apt_package="chromium",
        how_to_get=f"install Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    )


@pytest.fixture(scope="module")
def devtools(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields the DevTools port."""
    with launched_chromium(chromium, tmp_path_factory.mktemp("chromium")) as port:
        yield port


@contextlib.contextmanager
def launched_chromium(
    chromium: str, folder: Path, extra_flags: Sequence[str] = ()
) -> Iterator[str]:
    """Run a headless Chromium (CHROMIUM_FLAGS and ``extra_flags``) with a
    fresh profile in ``folder``; yields its DevTools port.

    Chromium runs in its own process group (it starts helper processes),
    which is killed when the block ends.
    """
    profile = folder / "profile"
    stderr_path = folder / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                *extra_flags,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        # Chromium writes its port and the browser endpoint's path there.
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while True:
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[1].startswith("/devtools/browser/"):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"Chromium did not start its DevTools server (exit status "
                    f"{process.poll()}):\n{stderr_path.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.05)
        yield lines[0]
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and every process of its group.

    SIGTERM lets the browser shut its helpers down (and reap them); then
    the whole group gets SIGKILL for anything left. The leader is only
    reaped after that, so until then the group id cannot be reused.
    """
    try:
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                break
            time.sleep(0.02)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        process.wait(timeout=10)


# ---------------------------------------------------------------------------
# A tiny CDP client on top of our WebSocket client


class Cdp:
    """Commands and events over one DevTools WebSocket connection."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def _receive(self) -> dict[str, Any]:
        message = await self._ws.get_message()
        assert isinstance(message, str), "CDP messages are text"
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        command = {"id": command_id, "method": method, "params": params}
        await self._ws.send_message(json.dumps(command))
        while True:
            message = await self._receive()
            if message.get("id") == command_id:
                if "error" in message:
                    raise AssertionError(f"CDP {method} failed: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            if "method" in message:
                self._events.append(message)

    async def event(self, method: str) -> dict[str, Any]:
        for index, event in enumerate(self._events):
            if event["method"] == method:
                params: dict[str, Any] = self._events.pop(index)["params"]
                return params
        while True:
            message = await self._receive()
            if message.get("method") == method:
                params = message["params"]
                return params
            self._events.append(message)


def _http_get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def run_page(devtools_port: str, page_url: str) -> dict[str, Any]:
    """Open ``page_url`` in a new tab, driven by our client over CDP, and
    return what ``window.peerResult`` resolves to."""
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
            assert target["type"] == "page"
            async with open_websocket_url(target["webSocketDebuggerUrl"]) as page_ws:
                page = Cdp(page_ws)
                await page.call("Page.enable")
                navigation = await page.call("Page.navigate", url=page_url)
                assert "errorText" not in navigation, navigation
                await page.event("Page.loadEventFired")
                evaluated = await page.call(
                    "Runtime.evaluate",
                    expression="window.peerResult",
                    awaitPromise=True,
                    returnByValue=True,
                )
                assert "exceptionDetails" not in evaluated, evaluated
                value: dict[str, Any] = evaluated["result"]["value"]
                return value
        finally:
            await browser.call("Target.closeTarget", targetId=target_id)


# ---------------------------------------------------------------------------
# Our server


def header(headers: Any, name: str) -> str | None:
    for key, value in headers:
        if key.decode("ascii").lower() == name.lower():
            return str(value.decode("latin-1"))
    return None


class BrowserPeerServer:
    """The server side of browser_peer.html's exchange. It records what the
    browser sent; the test checks it afterwards."""

    def __init__(self, server_closes: bool) -> None:
        self.server_closes = server_closes
        self.big = os.urandom(MIB)
        self.request_headers: Any = None
        self.path: str | None = None
        self.offered: tuple[str, ...] = ()
        self.received: list[str | bytes] = []
        self.pinged = False
        self.closed: CloseReason | None = None
        self.connection: WebSocketConnection | None = None
        self.done = trio.Event()

    async def handler(self, request: WebSocketRequest) -> None:
        self.request_headers = request.headers
        self.path = request.path
        self.offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol="chat.v2")
        self.connection = ws
        try:
            for _ in range(3):
                self.received.append(await ws.get_message())
            with trio.fail_after(5):
                await ws.ping(b"are you there")
            self.pinged = True
            await ws.send_message(TEXT[::-1])
            await ws.send_message(b"")
            await ws.send_message(self.big)
            if self.server_closes:
                await ws.aclose(4001, CLOSE_REASON)
            else:
                await ws.get_message()
        except ConnectionClosed as exc:
            self.closed = exc.reason
        else:
            self.closed = ws.closed
        finally:
            self.done.set()


async def exchange(
    nursery: trio.Nursery, devtools_port: str, server_closes: bool, compression: str | None = None
) -> tuple[BrowserPeerServer, dict[str, Any]]:
    ours = BrowserPeerServer(server_closes)
    server = await nursery.start(
        partial(serve_websocket, ours.handler, "127.0.0.1", 0, None, compression=compression)
    )
    ws_url = f"ws://127.0.0.1:{server.port}/interop?from=chromium"
    mode = "server-close" if server_closes else "browser-close"
    query = urllib.parse.urlencode({"url": ws_url, "mode": mode})
    with trio.fail_after(TEST_TIMEOUT):
        result = await run_page(devtools_port, f"{PAGE.as_uri()}?{query}")
        await ours.done.wait()
    return ours, result


def check_messages(
    ours: BrowserPeerServer, result: dict[str, Any], *, compressed: bool = False
) -> None:
    """What each side sent arrived intact, with the right types."""
    # The opening handshake, seen from both sides.
    assert ours.path == "/interop?from=chromium"
    assert ours.offered == ("chat.v1", "chat.v2")
    assert header(ours.request_headers, "Origin")  # a browser always sends it
    assert "Chrome" in (header(ours.request_headers, "User-Agent") or "")
    assert result["protocol"] == "chat.v2"
    # Chromium offers permessage-deflate; we accept it only when asked to.
    if compressed:
        assert result["extensions"].startswith("permessage-deflate")
    else:
        assert result["extensions"] == ""
    assert result["errors"] == []

    # Browser -> our server.
    text, empty, big = ours.received
    assert text == TEXT == result["sent"]["text"]
    assert empty == b""
    assert isinstance(big, bytes)
    assert len(big) == result["sent"]["bigLength"] == MIB
    assert zlib.crc32(big) == result["sent"]["bigCrc32"]

    # Our server -> browser.
    assert ours.pinged
    assert result["received"] == [
        {"type": "text", "text": TEXT[::-1]},
        {"type": "binary", "length": 0, "crc32": 0},
        {"type": "binary", "length": MIB, "crc32": zlib.crc32(ours.big)},
    ]


async def test_browser_exchanges_then_closes(devtools: str, nursery: trio.Nursery) -> None:
    ours, result = await exchange(nursery, devtools, server_closes=False)
    check_messages(ours, result)
    assert ours.closed == CloseReason(4000, CLOSE_REASON)
    # Our server answered with the browser's code: a clean close.
    assert (result["close"]["code"], result["close"]["wasClean"]) == (4000, True)


async def test_browser_sees_its_close_reason_echoed(devtools: str, nursery: trio.Nursery) -> None:
    # A CloseEvent's reason is the one in the server's answering close
    # frame; trio-websocket 0.12.2 sent back the browser's own reason.
    ours, result = await exchange(nursery, devtools, server_closes=False)
    assert ours.closed == CloseReason(4000, CLOSE_REASON)
    assert result["close"]["reason"] == CLOSE_REASON


async def test_server_exchanges_then_closes(devtools: str, nursery: trio.Nursery) -> None:
    ours, result = await exchange(nursery, devtools, server_closes=True)
    check_messages(ours, result)
    assert ours.closed == CloseReason(4001, CLOSE_REASON)
    assert result["close"] == {"code": 4001, "reason": CLOSE_REASON, "wasClean": True}


async def test_browser_negotiates_deflate_with_our_server(
    devtools: str, nursery: trio.Nursery
) -> None:
    ours, result = await exchange(nursery, devtools, server_closes=True, compression="deflate")
    check_messages(ours, result, compressed=True)
    ws = ours.connection
    assert ws is not None and ws.compression is not None
    deflate = ws._deflate
    assert deflate is not None
    # Chromium compresses what it sends; we compressed our 1 MiB message
    # (and only it: the short ones are under the threshold) and the
    # browser read it.
    assert deflate.bytes_received_uncompressed > 0
    assert deflate.bytes_sent_uncompressed == MIB
    assert result["close"] == {"code": 4001, "reason": CLOSE_REASON, "wasClean": True}
