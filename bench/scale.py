"""Scale-out benchmark: worker processes and topic fan-out (issue 8).

    python3.11 bench/scale.py               # full run, a few minutes
    python3.11 bench/scale.py --quick       # smoke test: seconds, tiny numbers
    python3.11 bench/scale.py --only workers   (or: fanout)

Run it with an interpreter that has trio, wsproto (and coredis for the
Redis rows) installed, e.g. /work/venv/bin/python; this checkout is put on
PYTHONPATH. The Redis rows need ``redis-server`` on PATH (Debian package
``redis-server``); they are skipped with a note when it is missing.

What it measures (every server is started here, on 127.0.0.1 port 0, and
stopped by PID):

* workers: the echo app of bench/scale_app.py served by
  ``run_websocket_workers`` with 1 and then 2 workers. Handshakes/s (open +
  close, ``loadgen.py handshake`` in LOADGENS processes) and echo msgs/s
  (16 B and 1 KiB, pipelined, ``loadgen.py echo`` in LOADGENS processes),
  side by side, with the servers' CPU seconds (all worker processes summed)
  per handshake / message. On a 2-core machine the load generators share
  the cores with the workers, so 2 workers cannot double anything: the
  table shows what this machine gives, not an ideal.
* fanout: SUBSCRIBERS raw WebSocket connections subscribe to one topic;
  a control connection asks the server to publish; the time from sending
  the request until the last subscriber has the message (median and worst
  over ROUNDS publishes), the servers' CPU per delivered message, and the
  servers' RSS growth per subscriber. Rows: one process with the in-process
  Hub; two worker processes sharing a RedisHub (the subscribers spread
  across both by the kernel, the publish reaching the other process
  through Redis). The receiving side is this Python process reading
  SUBSCRIBERS sockets, which adds its own time to the latency.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from benchutil import proc_cpu_seconds, proc_rss_kib, raise_nofile  # noqa: E402
from wsframes import OP_TEXT, FrameCounter, build_frame, client_handshake  # noqa: E402

HOST = "127.0.0.1"
LOADGENS = 2
START_TIMEOUT = 30.0
IO_TIMEOUT = 10.0

SERVER_PROGRAM = """
import sys
sys.path.insert(0, {bench!r})
from benchutil import raise_nofile
raise_nofile(20000)
from trio_websocket import run_websocket_workers
sys.exit(run_websocket_workers(
    "scale_app:app", "127.0.0.1", 0, workers={workers},
    on_ready=lambda pool: print("PORT", pool.port, *pool.pids, flush=True),
))
"""


# ----------------------------------------------------------------------
# Processes


class Server:
    """run_websocket_workers in a child process; its port and worker pids."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_PROGRAM.format(bench=str(BENCH), workers=workers)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env, "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}"},
        )
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        if not selector.select(START_TIMEOUT):
            self.stop()
            raise RuntimeError("the server did not start")
        line = self.process.stdout.readline().split()
        if not line or line[0] != "PORT":
            self.stop()
            raise RuntimeError(f"the server did not start: {line}")
        self.port = int(line[1])
        self.pids = [int(pid) for pid in line[2:]]

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids)

    def rss_kib(self) -> int:
        return sum(proc_rss_kib(pid) for pid in self.pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Redis:
    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)
        self.url = f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def loadgen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(BENCH / "loadgen.py"), *args], stdout=subprocess.PIPE, text=True
    )


def results(process: subprocess.Popen[str]) -> list[dict[str, float]]:
    out, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen failed with status {process.returncode}")
    return [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]


# ----------------------------------------------------------------------
# 1 vs 2 workers


def measure_workers(workers: int, duration: float) -> dict[str, float]:
    server = Server(workers, {"SCALE_HUB": "local"})
    try:
        row: dict[str, float] = {"workers": workers}
        cpu0 = server.cpu()
        start = time.perf_counter()
        runs = [
            loadgen("handshake", "--port", str(server.port), "--duration", str(duration),
                    "--concurrency", "4", "--cpu-pid", str(server.pids[0]))
            for _ in range(LOADGENS)
        ]  # fmt: skip
        done = [r for run in runs for r in results(run)]
        wall = time.perf_counter() - start
        handshakes = sum(r["handshakes"] for r in done)
        row["handshakes_per_s"] = handshakes / max(r["wall"] for r in done)
        row["cpu_us_per_handshake"] = (server.cpu() - cpu0) / handshakes * 1e6
        for size in (16, 1024):
            cpu0 = server.cpu()
            runs = [
                loadgen("echo", "--port", str(server.port), "--sizes", str(size),
                        "--windows", "32", "--duration", str(duration),
                        "--cpu-pid", str(server.pids[0]))
                for _ in range(LOADGENS)
            ]  # fmt: skip
            done = [r for run in runs for r in results(run)]
            msgs = sum(r["msgs"] for r in done)
            row[f"echo_{size}_msgs_per_s"] = msgs / max(r["wall"] for r in done)
            row[f"cpu_us_per_echo_{size}"] = (server.cpu() - cpu0) / msgs * 1e6
        row["wall_s"] = wall
        return row
    finally:
        server.stop()


# ----------------------------------------------------------------------
# Fan-out


def ws_connect(port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    request, accept = client_handshake(HOST, port, path)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF during the opening handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or accept not in head:
        raise ConnectionError(f"bad handshake response: {head[:200]!r}")
    return sock, rest


def read_until(counters: dict[socket.socket, FrameCounter], want: int, timeout: float) -> float:
    """Read every socket until each has ``want`` messages; the time then."""
    selector = selectors.DefaultSelector()
    pending = {sock for sock, counter in counters.items() if counter.messages < want}
    for sock in pending:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.perf_counter() + timeout
    try:
        while pending:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(pending)} subscribers still waiting")
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("a subscriber was disconnected")
                counters[sock].feed(data)
                if counters[sock].messages >= want:
                    pending.discard(sock)
                    selector.unregister(sock)
        return time.perf_counter()
    finally:
        selector.close()


def measure_fanout(
    label: str, workers: int, env: dict[str, str], subscribers: int, rounds: int
) -> dict[str, object]:
    server = Server(workers, env)
    sockets: list[socket.socket] = []
    try:
        control, _ = ws_connect(server.port, "/control")
        sockets.append(control)
        time.sleep(0.5)
        rss0 = server.rss_kib()
        counters: dict[socket.socket, FrameCounter] = {}
        for _ in range(subscribers):
            sock, rest = ws_connect(server.port, "/sub")
            sockets.append(sock)
            counters[sock] = FrameCounter("ws")
            counters[sock].feed(rest)
        read_until(counters, 1, IO_TIMEOUT)  # everyone said "subscribed"
        time.sleep(0.5)
        rss1 = server.rss_kib()
        latencies = []
        cpu0 = server.cpu()
        for number in range(rounds):
            payload = f"round {number} ".encode().ljust(64, b".")
            start = time.perf_counter()
            control.sendall(build_frame(OP_TEXT, payload, masked=True))
            last = read_until(counters, number + 2, IO_TIMEOUT)
            latencies.append(last - start)
            control.setblocking(True)
            control.recv(65536)  # the publish's answer
        cpu = server.cpu() - cpu0
        return {
            "case": label,
            "processes": workers,
            "subscribers": subscribers,
            "median_ms_to_last": statistics.median(latencies) * 1e3,
            "worst_ms_to_last": max(latencies) * 1e3,
            "cpu_us_per_delivery": cpu / (rounds * subscribers) * 1e6,
            "kib_per_subscriber": (rss1 - rss0) / subscribers,
        }
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


# ----------------------------------------------------------------------
# Report


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    def cell(value: object) -> str:
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny and short")
    parser.add_argument("--only", choices=("workers", "fanout"))
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", default=str(BENCH / "scale_results.json"))
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.rounds, args.duration = 50, 3, 0.3
    raise_nofile(args.subscribers + 1000)
    report: dict[str, object] = {"cpus": os.cpu_count()}
    if args.only in (None, "workers"):
        rows = [measure_workers(n, args.duration) for n in (1, 2)]
        report["workers"] = rows
        print(f"## 1 vs 2 workers ({os.cpu_count()} cores, {LOADGENS} load generators)\n")
        print(table(rows, [c for c in rows[0] if c != "wall_s"]))  # type: ignore[arg-type]
        print()
    if args.only in (None, "fanout"):
        rows2 = [
            measure_fanout("in-process Hub", 1, {"SCALE_HUB": "local"}, args.subscribers,
                           args.rounds)
        ]  # fmt: skip
        if shutil.which("redis-server"):
            redis = Redis()
            try:
                rows2.append(
                    measure_fanout("RedisHub, 2 processes", 2,
                                   {"SCALE_HUB": "redis", "SCALE_REDIS_URL": redis.url},
                                   args.subscribers, args.rounds)
                )  # fmt: skip
            finally:
                redis.stop()
        else:
            print("(redis-server not found: the Redis row is skipped)\n")
        report["fanout"] = rows2
        print(f"## Fan-out of one publish to {args.subscribers} subscribers\n")
        print(table(rows2, list(rows2[0])))
        print()
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
