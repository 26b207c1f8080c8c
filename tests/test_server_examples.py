"""examples/protected_server.py and examples/unix_socket.py finish by
themselves and print what their headers promise (subprocesses of this
interpreter, this checkout first on PYTHONPATH, each waited for)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SUBPROCESS_TIMEOUT = 30


def run_script(name: str) -> subprocess.CompletedProcess[str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_protected_server_demo_answers_each_request_as_described() -> None:
    result = run_script("protected_server.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"listening on ws://127\.0\.0\.1:\d+/", lines[0])
    assert lines[1:] == [
        "GET /health -> HTTP/1.1 200 OK",
        "GET / -> HTTP/1.1 401 Unauthorized",
        "GET / with password -> HTTP/1.1 426 Upgrade Required",
        "huge header -> HTTP/1.1 431 Request Header Fields Too Large",
        "no password -> refused with 401",
        "wrong password -> refused with 401",
        "foreign origin -> refused with 403",
        "good credentials -> alice said: hello",
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")
@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_unix_socket_demo_echoes_and_removes_its_socket_file() -> None:
    result = run_script("unix_socket.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"listening on .+echo\.sock", lines[0])
    assert lines[1:] == ["client got: hello over a socket file", "socket file removed: True"]
