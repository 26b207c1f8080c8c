"""A/B comparison of server builds, for working on one change at a time:
python3.11 bench/ab.py [--scenario handshake|echo|rr|client] [--size N]
    [--rounds R] [--tls] [--plain LABEL,...] LABEL=TREE[:SCRIPT[:ARGS]] ...

Each LABEL=TREE names a source tree (a checkout or git worktree of this
repo: its `trio_websocket` is imported through PYTHONPATH) and optionally
the server script (relative to bench/, default the trio_websocket echo
server) and its arguments. All servers run side by side; the rounds
alternate between them, so a busy machine weighs on each the same way.
Prints the median server CPU per handshake (open + close), per echoed
message, or per round trip with one message in flight (`--scenario rr`),
from the neutral load generator, like run.py (`--tls`: over TLS,
every server given `--tls`, as in `run.py --tls`); with `--scenario
client`, the client CPU per message of each tree's client (SCRIPT then
names a client, default the trio_websocket one) against one neutral
server. Needs the `ours`
venv that run.py builds (bench/.venvs/ours)."""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from measure import BenchError, Server, child_env, loadgen
from run import WINDOWS
from stacks import BENCH, NEUTRAL_VENV
from venvs import python_of

DEFAULT_SCRIPT = "servers/trio_websocket_server.py"
DEFAULT_CLIENT = "clients/trio_websocket_client.py"




def measure_once(server, scenario, size, duration, tls=(), proto="ws"):
    common = ["--duration", str(duration), "--warmup", "0.3",
              "--cpu-pid", str(server.pid), *tls]
    if scenario == "handshake":
        (res,) = loadgen("handshake", server.port, proto,
                         [*common, "--concurrency", "4"], timeout=60 + 2 * duration)
        return res["server_cpu"] / res["handshakes"] * 1e6
    if scenario == "rr":
        (res,) = loadgen("rr", server.port, proto, [*common, "--sizes", str(size)],
                         timeout=60 + 2 * duration)
        return res["server_cpu"] / res["msgs"] * 1e6
    (res,) = loadgen("echo", server.port, proto,
                     [*common, "--sizes", str(size), "--windows", str(WINDOWS[size])],
                     timeout=60 + 2 * duration)
    return res["server_cpu"] / res["msgs"] * 1e6


def measure_client(python, tree, script, args, neutral, size, duration):
    """Client CPU per message of the client `script` from `tree`."""
    cmd = [str(python), str(BENCH / script), "--url", f"ws://127.0.0.1:{neutral.port}/",
           "--mode", "echo", "--sizes", str(size), "--windows", str(WINDOWS[size]),
           "--duration", str(duration), "--warmup", "0.3", "--peer-pid", str(neutral.pid),
           *args]
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 2 * duration,
                            env=child_env(True, tree), cwd=str(BENCH), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"client timed out: {script}") from exc
    results = [json.loads(line[7:]) for line in cp.stdout.splitlines()
               if line.startswith("RESULT ")]
    if cp.returncode != 0 or not results:
        raise BenchError(f"client failed: {cp.stderr.strip()[-300:]}")
    (res,) = results
    return res["client_cpu"] / res["msgs"] * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="LABEL=TREE[:SCRIPT[:ARGS]]")
    p.add_argument("--scenario", choices=("handshake", "echo", "rr", "client"),
                   default="handshake")
    p.add_argument("--size", type=int, choices=sorted(WINDOWS), default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--python", default=str(python_of("ours")))
    p.add_argument("--tls", action="store_true",
                   help="servers and load generator over TLS (not with --scenario client)")
    p.add_argument("--plain", default="",
                   help="labels (comma-separated) whose servers speak run.py's plain "
                        "length-prefixed echo, not WebSocket (plain_trio_server.py)")
    a = p.parse_args()
    plain = set(filter(None, a.plain.split(",")))
    tls = ["--tls"] if a.tls else []
    if a.tls and a.scenario == "client":
        sys.exit("--tls measures servers: use --scenario handshake or echo")
    if not Path(a.python).exists():
        sys.exit(f"{a.python} is missing: run `python3.11 bench/run.py --quick --only ours` once")
    specs = []
    for spec in a.specs:
        label, _, rest = spec.partition("=")
        tree, _, rest = rest.partition(":")
        script, _, args = rest.partition(":")
        default = DEFAULT_CLIENT if a.scenario == "client" else DEFAULT_SCRIPT
        specs.append((label, Path(tree).resolve(), script or default, args.split()))
    samples = {label: [] for label, *_ in specs}
    servers = {}
    try:
        if a.scenario == "client":
            servers[None] = Server("neutral-ws", python_of(NEUTRAL_VENV), "neutral_server.py",
                                   ["--mode", "ws"])
            for _ in range(a.rounds):
                for label, tree, script, args in specs:
                    samples[label].append(measure_client(
                        a.python, tree, script, args, servers[None], a.size, a.duration))
        else:
            for label, tree, script, args in specs:
                servers[label] = Server(f"ab-{label}", a.python, script, [*args, *tls],
                                        uses_repo=True, repo=tree)
            for _ in range(a.rounds):
                for label, *_ in specs:
                    samples[label].append(measure_once(
                        servers[label], a.scenario, a.size, a.duration, tls,
                        "plain" if label in plain else "ws"))
    finally:
        for server in servers.values():
            server.stop()
    what = {"handshake": "us CPU per handshake",
            "echo": f"us server CPU per {a.size} B echo",
            "rr": f"us server CPU per {a.size} B round trip (one message in flight)",
            "client": f"us client CPU per {a.size} B message"}[a.scenario]
    for label, values in samples.items():
        print(f"{label:14} {statistics.median(values):8.1f} {what}   "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
