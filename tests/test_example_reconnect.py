"""examples/reconnect.py works as its header says.

The demo runs as a subprocess of this interpreter (this checkout first on
PYTHONPATH, waited for with a timeout); ``follow()`` is also imported from
the file and run in-process against the example's own flaky feed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing
from conftest import accept_by_hand, open_pair, read_request_head

from trio_websocket import ConnectionClosed, serve_websocket, wrap_client_stream

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "reconnect.py"
SUBPROCESS_TIMEOUT = 30


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_reconnect", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )


def test_header_says_why_not_async_for() -> None:
    header = ast.get_docstring(ast.parse(SCRIPT.read_text(encoding="utf-8")))
    assert header
    assert "async for" in header  # the hazard is explained where the pattern is shown


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_demo_follows_the_feed_through_reconnections_and_exits_by_itself() -> None:
    result = run_script()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("connected")] == [
        "connected (attempt 1), subscribing",
        "connected (attempt 2), subscribing",
        "connected (attempt 3), subscribing",
    ]
    assert [line for line in lines if line.startswith("<")] == [
        "< tick 0",
        "< tick 1",
        "< tick 2",
    ] * 3
    assert lines[-1].startswith("done: 9 messages over 3 connections, last drop: ConnectionClosed")
    assert "code=1001" in lines[-1]


def test_bad_url_is_a_usage_error() -> None:
    result = run_script("http://127.0.0.1/")
    assert result.returncode == 2
    assert "ws or wss" in result.stderr
    assert "Traceback" not in result.stderr


async def test_follow_resubscribes_on_each_connection_and_stops_at_the_limit(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    subscriptions = 0

    async def counting_feed(request: object) -> None:
        nonlocal subscriptions
        subscriptions += 1
        await example.flaky_feed(request)

    server = await nursery.start(serve_websocket, counting_feed, "127.0.0.1", 0, None)
    with trio.fail_after(15):
        received = await example.follow(f"ws://127.0.0.1:{server.port}/feed", 5)
    assert received == 5
    assert subscriptions == 2  # three ticks from the first, two from the second
    out = capsys.readouterr().out
    assert out.count("subscribing") == 2
    assert "done: 5 messages over 2 connections" in out


async def test_heartbeat_aborts_a_connection_whose_peer_went_silent(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    example = load_example()
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def silent_peer() -> None:
        await accept_by_hand(server_stream, await read_request_head(server_stream))
        await trio.sleep_forever()  # never reads again: no pong, no close

    nursery.start_soon(silent_peer)
    ws = await wrap_client_stream(nursery, client_stream, "example.com", "/feed")
    start = trio.current_time()
    await example.heartbeat(ws, 5, 10)
    # One quiet interval, a ping that waited out its timeout, a bounded close.
    assert trio.current_time() - start == pytest.approx(5 + 10 + 1)
    assert ws.closed is not None
    with pytest.raises(ConnectionClosed):
        await ws.get_message()  # what makes the reconnecting client reconnect


async def test_heartbeat_keeps_pinging_a_live_peer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    example = load_example()
    client, server = await open_pair(nursery)

    async def serve_reads() -> None:
        try:
            await server.get_message()
        except ConnectionClosed:
            pass

    nursery.start_soon(serve_reads)
    with trio.move_on_after(60):
        await example.heartbeat(client, 5, 10)
        pytest.fail("the heartbeat gave up on a live peer")
    assert client.closed is None
    await client.aclose()
