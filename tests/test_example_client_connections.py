"""examples/client_connections.py runs by itself and shows what its header
says: a Unix socket, a redirect, and the phase of each failed open.

The script runs as a subprocess of this interpreter, with this checkout
first on PYTHONPATH, and is waited for with a timeout. Its DNS step needs no
network: a ``.invalid`` name fails whether or not a DNS server answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "client_connections.py"
SUBPROCESS_TIMEOUT = 30


@pytest.mark.time_limit(SUBPROCESS_TIMEOUT + 10)
def test_tour_finishes_by_itself_and_reports_each_phase() -> None:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONUNBUFFERED": "1",
        # The "unknown host" step asks the system resolver about a .invalid
        # name; without a reachable DNS server, let glibc give up quickly
        # (it fails with EAI_AGAIN, still a DNS failure).
        "RES_OPTIONS": "timeout:1 attempts:1",
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    if hasattr(socket, "AF_UNIX"):
        assert "1. over the Unix socket: hello, you asked for /events" in out
    assert "2. without max_redirects: server rejected the WebSocket handshake with HTTP 301" in out
    assert "2. with max_redirects=3: now at /new: hello, you asked for /new" in out
    assert "3. refused: phase=connect (cause: ConnectionRefusedError)" in out
    assert "3. unknown host: phase=dns" in out
    assert "3. TLS to a plain server: phase=tls" in out
    assert "3. HTTP 404: phase=http: server rejected the WebSocket handshake with HTTP 404" in out
