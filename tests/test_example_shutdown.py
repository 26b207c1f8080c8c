"""examples/graceful_shutdown.py: the demo finishes by itself, and in
``--serve`` mode a real SIGTERM from outside closes the clients with 1001
and ends the process cleanly.

Like tests/test_examples.py, scripts run as subprocesses of this
interpreter with this checkout first on PYTHONPATH; every process started
here is waited for or stopped by its own PID.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_websocket import CloseReason, ConnectionClosed, open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "graceful_shutdown.py"
SUBPROCESS_TIMEOUT = 30
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")


def script_env() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


@POSIX_ONLY
@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_demo_shuts_down_on_its_own_sigterm_and_reports() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=script_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"server: listening on ws://127\.0\.0\.1:\d+/", lines[0])
    assert "client 1: sent 'hello', got 'hello'" in lines
    assert "server: got SIGTERM, shutting down" in lines
    # Both clients hear the server go away, the stuck one included.
    assert "client 1: closed with 1001 (server restarting)" in lines
    assert "client 2: closed with 1001 (server restarting)" in lines
    assert "server: / closed with code 1001" in lines
    assert "server: 1 closed cleanly, 1 forced, 0 refused" in lines
    assert lines[-1] == "server: stopped"


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"no output within {timeout} s")
    return process.stdout.readline()


@POSIX_ONLY
@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_serve_mode_closes_clients_with_1001_on_sigterm_from_outside() -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    try:
        line = read_line(process, SUBPROCESS_TIMEOUT)
        match = re.search(r"ws://127\.0\.0\.1:\d+/", line)
        assert match, line
        url = match.group(0)
        reasons: list[CloseReason] = []

        async def client() -> None:
            with trio.fail_after(SUBPROCESS_TIMEOUT):
                async with open_websocket_url(url) as ws:
                    await ws.send_message("before")
                    assert await ws.get_message() == "before"
                    process.send_signal(signal.SIGTERM)
                    try:
                        await ws.get_message()
                    except ConnectionClosed as closed:
                        reasons.append(closed.reason)

        trio.run(client)
        out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert process.returncode == 0, err
        assert reasons == [CloseReason(1001, "server restarting")]
        assert "server: 1 closed cleanly, 0 forced, 0 refused" in out.splitlines()
        assert out.splitlines()[-1] == "server: stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
