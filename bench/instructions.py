"""Server instructions per echoed message, counted by callgrind: a measure
that does not move when other processes load the machine.

    python3.11 bench/instructions.py [--size N] [--tls] LABEL=TREE ...

For each LABEL=TREE (a checkout or worktree of this repo, imported through
PYTHONPATH) the echo server `servers/count_echo_server.py` runs under
`valgrind --tool=callgrind` twice, echoing a small and a larger number of
messages of `--size` bytes on one connection (this script is the client:
masked binary frames, the window of run.py in flight), and the difference
of the two totals over the difference of the message counts is printed:
the user-space instructions the server spends per echoed message, start-up
and handshake cancelled out. System calls (the kernel's copies) are not
counted; CPU time (`ab.py`) is the measure that includes them.
`--tls`: the same over TLS (the server as `trio_websocket_server.py
--tls`, this client with the stdlib `ssl` module, as loadgen.py --tls);
the server's instructions then include its share of the cipher and of
the TLS library's copies, the same for every tree.

Slow (the server runs ~50x slower under callgrind: about a minute per
tree) but repeatable to a fraction of a percent, where CPU time on a busy
2-core machine moves by 15 % between two runs of the same tree. Needs
valgrind (apt-get install -y valgrind) and the `ours` venv of run.py.
Everything talks to 127.0.0.1 only; every wait is bounded; only the
processes started here are stopped, by their own id.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen import connect
from run import WINDOWS
from stacks import BENCH
from venvs import python_of
from wsframes import OP_BINARY, build_frame

#: (fewer, more) messages per size: enough that the difference dwarfs the
#: noise of start-up, few enough to take about a minute under callgrind.
COUNTS = {16: (200, 2200), 1024: (200, 2200), 65536: (40, 240), 1048576: (10, 40)}
SERVER = BENCH / "servers" / "count_echo_server.py"
START_TIMEOUT = 180.0
RUN_TIMEOUT = 900.0


def echo(port, count, size, window, tls=False):
    """Send `count` masked frames of `size` bytes, `window` in flight, and
    read every echo back."""
    sock, leftover = connect(port, "ws", tls=tls)
    sock.settimeout(RUN_TIMEOUT)
    frame = build_frame(OP_BINARY, os.urandom(size), masked=True)
    echo_length = size + (2 if size < 126 else 4 if size < 65536 else 10)
    sent, received, needed = 0, len(leftover), count * echo_length
    with sock:
        while sent < min(window, count):
            sock.sendall(frame)
            sent += 1
        while received < needed:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"server closed after {received} of {needed} bytes")
            done_before = received // echo_length
            received += len(chunk)
            for _ in range(received // echo_length - done_before):
                if sent < count:
                    sock.sendall(frame)
                    sent += 1


def count_instructions(python, tree, count, size, window, tls=False):
    """Total instructions of a server process that echoed `count` messages."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch:
        log_path = Path(scratch) / "server.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(BENCH)]))
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={scratch}/callgrind.out",
                    str(python),
                    str(SERVER),
                    str(count),
                    *(["tls"] if tls else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            port = None
            while port is None:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {log_path.read_text()[-800:]}")
                found = re.search(r"^PORT (\d+)$", log_path.read_text(), re.MULTILINE)
                port = int(found.group(1)) if found else None
                time.sleep(0.1)
            echo(port, count, size, window, tls)
            server.wait(timeout=RUN_TIMEOUT)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=30)
        found = re.search(r"Collected : (\d+)", log_path.read_text())
        if server.returncode != 0 or not found:
            raise RuntimeError(f"server failed: {log_path.read_text()[-800:]}")
        return int(found.group(1))


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("specs", nargs="+", metavar="LABEL=TREE")
    p.add_argument("--size", type=int, choices=sorted(COUNTS), default=65536)
    p.add_argument("--python", default=str(python_of("ours")))
    p.add_argument("--tls", action="store_true", help="server and client over TLS")
    a = p.parse_args()
    if not Path(a.python).exists():
        sys.exit(f"{a.python} is missing: run `python3.11 bench/run.py --quick --only ours` once")
    fewer, more = COUNTS[a.size]
    for spec in a.specs:
        label, _, tree = spec.partition("=")
        totals = [
            count_instructions(
                a.python, Path(tree).resolve(), n, a.size, WINDOWS[a.size], a.tls
            )
            for n in (fewer, more)
        ]
        per_message = (totals[1] - totals[0]) / (more - fewer)
        print(
            f"{label:<12} {per_message / 1000:10.1f} k instructions per {a.size} B echo"
            f"{' over TLS' if a.tls else ''}"
            f"   (totals {totals[0]:,} / {totals[1]:,} for {fewer} / {more})",
            flush=True,
        )


if __name__ == "__main__":
    main()
