"""Every code block in README.md and docs/*.rst is checked.

Each Python block is one test (its id: file and line). A comment just
before the block says how it is checked; without one, it is ``run``::

    .. docs-test: MODE [ARGUMENT ...]          (reStructuredText)
    <!-- docs-test: MODE [ARGUMENT ...] -->    (README.md)

Every Python block is compiled (``await`` allowed at the top level) and
checked for undefined names (ruff's F821), and then, by mode:

- ``run``: a complete module: it runs in a subprocess (as a module, not as
  ``__main__``, so an ``if __name__ == "__main__"`` part is left out) and
  must exit 0 within ``RUN_TIMEOUT``. Its own imports must be enough.
- ``fragment NAME ...``: a piece of a program that takes NAMEs from the
  program around it (``ws``, ``nursery``, a handler...). Not run: the
  names checks are the proof that nothing else is missing.
- ``tests NAME ...``: pytest-trio tests (``trio_mode = true``): each
  ``test_`` function runs here under Trio, with the ``nursery`` and
  ``autojump_clock`` fixtures when it asks for them, and NAMEs given from
  ``CONTEXT`` (real implementations, below).
- ``server``: a program that serves on port 8000: it runs with a free port
  instead and must accept a WebSocket connection; then it is killed.
- ``client PEER [PORT]``: a program that connects to 127.0.0.1 on PORT
  (8000 unless given): it runs against ``PEERS[PEER]``, a server run here
  on a free port, and must exit 0.
- ``check NAME``: the block is loaded and ``CHECKS[NAME]`` exercises what
  it defines.

A literal block (``::``) is refused: each block names its language
(``.. code-block:: python``, ``text``, ``sh``...), so that no Python block
escapes by accident. Shell and text blocks that run ``python -m
trio_websocket`` have their arguments parsed by the command line's own
parser.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_websocket
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket import testing as ws_testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.rst"))
README = ROOT / "README.md"
RUN_TIMEOUT = 30.0
MODES = {"run", "fragment", "tests", "server", "client", "check"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first line of code
    language: str
    source: str
    mode: str
    arguments: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marker(lines: list[str], index: int, pattern: str) -> tuple[str, tuple[str, ...]]:
    """The docs-test comment on the last non-blank line before ``index``."""
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous >= 0:
        found = re.fullmatch(pattern, lines[previous].strip())
        if found:
            mode, *arguments = found.group(1).split()
            return mode, tuple(arguments)
    return "run", ()


def rst_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = re.fullmatch(r"(\s*)\.\. code-block::\s*(\S+)\s*", line)
        if directive is None:
            if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
                raise AssertionError(
                    f"{path.name}:{index + 1}: a literal block (::); name its language "
                    "with .. code-block:: (see tests/test_docs_code.py)"
                )
            index += 1
            continue
        indent = len(directive.group(1))
        mode, arguments = _marker(lines, index, r"\.\. docs-test: (.+)")
        body_at = index + 1
        while body_at < len(lines) and re.match(r"\s+:[\w-]+:", lines[body_at]):
            body_at += 1  # the directive's options
        while body_at < len(lines) and not lines[body_at].strip():
            body_at += 1
        end = body_at
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        body = lines[body_at:end]
        while body and not body[-1].strip():
            body.pop()
        margin = min(len(text) - len(text.lstrip()) for text in body if text.strip())
        source = "\n".join(text[margin:] for text in body) + "\n"
        blocks.append(Block(path, body_at + 1, directive.group(2), source, mode, arguments))
        index = end
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[index].strip())
        if fence is None:
            index += 1
            continue
        mode, arguments = _marker(lines, index, r"<!-- docs-test: (.+) -->")
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        source = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(path, index + 2, fence.group(1) or "text", source, mode, arguments))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOCS for block in rst_blocks(path)] + markdown_blocks(README)
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language in ("python", "python3")]
COMMAND_BLOCKS = [block for block in ALL_BLOCKS if block.language in ("sh", "text", "console")]


# ----------------------------------------------------------------------
# Names the ``tests`` blocks take from the page around them


async def chat_handler(request: WebSocketRequest) -> None:
    """docs/testing.rst's chat room: a name in the query, or 400."""
    if "name=" not in request.path:
        await request.reject(400, body=b"a name is needed\n")
        return
    ws = await request.accept()
    await ws.send_message("welcome")


async def strict_handler(request: WebSocketRequest) -> None:
    """Raises ValueError (closing with 1011) on a message that is not JSON."""
    ws = await request.accept()
    json.loads(await ws.get_message())


async def my_answer(ws: WebSocketConnection) -> None:
    await ws.send_message("answer")


async def echo(request: WebSocketRequest) -> None:
    """README.md's echo handler."""
    ws = await request.accept()
    while True:
        message = await ws.get_message()
        await ws.send_message(message)


def _heartbeat() -> Callable[..., Awaitable[None]]:
    spec = importlib.util.spec_from_file_location("docs_heartbeat", ROOT / "examples/heartbeat.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[..., Awaitable[None]] = module.heartbeat
    return function


CONTEXT: dict[str, Callable[[], Any]] = {
    "trio": lambda: trio,
    "pytest": lambda: pytest,
    "chat_handler": lambda: chat_handler,
    "strict_handler": lambda: strict_handler,
    "my_answer": lambda: my_answer,
    "echo": lambda: echo,
    "heartbeat": _heartbeat,
    **{name: partial(getattr, trio_websocket, name) for name in trio_websocket.__all__},
    **{name: partial(getattr, ws_testing, name) for name in ws_testing.__all__},
}


# ----------------------------------------------------------------------
# Compiling and names


def test_the_blocks_are_found() -> None:
    # A change to the extractor that lost blocks would pass every test below.
    assert len(PYTHON_BLOCKS) >= 70
    assert {block.path.name for block in PYTHON_BLOCKS} >= {"README.md", "faq.rst", "testing.rst"}
    for block in ALL_BLOCKS:
        assert block.mode in MODES, f"{block.id}: unknown docs-test mode {block.mode!r}"
        if block.language not in ("python", "python3"):
            assert block.mode == "run" and not block.arguments, f"{block.id}: not Python"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.id)
def test_block_compiles_and_names_are_defined(block: Block) -> None:
    compile(block.source, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    given = list(block.arguments) if block.mode in ("fragment", "tests") else []
    if block.mode == "tests":
        unknown = set(given) - CONTEXT.keys()
        assert not unknown, f"{block.id}: no CONTEXT for {sorted(unknown)}"
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run(
        [
            sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache",
            "--select", "F821", "--output-format", "json",
            "--config", f"builtins = {json.dumps(given)}",
            "--stdin-filename", "block.py", "-",
        ],
        input=block.source, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    problems = [
        f"line {block.line + item['location']['row'] - 1}: {item['message']}"
        for item in json.loads(result.stdout or "[]")
    ]
    assert not problems, f"{block.id} ({block.mode}): {problems}"


# ----------------------------------------------------------------------
# Running


def _blocks(mode: str) -> list[Block]:
    return [block for block in PYTHON_BLOCKS if block.mode == mode]


def _environment() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _program(block: Block, tmp_path: Path, port: int | None = None, *, old: str = "8000") -> Path:
    source = block.source
    if port is not None:
        assert old in source, f"{block.id}: no port {old} to replace"
        source = source.replace(old, str(port))
    path = tmp_path / "block.py"
    path.write_text(source, encoding="utf-8")
    return path


def _as_module(path: Path) -> list[str]:
    return [sys.executable, "-c", f"import runpy; runpy.run_path({str(path)!r}, run_name='block')"]


@pytest.mark.parametrize("block", _blocks("run"), ids=lambda block: block.id)
def test_run_block(block: Block, tmp_path: Path) -> None:
    result = subprocess.run(
        _as_module(_program(block, tmp_path)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=tmp_path,
        env=_environment(),
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("block", _blocks("server"), ids=lambda block: block.id)
def test_server_block(block: Block, tmp_path: Path) -> None:
    port = _free_port()
    path = _program(block, tmp_path, port)
    process = subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_environment(),
    )

    async def talk() -> None:
        with trio.fail_after(RUN_TIMEOUT):
            while True:  # until the program listens (bounded above)
                try:
                    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                        await ws.send_message("hello")
                        assert await ws.get_message()  # an echo, a greeting...
                        return
                except (OSError, trio_websocket.HandshakeError):
                    assert process.poll() is None, "the program stopped"
                    await trio.sleep(0.1)

    try:
        trio.run(talk)
    finally:
        process.kill()
        _, errors = process.communicate(timeout=RUN_TIMEOUT)
    assert b"Traceback" not in errors, errors.decode()


async def reverser(request: WebSocketRequest) -> None:
    """docs/getting-started.rst's server: a greeting, then each text reversed."""
    ws = await request.accept()
    await ws.send_message(f"welcome, {ws.remote}")
    try:
        for _ in range(100):
            await ws.send_message((await ws.get_message())[::-1])
    except ConnectionClosed:
        pass


async def echo_until_closed(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        for _ in range(100):
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


def _self_signed_server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


Handler = Callable[[WebSocketRequest], Awaitable[None]]
#: A peer for ``client`` blocks: its handler, its TLS context (None:
#: ws://), and how the lines the program prints must start.
PEERS: dict[str, tuple[Handler, Callable[[], ssl.SSLContext | None], list[str]]] = {
    "echo": (echo_until_closed, lambda: None, ["hello"]),
    "reverser": (reverser, lambda: None, ["welcome, ", "oirt", "tekcosbew"]),
    # A certificate no client trusts: only a context that checks nothing connects.
    "tls-echo": (echo_until_closed, _self_signed_server_context, ["hello"]),
}


@pytest.mark.parametrize("block", _blocks("client"), ids=lambda block: block.id)
def test_client_block(block: Block, tmp_path: Path) -> None:
    peer, *port = block.arguments
    handler, tls, expected = PEERS[peer]

    async def main() -> str:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, tls())
            path = _program(block, tmp_path, server.port, old=port[0] if port else "8000")
            with trio.fail_after(RUN_TIMEOUT):
                result = await trio.run_process(
                    [sys.executable, str(path)],
                    capture_stdout=True,
                    capture_stderr=True,
                    cwd=tmp_path,
                    env=_environment(),
                    check=False,
                )
            nursery.cancel_scope.cancel()
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    printed = trio.run(main).splitlines()
    assert len(printed) == len(expected), printed
    for line, start in zip(printed, expected, strict=True):
        assert line.startswith(start), printed


def _namespace(block: Block) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_block"}
    if block.mode == "tests":
        namespace.update({name: CONTEXT[name]() for name in block.arguments})
    exec(compile(block.source, block.id, "exec"), namespace)
    return namespace


def _run_test(test: Callable[..., Awaitable[None]]) -> None:
    wants = inspect.signature(test).parameters
    clock = trio.testing.MockClock(autojump_threshold=0) if "autojump_clock" in wants else None

    async def with_fixtures() -> None:
        arguments: dict[str, Any] = {}
        if clock is not None:
            arguments["autojump_clock"] = clock
        if "nursery" in wants:
            async with trio.open_nursery() as nursery:
                await test(**arguments, nursery=nursery)
                nursery.cancel_scope.cancel()
        else:
            await test(**arguments)

    trio.run(with_fixtures, clock=clock)


@pytest.mark.parametrize("block", _blocks("tests"), ids=lambda block: block.id)
def test_tests_block(block: Block) -> None:
    namespace = _namespace(block)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, f"{block.id}: no test_ function"
    for test in tests:
        _run_test(test)


# ----------------------------------------------------------------------
# Checks for blocks that define something to exercise


async def _check_room(namespace: dict[str, Any]) -> None:
    """docs/patterns.rst's Room: what one member says reaches every member."""
    room = namespace["Room"]()
    async with (
        ws_testing.open_memory_client(room.handler) as alice,
        ws_testing.open_memory_client(room.handler) as bob,
    ):
        while len(room.members) < 2:  # noqa: ASYNC110 - bounded by the caller's fail_after
            await trio.sleep(0.01)
        await alice.send_message("hello, room")
        assert await bob.get_message() == "hello, room"
        assert await alice.get_message() == "hello, room"
    assert callable(namespace["main"])


CHECKS: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {"room": _check_room}


@pytest.mark.parametrize("block", _blocks("check"), ids=lambda block: block.id)
def test_checked_block(block: Block) -> None:
    (name,) = block.arguments
    namespace = _namespace(block)

    async def check() -> None:
        with trio.fail_after(RUN_TIMEOUT):
            await CHECKS[name](namespace)

    trio.run(check)


# ----------------------------------------------------------------------
# Command lines


def _cli_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for block in COMMAND_BLOCKS:
        for line in block.source.splitlines():
            line = line.split("#", 1)[0].strip().rstrip("&").strip()
            if line.startswith("python -m trio_websocket"):
                commands.append((block.id, shlex.split(line)[3:]))
    return commands


@pytest.mark.parametrize(("where", "arguments"), _cli_commands(), ids=lambda value: str(value))
def test_command_line_in_the_docs_parses(where: str, arguments: list[str]) -> None:
    from trio_websocket._extras import cli as _cli

    if arguments[:1] == ["serve"]:
        _cli._server_parser().parse_args(arguments[1:])
    else:
        _cli._client_parser().parse_args(arguments)
