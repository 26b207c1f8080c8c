"""The runnable examples in examples/ work as their headers say.

The scripts run as subprocesses of this interpreter (with this checkout on
PYTHONPATH); every subprocess started here is waited for or terminated by
its own PID. ``heartbeat()`` is imported from its file and tested over
in-memory streams with the autojump clock.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing
from conftest import open_pair

from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SUBPROCESS_TIMEOUT = 30
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals/select")


def script_env() -> dict[str, str]:
    """The environment for an example: this checkout importable first."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=script_env(),
        check=False,
    )


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------
# Every script (what each one does is tested beside it: here for the first
# ones, tests/test_example*.py and test_server_examples.py for the others)

#: Every example script, as its path under examples/.
SCRIPTS = sorted(path.relative_to(EXAMPLES).as_posix() for path in EXAMPLES.rglob("*.py"))
#: The modules a program may import from the package.
PUBLIC_MODULES = {"trio_websocket", "trio_websocket.testing", "trio_websocket.redis_hub"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_has_a_header_saying_how_to_run_it(name: str) -> None:
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    header = ast.get_docstring(ast.parse(source))
    assert header, "a header docstring comes first"
    assert f"python examples/{name}" in header


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_uses_only_the_public_api(name: str) -> None:
    # Examples are what users copy: nothing private, not even once.
    tree = ast.parse((EXAMPLES / name).read_text(encoding="utf-8"))
    from_namespace = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trio_websocket":
                    assert alias.name in PUBLIC_MODULES, alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trio_websocket"):
            assert node.module in PUBLIC_MODULES, node.module
            assert not [a.name for a in node.names if a.name.startswith("_")]
            from_namespace |= node.module == "trio_websocket"
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not (
            node.attr.startswith("__") and node.attr.endswith("__")
        ):
            # (The script's own classes may keep private state.)
            assert ast.unparse(node.value) == "self", f"line {node.lineno}: {ast.unparse(node)}"
    assert from_namespace, "imports from trio_websocket itself"


def test_every_script_is_seen() -> None:
    assert {"demo.py", "live/server.py", "redis_chat/chat.py"} <= set(SCRIPTS)


# ----------------------------------------------------------------------
# demo.py


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_demo_finishes_by_itself_and_reports_each_step() -> None:
    result = run_script("demo.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert re.search(r"^server: listening on port \d+$", out, re.MULTILINE)
    assert re.search(r"^client: connected to ws://127\.0\.0\.1:\d+/", out, re.MULTILINE)
    assert "client: sent text 'hello', got back 'hello'" in out
    assert "client: sent binary b'\\x00\\xff', got back b'\\x00\\xff'" in out
    assert "client: ping answered by a pong" in out
    assert "every pong came back in time" in out
    assert "server: client closed with code 1000 (NORMAL_CLOSURE)" in out
    assert "client: closed with code 1000 (NORMAL_CLOSURE)" in out
    assert out.rstrip().endswith("server: stopped")
    assert "ERROR" not in out


# ----------------------------------------------------------------------
# echo_server.py and client.py


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """One line of the process's stdout, or fail after ``timeout`` s."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"no output within {timeout} s")
    line = process.stdout.readline()
    if not line:
        assert process.stderr is not None
        pytest.fail(f"the process exited early: {process.stderr.read()}")
    return line


@pytest.fixture
def echo_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """examples/echo_server.py on a free port, and the URL it printed."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    try:
        line = read_line(process, SUBPROCESS_TIMEOUT)
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
        assert match, f"no URL in {line!r}"
        assert int(match.group(1)) != 0, "the real port is printed, not 0"
        yield process, match.group(0)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@POSIX_ONLY
@pytest.mark.time_limit(2 * SUBPROCESS_TIMEOUT + 10)
def test_client_prints_the_echo_of_each_message(
    echo_server: tuple[subprocess.Popen[str], str],
) -> None:
    _, url = echo_server
    result = run_script("client.py", url, "hello", "second message")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"connected to {url}",
        "> hello",
        "< hello",
        "> second message",
        "< second message",
        "closed with code 1000 (NORMAL_CLOSURE)",
    ]


@POSIX_ONLY
@pytest.mark.time_limit(2 * SUBPROCESS_TIMEOUT + 10)
def test_echo_server_stops_cleanly_on_ctrl_c(
    echo_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, _ = echo_server
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == 0, err
    assert err.strip() == "stopped"


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_client_reports_a_failed_connection_and_exits_nonzero() -> None:
    # A bound socket that does not listen: connecting is refused.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        result = run_script("client.py", f"ws://127.0.0.1:{port}/", "hello")
    assert result.returncode == 1
    assert result.stderr.startswith("error: could not open a WebSocket")
    assert "Traceback" not in result.stderr
    assert "> hello" not in result.stdout


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_client_rejects_a_non_websocket_url() -> None:
    result = run_script("client.py", "http://127.0.0.1/", "hello")
    assert result.returncode == 2
    assert "ws or wss" in result.stderr
    assert "Traceback" not in result.stderr


async def run_client_against(handler: object, *messages: str) -> subprocess.CompletedProcess[bytes]:
    """Run client.py against an in-process server running ``handler``."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        with trio.fail_after(SUBPROCESS_TIMEOUT):
            result = await trio.run_process(
                [
                    sys.executable,
                    str(EXAMPLES / "client.py"),
                    f"ws://127.0.0.1:{server.port}/",
                    *messages,
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=script_env(),
            )
        nursery.cancel_scope.cancel()
    return result


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
async def test_client_reports_a_close_by_the_server_and_exits_nonzero() -> None:
    async def close_after_first_message(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        await ws.aclose(4000, "enough")

    result = await run_client_against(close_after_first_message, "one", "two")
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("error: the server closed the connection")
    assert "4000" in stderr
    assert "Traceback" not in stderr
    assert "> two" not in stdout


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
async def test_client_reports_a_rejected_handshake_and_exits_nonzero() -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"members only")

    result = await run_client_against(reject, "hello")
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("error: could not open a WebSocket")
    assert "403" in stderr
    assert "Traceback" not in stderr


# ----------------------------------------------------------------------
# heartbeat.py


@pytest.fixture(scope="module")
def heartbeat_module() -> ModuleType:
    return load_example("heartbeat")


PING_OPCODE_FIN = 0x89


class CuttableStream(trio.abc.Stream):
    """A stream whose traffic can be cut, as by a dead network path or a
    frozen peer: once ``cut`` is set, what is sent is silently dropped and
    nothing more is received. Also counts the ping frames sent through it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.cut = False
        self.pings_sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.cut:
            await trio.lowlevel.checkpoint()
            return
        if data and data[0] == PING_OPCODE_FIN:
            self.pings_sent += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.cut:
            await trio.sleep_forever()  # the data never arrives
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_heartbeat_keeps_pinging_while_pongs_come(
    heartbeat_module: ModuleType, autojump_clock: trio.testing.MockClock
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    counted = CuttableStream(client_stream)
    async with trio.open_nursery() as nursery:
        client, server = await open_pair(nursery, counted, server_stream)
        with trio.move_on_after(10.5) as scope:
            await heartbeat_module.heartbeat(client, 1.0, 2.0)
        assert scope.cancelled_caught, "heartbeat only stops when cancelled"
        # One ping at once, then one every 2 s: 0, 2, 4, 6, 8, 10.
        assert counted.pings_sent == 6
        assert client.closed is None
        assert server.closed is None
        await client.send_message("still there?")
        assert await server.get_message() == "still there?"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("cut_side", ["client", "server"])
async def test_heartbeat_raises_too_slow_when_the_peer_stops_answering(
    heartbeat_module: ModuleType, autojump_clock: trio.testing.MockClock, cut_side: str
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    cuttable = CuttableStream(client_stream if cut_side == "client" else server_stream)
    streams = (cuttable, server_stream) if cut_side == "client" else (client_stream, cuttable)
    timeout, interval = 1.0, 2.0
    async with trio.open_nursery() as nursery:
        client, _server = await open_pair(nursery, *streams)
        start = trio.current_time()

        async def cut_after(seconds: float) -> None:
            await trio.sleep(seconds)
            cuttable.cut = True

        nursery.start_soon(cut_after, 5.0)
        # If the heartbeat never gave up, this would stop it at 60 s and
        # the time check below would fail.
        with trio.move_on_after(60), pytest.raises(trio.TooSlowError):
            await heartbeat_module.heartbeat(client, timeout, interval)
        elapsed = trio.current_time() - start
        # Pings at 0, 2 and 4 s are answered; the one at 6 s is not, and
        # the heartbeat gives up `timeout` seconds later.
        assert elapsed == pytest.approx(6.0 + timeout)
        nursery.cancel_scope.cancel()


async def test_heartbeat_returns_when_the_connection_closes(
    heartbeat_module: ModuleType, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        client, server = await open_pair(nursery)

        async def close_after(seconds: float) -> None:
            await trio.sleep(seconds)
            await server.aclose(1001, "going away")

        nursery.start_soon(close_after, 3.0)
        with trio.fail_after(10):
            await heartbeat_module.heartbeat(client, 1.0, 2.0)
        assert client.closed is not None
        assert client.closed.code == 1001
        with pytest.raises(ConnectionClosed):
            await client.ping()
