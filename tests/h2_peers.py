"""The outside HTTP/2 peers of tests/test_interop_h2.py (RFC 8441,
WebSockets over HTTP/2), started and stopped from Trio tests.

The peers:

- nghttpx (Debian's ``nghttp2-proxy``), a reverse proxy that speaks RFC 8441
  on both sides (nghttp2 1.52 here; no setting needed): an HTTP/1.1
  WebSocket upgrade on its frontend becomes an extended CONNECT on an
  HTTP/2 backend (``proto=h2``; h2c, or TLS with ``tls``) when that backend
  sent SETTINGS_ENABLE_CONNECT_PROTOCOL, and an extended CONNECT on its
  HTTP/2 frontend (TLS with ALPN h2, or h2c by prior knowledge) becomes an
  HTTP/1.1 upgrade on an HTTP/1.1 backend. Its HTTP/2 backend connection
  carries every WebSocket of every frontend client.
- Node.js's built-in ``http2`` (no npm package): interop_js/h2_ws_server.js
  and interop_js/h2_ws_client.js.
- Hypercorn (PyPI, asyncio worker) serving hypercorn_echo.py's ASGI echo.

Rules:

- Programs come through tests/peers.py: a missing one is installed with
  apt-get when this machine allows it, else its tests are skipped (failed
  under ``CI=true``).
- Every peer listens on 127.0.0.1 only, on a free port: the OS picks it for
  the Node and Hypercorn servers (they print it); for nghttpx, which cannot
  be told to, a port is picked by binding port 0 and closing it.
- Every peer runs in its own process group, so that what it spawns goes
  with it. It is stopped by its own PID: stdin closed (the Node and
  Hypercorn scripts stop when it ends; nghttpx gets SIGTERM at once), then
  SIGTERM, then SIGKILL, each wait bounded; then SIGKILL to its group for
  anything left.
- Every wait is bounded (``trio.fail_after``): a peer that does not start,
  print or finish in time fails the test with its command, exit status and
  the tail of its output and log in the message.
- A peer's stdout is read as JSON lines (events); its stderr and its log
  files are kept in the test's folder; the tail of each goes into a
  failure's message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio
import trustme
from peers import require_module, require_program

HERE = Path(__file__).parent
JS_DIR = HERE / "interop_js"
HOST = "127.0.0.1"

#: How long a peer has to start listening, or to print what is awaited
#: (seconds).
START_TIMEOUT = 15
#: How much of a peer's stdout is kept for failure messages (bytes).
OUTPUT_KEPT = 64 * 1024
#: How long a stopping peer gets at each step (stdin closed, SIGTERM).
STOP_GRACE = 3


def require_nghttpx() -> str:
    """The ``nghttpx`` executable (Debian's nghttp2-proxy)."""
    return require_program(
        "nghttpx",
        peer="nghttpx",
        apt_package="nghttp2-proxy",
        how_to_get="install nghttp2's proxy (Debian: apt-get install nghttp2-proxy)",
    )


def require_node() -> str:
    """The ``node`` executable; its built-in http2 module is all we need."""
    return require_program(
        "node",
        peer="Node.js",
        apt_package="nodejs",
        how_to_get="install Node.js (Debian: apt-get install nodejs)",
    )


def require_hypercorn() -> None:
    """Hypercorn must be importable by this Python (requirements-dev.txt)."""
    require_module("hypercorn")


# ---------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, and a certificate for 127.0.0.1 and localhost (with
    its chain) and its key, issued by that CA."""

    ca: Path
    cert: Path
    key: Path


def write_tls_files(ca: trustme.CA, folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(HOST, "localhost")
    files = TlsFiles(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(files.cert), append=index > 0)
    issued.private_key_pem.write_to_path(str(files.key))
    return files


# ---------------------------------------------------------------------------
# A running peer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(none)"
    return text[-limit:] if text else "(empty)"


class PeerProcess:
    """One outside program a test started: its process, the JSON events it
    printed, and its logs."""

    def __init__(self, name: str, command: Sequence[str], folder: Path) -> None:
        self.name = name
        self.command = list(command)
        self.folder = folder
        self.stderr_path = folder / f"{name}.stderr.txt"
        #: The tail of what it printed on stdout.
        self.output = bytearray()
        #: More log files to show when something fails (nghttpx's logs).
        self.extra_logs: list[Path] = []
        self.events: list[dict[str, Any]] = []
        self.process: trio.Process | None = None
        self.port: int | None = None
        self._changed = trio.Event()

    def describe(self) -> str:
        """The command, its exit status and the tail of its output and logs:
        for failure messages."""
        status = None if self.process is None else self.process.returncode
        parts = [f"--- {self.name}: {' '.join(self.command)} (exit status {status})"]
        parts.append(f"--- its stdout:\n{self.output[-3000:].decode(errors='replace')}")
        for path in (self.stderr_path, *self.extra_logs):
            parts.append(f"--- {path.name}:\n{_tail(path)}")
        return "\n".join(parts)

    def fail(self, problem: str) -> None:
        pytest.fail(f"{problem}\n{self.describe()}", pytrace=False)

    def matching(self, **fields: Any) -> list[dict[str, Any]]:
        """The events printed so far whose fields have these values."""
        return [e for e in self.events if all(e.get(k) == v for k, v in fields.items())]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        """The first event (printed so far or later) for which ``predicate``
        holds; fails the test after ``timeout`` seconds or when the peer
        exits first."""
        with trio.move_on_after(timeout):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                if self.process is not None and self.process.returncode is not None:
                    break
                changed = self._changed = trio.Event()
                await changed.wait()
        self.fail(f"{self.name} did not print the awaited event within {timeout} s")
        raise AssertionError("unreachable")

    async def _read_events(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while True:
            chunk = await stdout.receive_some(65536)
            if not chunk:
                break
            self.output += chunk
            del self.output[:-OUTPUT_KEPT]
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # not an event (Hypercorn's own log lines)
                if isinstance(event, dict):
                    self.events.append(event)
            self._changed.set()
        self._changed.set()

    async def _watch_exit(self) -> None:
        assert self.process is not None
        await self.process.wait()
        self._changed.set()


@asynccontextmanager
async def run_peer(
    name: str,
    command: Sequence[str],
    folder: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stops_at_end_of_input: bool = True,
) -> AsyncIterator[PeerProcess]:
    """Start ``command`` as the peer ``name``; stop it when the block ends
    (``stops_at_end_of_input``: closing its stdin is how to ask it).
    When the block fails, the peer's output and logs are printed (pytest
    shows them with the failure) and, on Python 3.11+, added to the
    exception as a note."""
    peer = PeerProcess(name, command, folder)
    stderr = _open_log(peer.stderr_path)
    try:
        process = await trio.lowlevel.open_process(
            peer.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        stderr.close()  # the child has its own copy
    peer.process = process
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(peer._read_events, process.stdout)
            nursery.start_soon(peer._watch_exit)
            try:
                yield peer
            except BaseException as exc:
                description = peer.describe()
                print(description)
                if hasattr(exc, "add_note"):
                    exc.add_note(description)
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process, stops_at_end_of_input=stops_at_end_of_input)
                # The readers finish at end of output; a grandchild that
                # kept the pipe open must not keep them waiting.
                nursery.cancel_scope.deadline = trio.current_time() + STOP_GRACE
    finally:
        with trio.CancelScope(shield=True):
            # (done already, unless starting the readers failed)
            await _stop(process, stops_at_end_of_input=stops_at_end_of_input)


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")  # the caller closes it


async def _stop(process: trio.Process, *, stops_at_end_of_input: bool) -> None:
    """Stop a peer by its PID: stdin closed (and a bounded wait, if that is
    how it stops), then SIGTERM, then SIGKILL (each with a bounded wait),
    then SIGKILL to its process group for anything it spawned. The process
    is reaped, so its PID cannot be reused before."""
    if process.returncode is None:
        if process.stdin is not None:
            try:
                await process.stdin.aclose()
            except trio.BrokenResourceError:
                pass
        first = (None,) if stops_at_end_of_input else ()
        for stop_signal in (*first, signal.SIGTERM, signal.SIGKILL):
            if stop_signal is not None and process.returncode is None:
                process.send_signal(stop_signal)
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
            if process.returncode is not None:
                break
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def wait_until_listening(
    peer: PeerProcess, port: int, timeout: float = START_TIMEOUT
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``
    (for peers that do not print their port)."""
    with trio.move_on_after(timeout):
        while True:
            if peer.process is not None and peer.process.returncode is not None:
                break
            try:
                stream = await trio.open_tcp_stream(HOST, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            peer.port = port
            return
    peer.fail(f"{peer.name} is not listening on {HOST}:{port} (waited up to {timeout} s)")


async def _wait_for_port_event(peer: PeerProcess) -> None:
    event = await peer.wait_for(lambda e: e.get("event") == "listening")
    peer.port = int(event["port"])


# ---------------------------------------------------------------------------
# The peers


@asynccontextmanager
async def run_nghttpx(
    folder: Path,
    *,
    backend_port: int,
    backend_proto: str,
    backend_tls: TlsFiles | None = None,
    frontend_tls: TlsFiles | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[PeerProcess]:
    """nghttpx as a reverse proxy from 127.0.0.1:``peer.port`` to the backend
    on 127.0.0.1:``backend_port``.

    ``backend_proto`` is ``"h2"`` (RFC 8441 to the backend: HTTP/1.1
    WebSocket clients at the front become extended CONNECT streams, all on
    one HTTP/2 connection) or ``"http/1.1"`` (RFC 8441 clients at the front
    become HTTP/1.1 upgrades). With ``backend_tls`` it talks TLS to the
    backend (SNI ``localhost``, verified against ``backend_tls.ca``); with
    ``frontend_tls`` its frontend is TLS (ALPN h2 and http/1.1), else
    cleartext (HTTP/1.1, and HTTP/2 by prior knowledge). ``extra_args`` go
    on its command line as they are.
    """
    nghttpx = require_nghttpx()
    port = free_port()
    backend = f"{HOST},{backend_port};;proto={backend_proto}"
    command = [
        nghttpx,
        "--conf=/dev/null",  # not the system's /etc/nghttpx/nghttpx.conf
        "--single-process",
        "--workers=1",
        "--no-ocsp",
        "--no-via",
        f"--frontend={HOST},{port}" + ("" if frontend_tls else ";no-tls"),
        f"--backend={backend}" + (";tls;sni=localhost" if backend_tls else ""),
        f"--errorlog-file={folder / 'nghttpx.error.log'}",
        f"--accesslog-file={folder / 'nghttpx.access.log'}",
        "--log-level=INFO",
    ]
    if backend_tls is not None:
        command.append(f"--cacert={backend_tls.ca}")
    command += extra_args
    if frontend_tls is not None:
        command += [str(frontend_tls.key), str(frontend_tls.cert)]
    async with run_peer("nghttpx", command, folder, stops_at_end_of_input=False) as peer:
        peer.extra_logs += [folder / "nghttpx.error.log", folder / "nghttpx.access.log"]
        await wait_until_listening(peer, port)
        yield peer


@asynccontextmanager
async def run_node_h2_server(
    folder: Path,
    *,
    tls: TlsFiles | None = None,
    protocols: Sequence[str] = (),
    page: Path | None = None,
) -> AsyncIterator[PeerProcess]:
    """interop_js/h2_ws_server.js: an RFC 8441 echo server (TLS with
    ``tls``, else h2c) on ``peer.port``. Its events say which session
    (HTTP/2 connection) and stream carried each WebSocket."""
    command = [require_node(), str(JS_DIR / "h2_ws_server.js")]
    if tls is not None:
        command += ["--cert", str(tls.cert), "--key", str(tls.key)]
    for protocol in protocols:
        command += ["--protocol", protocol]
    if page is not None:
        command += ["--page", str(page)]
    async with run_peer("node-h2-server", command, folder, cwd=JS_DIR) as peer:
        await _wait_for_port_event(peer)
        yield peer


async def run_node_h2_client(
    folder: Path,
    url: str,
    *,
    ca: Path | None = None,
    count: int = 3,
    protocols: Sequence[str] = (),
    close_code: int = 1000,
    close_reason: str = "bye",
    server_closes: bool = False,
    stagger_ms: int = 0,
    timeout: float = 20,
) -> dict[str, Any]:
    """Run interop_js/h2_ws_client.js to the end: ``count`` WebSockets on
    one HTTP/2 session to ``url``. Returns its JSON result; fails the test
    with its output when it prints none or overruns ``timeout``."""
    command = [require_node(), str(JS_DIR / "h2_ws_client.js"), url, "--count", str(count)]
    command += ["--close-code", str(close_code), "--close-reason", close_reason]
    command += ["--timeout", str(timeout), "--stagger", str(stagger_ms)]
    if ca is not None:
        command += ["--ca", str(ca)]
    for protocol in protocols:
        command += ["--protocol", protocol]
    if server_closes:
        command.append("--server-closes")
    async with run_peer("node-h2-client", command, folder, cwd=JS_DIR) as peer:
        result = await peer.wait_for(lambda e: "websockets" in e, timeout=timeout + 5)
    return result


@asynccontextmanager
async def run_hypercorn(
    folder: Path, *, tls: TlsFiles | None = None, protocols: Sequence[str] = ()
) -> AsyncIterator[PeerProcess]:
    """hypercorn_echo.py under Hypercorn: an ASGI WebSocket echo over HTTP/2
    (TLS with ALPN h2 with ``tls``, else h2c by prior knowledge) on
    ``peer.port``."""
    require_hypercorn()
    command = [sys.executable, str(HERE / "hypercorn_echo.py"), "--max-seconds", "300"]
    if tls is not None:
        command += ["--cert", str(tls.cert), "--key", str(tls.key)]
    for protocol in protocols:
        command += ["--protocol", protocol]
    async with run_peer("hypercorn", command, folder) as peer:
        await _wait_for_port_event(peer)
        yield peer
