"""Interoperability with Node.js's ``ws`` library, in both directions.

Our client talks to a ``ws`` server and a ``ws`` client talks to our server,
both over loopback TCP and over TLS with a trustme CA. The Node peers are
the small scripts in ``interop_js/`` (``ws_server.js``, ``ws_client.js``):
the test sends them JSON commands on stdin and reads what they saw as JSON
events on stdout (see ``interop_js/peer_common.js``).

The pinned ``ws`` package is installed into ``interop_js/node_modules`` by
``npm ci`` the first time (and Node.js itself from Debian's packages if it is
missing); when that cannot be done the tests are skipped, or fail under
``CI=true`` (tests/peers.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from peers import peer_unavailable, require_program, run_setup_step

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

JS_DIR = Path(__file__).parent / "interop_js"

#: Text with 2-, 3- and 4-byte UTF-8 sequences (the last one is a surrogate
#: pair in JavaScript) and a NUL.
TEXT = "héllo wörld — ✓ 日本語 😀 \x00 end"
MIB = 2**20
#: Close reasons are UTF-8 too.
CLOSE_REASON = "fin — ✓ 😀"

#: Our answer to a peer's close frame carries its code but not its reason.

# Every wait on a Node peer is bounded by this (seconds).
PEER_TIMEOUT = 10


# ---------------------------------------------------------------------------
# Installing the peer


def _ws_version_wanted() -> str:
    lock = json.loads((JS_DIR / "package-lock.json").read_text(encoding="utf-8"))
    return str(lock["packages"]["node_modules/ws"]["version"])


def _ws_version_installed() -> str | None:
    try:
        package = (JS_DIR / "node_modules" / "ws" / "package.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return str(json.loads(package)["version"])


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the pinned ``ws`` installed for the
    peer scripts."""
    how_to_get_node = "install Node.js and npm (Debian: apt-get install nodejs npm)"
    node = require_program("node", peer="Node.js", apt_package="nodejs", how_to_get=how_to_get_node)
    npm = require_program("npm", peer="npm", apt_package="npm", how_to_get=how_to_get_node)
    wanted = _ws_version_wanted()
    if _ws_version_installed() != wanted:
        problem = run_setup_step([npm, "ci", "--no-audit", "--no-fund"], timeout=300, cwd=JS_DIR)
        installed = _ws_version_installed()
        if installed != wanted:
            peer_unavailable(
                f"Node's ws {wanted} (from the npm registry)",
                problem or f"npm ci installed ws {installed}",
                f"run `npm ci` in {JS_DIR} with the npm registry reachable",
            )
    return node


# ---------------------------------------------------------------------------
# TLS material: a trustme CA that both sides trust


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files for the Node peers: the CA, and a server certificate for
    127.0.0.1 (with its chain) and its key."""
    folder = tmp_path_factory.mktemp("interop-node-tls")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(files["cert"]), append=index > 0)
    issued.private_key_pem.write_to_path(str(files["key"]))
    return files


# ---------------------------------------------------------------------------
# Driving a Node peer


class NodePeer:
    """A running peer script: JSON commands in, JSON events out."""

    def __init__(self, process: trio.Process, stderr: Path) -> None:
        self.process = process
        self._stderr = stderr
        self._buffer = bytearray()
        self._backlog: list[dict[str, Any]] = []

    def stderr(self) -> str:
        return self._stderr.read_text(encoding="utf-8", errors="replace")

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def _next_event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(256 * 1024)
            if not chunk:
                raise AssertionError(f"the Node peer ended its output; stderr:\n{self.stderr()}")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        event: dict[str, Any] = json.loads(line)
        return event

    async def expect(self, kind: str) -> dict[str, Any]:
        """The next event of this kind; events of other kinds that come
        first are kept for later. An unexpected ``error`` event fails."""
        for index, event in enumerate(self._backlog):
            if event["event"] == kind:
                return self._backlog.pop(index)
        with trio.fail_after(PEER_TIMEOUT):
            while True:
                event = await self._next_event()
                if event["event"] == kind:
                    return event
                if event["event"] == "error":
                    raise AssertionError(
                        f"the Node peer reported {event}; stderr:\n{self.stderr()}"
                    )
                self._backlog.append(event)

    async def send_binary(self, data: bytes) -> None:
        await self.command(op="send", base64=base64.b64encode(data).decode("ascii"))

    async def finish(self) -> int:
        """End its stdin and wait for it to exit; its exit status."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.fail_after(PEER_TIMEOUT):
            return await self.process.wait()

    def unread(self, kind: str) -> list[dict[str, Any]]:
        """Events of this kind that were set aside by :meth:`expect`."""
        return [event for event in self._backlog if event["event"] == kind]


Launch = Callable[..., Awaitable[NodePeer]]


def _create_file(path: Path) -> int:
    """A new file for a peer's stderr, as a file descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


@pytest.fixture
async def launch(node: str, tmp_path: Path) -> AsyncIterator[Launch]:
    """``await launch("ws_server.js", *args)`` starts a peer script; every
    peer started is killed (by its PID) when the test ends."""
    async with AsyncExitStack() as stack:
        started = 0

        async def start(script: str, *args: str) -> NodePeer:
            nonlocal started
            started += 1
            stderr_path = tmp_path / f"{script}.{started}.stderr"
            stderr = _create_file(stderr_path)
            try:
                process = await trio.lowlevel.open_process(
                    [node, str(JS_DIR / script), *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    cwd=JS_DIR,
                )
            finally:
                os.close(stderr)

            async def stop() -> None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await trio.aclose_forcefully(pipe)

            stack.push_async_callback(stop)
            return NodePeer(process, stderr_path)

        yield start


async def start_node_server(launch: Launch, *args: str) -> tuple[NodePeer, int]:
    """A ``ws_server.js`` that echoes, prefers subprotocol chat.v2 to
    chat.v1 and adds a response header; the peer and its port."""
    server = await launch(
        "ws_server.js",
        "--echo",
        "--protocol",
        "chat.v2",
        "--protocol",
        "chat.v1",
        "--header",
        "X-Node-Server: ws",
        *args,
    )
    listening = await server.expect("listening")
    return server, int(listening["port"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def header(headers: Any, name: str) -> str | None:
    """A header's value from (bytes, bytes) pairs, by case-insensitive name."""
    for key, value in headers:
        if key.decode("ascii").lower() == name.lower():
            return str(value.decode("latin-1"))
    return None


# ---------------------------------------------------------------------------
# Our client -> Node.js ws server


async def test_client_handshake_and_messages_both_ways(launch: Launch) -> None:
    server, port = await start_node_server(launch)
    big = os.urandom(MIB)
    from_node = os.urandom(MIB)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}/chat/room?user=%C3%A9&x=1",
            subprotocols=["chat.v1", "chat.v2"],
            extra_headers=[(b"X-Interop", b"trio-client"), (b"Authorization", b"Bearer abc")],
        ) as ws:
            # Response: the server's choice (its preference, not our first)
            # and its extra header (like 0.12.2, handshake_headers holds the
            # headers wsproto does not consume itself).
            assert ws.subprotocol == "chat.v2"
            assert header(ws.handshake_headers, "X-Node-Server") == "ws"

            # Request, as the server saw it.
            connection = await server.expect("connection")
            assert connection["url"] == "/chat/room?user=%C3%A9&x=1"
            assert connection["headers"]["host"] == f"127.0.0.1:{port}"
            assert connection["headers"]["x-interop"] == "trio-client"
            assert connection["headers"]["authorization"] == "Bearer abc"
            assert connection["headers"]["sec-websocket-protocol"] == "chat.v1, chat.v2"
            assert connection["protocol"] == "chat.v2"
            assert connection["extensions"] == ""
            assert connection["tls"] is False

            # Ours to Node (checked by Node), echoed back to us.
            await ws.send_message(TEXT)
            await ws.send_message(b"")
            await ws.send_message(big)
            assert await server.expect("message") == {
                "event": "message",
                "type": "text",
                "text": TEXT,
            }
            empty = await server.expect("message")
            assert (empty["type"], empty["length"]) == ("binary", 0)
            large = await server.expect("message")
            assert (large["type"], large["length"], large["sha256"]) == ("binary", MIB, sha256(big))
            assert await ws.get_message() == TEXT
            assert await ws.get_message() == b""
            echoed = await ws.get_message()
            assert type(echoed) is bytes
            assert echoed == big

            # Node's own messages to us.
            await server.command(op="send", text=TEXT[::-1])
            await server.send_binary(b"")
            await server.send_binary(from_node)
            assert await ws.get_message() == TEXT[::-1]
            assert await ws.get_message() == b""
            assert await ws.get_message() == from_node
    assert (await server.expect("close"))["code"] == 1000
    assert await server.finish() == 0


async def test_client_pings_both_ways(launch: Launch) -> None:
    server, port = await start_node_server(launch)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await server.expect("connection")
            # Ours: ping() returns once Node's pong arrives.
            await ws.ping(b"ping from trio \xe2\x9c\x93")
            assert (await server.expect("ping"))["data"] == "ping from trio ✓"
            # Node's: answered by us while nobody reads the connection.
            await server.command(op="ping", data="ping from node ✓")
            assert (await server.expect("pong"))["data"] == "ping from node ✓"
            # An unsolicited pong reaches Node as a pong.
            await ws.pong(b"heartbeat")
            assert (await server.expect("pong"))["data"] == "heartbeat"
            assert server.unread("message") == []


async def test_client_closes_with_code_and_reason(launch: Launch) -> None:
    server, port = await start_node_server(launch)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await server.expect("connection")
            await ws.aclose(4001, CLOSE_REASON)
            assert ws.closed == CloseReason(4001, CLOSE_REASON)
        close = await server.expect("close")
        assert (close["code"], close["reason"]) == (4001, CLOSE_REASON)
        with pytest.raises(ConnectionClosed) as raised:
            await ws.get_message()
        assert raised.value.reason.code == 4001


async def test_node_server_closes_with_code_and_reason(launch: Launch) -> None:
    server, port = await start_node_server(launch)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await server.expect("connection")
            # A message sent just before the close is still delivered.
            await server.command(op="send", text="last words")
            await server.command(op="close", code=4002, reason=CLOSE_REASON)
            assert await ws.get_message() == "last words"
            with pytest.raises(ConnectionClosed) as raised:
                await ws.get_message()
            assert raised.value.reason == CloseReason(4002, CLOSE_REASON)
            assert ws.closed == CloseReason(4002, CLOSE_REASON)
        # Node saw a clean closing handshake, with its code echoed (1006
        # would mean the TCP connection dropped without our close frame).
        assert (await server.expect("close"))["code"] == 4002


async def test_node_server_sees_its_close_reason_echoed(launch: Launch) -> None:
    server, port = await start_node_server(launch)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await server.expect("connection")
            await server.command(op="close", code=4002, reason=CLOSE_REASON)
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    close = await server.expect("close")
    assert (close["code"], close["reason"]) == (4002, CLOSE_REASON)


async def test_client_over_tls(
    launch: Launch, tls_files: dict[str, Path], client_context: ssl.SSLContext
) -> None:
    server, port = await start_node_server(
        launch, "--cert", str(tls_files["cert"]), "--key", str(tls_files["key"])
    )
    big = os.urandom(MIB)
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(
            f"wss://127.0.0.1:{port}/secure", client_context, subprotocols=["chat.v1"]
        ) as ws:
            assert ws.subprotocol == "chat.v1"
            connection = await server.expect("connection")
            assert connection["tls"] is True
            assert connection["url"] == "/secure"
            await ws.send_message(TEXT)
            assert await ws.get_message() == TEXT
            await ws.send_message(big)
            assert await ws.get_message() == big
            await ws.ping(b"tls ping")
            assert (await server.expect("ping"))["data"] == "tls ping"
            await ws.aclose(4005, CLOSE_REASON)
        close = await server.expect("close")
        assert (close["code"], close["reason"]) == (4005, CLOSE_REASON)


# ---------------------------------------------------------------------------
# Node.js ws client -> our server


class OurServer:
    """Hands each connection our server accepts to the test, which drives
    it; the handler keeps it open until the test ends (or it closes)."""

    def __init__(
        self, subprotocol: str | None = "chat.v2", *, compression: str | None = None
    ) -> None:
        self.subprotocol = subprotocol
        self.compression = compression
        self._send, self._receive = trio.open_memory_channel[
            tuple[WebSocketRequest, WebSocketConnection]
        ](1)
        self.server: WebSocketServer | None = None

    async def handler(self, request: WebSocketRequest) -> None:
        subprotocol = (
            self.subprotocol if self.subprotocol in request.proposed_subprotocols else None
        )
        ws = await request.accept(
            subprotocol=subprotocol, extra_headers=[(b"X-Trio-Server", b"yes")]
        )
        await self._send.send((request, ws))
        await trio.sleep_forever()

    async def start(self, nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await nursery.start(
            partial(
                serve_websocket,
                self.handler,
                "127.0.0.1",
                0,
                ssl_context,
                compression=self.compression,
            )
        )
        return self.server.port

    async def connection(self) -> tuple[WebSocketRequest, WebSocketConnection]:
        with trio.fail_after(PEER_TIMEOUT):
            return await self._receive.receive()


def client_args(url: str, *more: str) -> list[str]:
    return [
        url,
        "--protocol",
        "chat.v1",
        "--protocol",
        "chat.v2",
        "--header",
        "X-Interop: node-client",
        *more,
    ]


async def test_server_handshake_and_messages_both_ways(
    launch: Launch, nursery: trio.Nursery
) -> None:
    ours = OurServer()
    port = await ours.start(nursery)
    client = await launch("ws_client.js", *client_args(f"ws://127.0.0.1:{port}/feed?x=%C3%A9"))
    big = os.urandom(MIB)
    from_node = os.urandom(MIB)
    request, ws = await ours.connection()

    # Request, as our server saw it.
    assert request.path == "/feed?x=%C3%A9"
    assert request.proposed_subprotocols == ("chat.v1", "chat.v2")
    assert header(request.headers, "X-Interop") == "node-client"
    assert ws.subprotocol == "chat.v2"
    # Response, as Node saw it: our header, our choice, and no extension
    # (Node offered permessage-deflate, which we do not implement).
    upgrade = await client.expect("upgrade")
    assert upgrade["status"] == 101
    assert upgrade["headers"]["x-trio-server"] == "yes"
    assert upgrade["headers"]["sec-websocket-protocol"] == "chat.v2"
    assert "sec-websocket-extensions" not in upgrade["headers"]
    opened = await client.expect("open")
    assert (opened["protocol"], opened["extensions"]) == ("chat.v2", "")

    with trio.fail_after(PEER_TIMEOUT):
        # Node's messages to us.
        await client.command(op="send", text=TEXT)
        await client.send_binary(b"")
        await client.send_binary(from_node)
        assert await ws.get_message() == TEXT
        assert await ws.get_message() == b""
        received = await ws.get_message()
        assert type(received) is bytes
        assert received == from_node

        # Ours to Node.
        await ws.send_message(TEXT[::-1])
        await ws.send_message(b"")
        await ws.send_message(big)
    assert await client.expect("message") == {
        "event": "message",
        "type": "text",
        "text": TEXT[::-1],
    }
    empty = await client.expect("message")
    assert (empty["type"], empty["length"]) == ("binary", 0)
    large = await client.expect("message")
    assert (large["type"], large["length"], large["sha256"]) == ("binary", MIB, sha256(big))


async def test_server_pings_both_ways(launch: Launch, nursery: trio.Nursery) -> None:
    ours = OurServer()
    port = await ours.start(nursery)
    client = await launch("ws_client.js", f"ws://127.0.0.1:{port}/")
    _, ws = await ours.connection()
    await client.expect("open")
    # Node's ping is answered while nobody reads the connection.
    await client.command(op="ping", data="ping from node ✓")
    assert (await client.expect("pong"))["data"] == "ping from node ✓"
    # Ours: ping() returns once Node's pong arrives.
    with trio.fail_after(PEER_TIMEOUT):
        await ws.ping("ping from trio ✓".encode())
    assert (await client.expect("ping"))["data"] == "ping from trio ✓"
    await ws.pong(b"heartbeat")
    assert (await client.expect("pong"))["data"] == "heartbeat"


async def test_node_client_closes_with_code_and_reason(
    launch: Launch, nursery: trio.Nursery
) -> None:
    ours = OurServer()
    port = await ours.start(nursery)
    client = await launch("ws_client.js", f"ws://127.0.0.1:{port}/")
    _, ws = await ours.connection()
    await client.expect("open")
    await client.command(op="send", text="last words")
    await client.command(op="close", code=4003, reason=CLOSE_REASON)
    with trio.fail_after(PEER_TIMEOUT):
        assert await ws.get_message() == "last words"
        with pytest.raises(ConnectionClosed) as raised:
            await ws.get_message()
    assert raised.value.reason == CloseReason(4003, CLOSE_REASON)
    assert ws.closed == CloseReason(4003, CLOSE_REASON)
    # Our echo of the code reached Node: a clean closing handshake.
    assert (await client.expect("close"))["code"] == 4003
    assert await client.finish() == 0


async def test_node_client_sees_its_close_reason_echoed(
    launch: Launch, nursery: trio.Nursery
) -> None:
    ours = OurServer()
    port = await ours.start(nursery)
    client = await launch("ws_client.js", f"ws://127.0.0.1:{port}/")
    _, ws = await ours.connection()
    await client.expect("open")
    await client.command(op="close", code=4003, reason=CLOSE_REASON)
    with trio.fail_after(PEER_TIMEOUT), pytest.raises(ConnectionClosed):
        await ws.get_message()
    close = await client.expect("close")
    assert (close["code"], close["reason"]) == (4003, CLOSE_REASON)


async def test_server_closes_with_code_and_reason(launch: Launch, nursery: trio.Nursery) -> None:
    ours = OurServer()
    port = await ours.start(nursery)
    client = await launch("ws_client.js", f"ws://127.0.0.1:{port}/")
    _, ws = await ours.connection()
    await client.expect("open")
    await ws.send_message("last words")
    with trio.fail_after(PEER_TIMEOUT):
        await ws.aclose(4004, CLOSE_REASON)
    assert ws.closed == CloseReason(4004, CLOSE_REASON)
    assert (await client.expect("message"))["text"] == "last words"
    close = await client.expect("close")
    assert (close["code"], close["reason"]) == (4004, CLOSE_REASON)
    assert await client.finish() == 0


async def test_server_over_tls(
    launch: Launch,
    nursery: trio.Nursery,
    tls_files: dict[str, Path],
    server_context: ssl.SSLContext,
) -> None:
    ours = OurServer()
    port = await ours.start(nursery, server_context)
    url = f"wss://127.0.0.1:{port}/secure"

    # Control: without the CA, Node refuses our certificate.
    untrusting = await launch("ws_client.js", url)
    refusal = await untrusting.expect("error")
    assert "certificate" in refusal["message"]
    await untrusting.expect("close")

    client = await launch("ws_client.js", *client_args(url, "--ca", str(tls_files["ca"])))
    request, ws = await ours.connection()
    assert request.path == "/secure"
    assert (await client.expect("open"))["protocol"] == "chat.v2"
    big = os.urandom(MIB)
    with trio.fail_after(PEER_TIMEOUT):
        await client.command(op="send", text=TEXT)
        assert await ws.get_message() == TEXT
        await ws.send_message(big)
        large = await client.expect("message")
        assert (large["length"], large["sha256"]) == (MIB, sha256(big))
        await ws.ping(b"tls ping")
        await client.command(op="close", code=4006, reason=CLOSE_REASON)
        with pytest.raises(ConnectionClosed) as raised:
            await ws.get_message()
    assert raised.value.reason == CloseReason(4006, CLOSE_REASON)
    assert (await client.expect("close"))["code"] == 4006
    assert await client.finish() == 0


# ---------------------------------------------------------------------------
# permessage-deflate, both directions: negotiated on both sides, and every
# message travels compressed both ways (our counters say so).

DEFLATE_TEXT = "compress me " * 300
DEFLATE_BINARY = b"\x00\x01\x02\x03" * 4000


def check_compressed_both_ways(ws: WebSocketConnection) -> None:
    """DEFLATE_TEXT and DEFLATE_BINARY went compressed each way."""
    assert ws.compression is not None
    deflate = ws._deflate
    assert deflate is not None
    total = len(DEFLATE_TEXT.encode()) + len(DEFLATE_BINARY)
    assert deflate.bytes_sent_uncompressed == total
    assert deflate.bytes_received_uncompressed == total
    assert deflate.bytes_received_compressed < deflate.bytes_received_uncompressed // 10


async def test_client_negotiates_deflate_with_node_server(launch: Launch) -> None:
    server, port = await start_node_server(launch, "--deflate")
    with trio.fail_after(PEER_TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/", compression="deflate") as ws:
            connection = await server.expect("connection")
            assert connection["extensions"].startswith("permessage-deflate")
            assert ws.compression is not None
            await ws.send_message(DEFLATE_TEXT)
            await ws.send_message(DEFLATE_BINARY)
            assert await server.expect("message") == {
                "event": "message",
                "type": "text",
                "text": DEFLATE_TEXT,
            }
            binary = await server.expect("message")
            assert binary["sha256"] == sha256(DEFLATE_BINARY)
            assert await ws.get_message() == DEFLATE_TEXT
            assert await ws.get_message() == DEFLATE_BINARY
            check_compressed_both_ways(ws)
    assert (await server.expect("close"))["code"] == 1000
    assert await server.finish() == 0


async def test_node_client_negotiates_deflate_with_our_server(
    launch: Launch, nursery: trio.Nursery
) -> None:
    ours = OurServer(compression="deflate")
    port = await ours.start(nursery)
    client = await launch("ws_client.js", *client_args(f"ws://127.0.0.1:{port}/", "--deflate"))
    _, ws = await ours.connection()
    upgrade = await client.expect("upgrade")
    assert upgrade["headers"]["sec-websocket-extensions"].startswith("permessage-deflate")
    opened = await client.expect("open")
    assert opened["extensions"].startswith("permessage-deflate")
    assert ws.compression is not None
    with trio.fail_after(PEER_TIMEOUT):
        await client.command(op="send", text=DEFLATE_TEXT)
        await client.send_binary(DEFLATE_BINARY)
        assert await ws.get_message() == DEFLATE_TEXT
        assert await ws.get_message() == DEFLATE_BINARY
        await ws.send_message(DEFLATE_TEXT)
        await ws.send_message(DEFLATE_BINARY)
    assert (await client.expect("message"))["text"] == DEFLATE_TEXT
    assert (await client.expect("message"))["sha256"] == sha256(DEFLATE_BINARY)
    check_compressed_both_ways(ws)
