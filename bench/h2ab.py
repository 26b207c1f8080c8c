"""A/B of source trees for the HTTP/2 scenario, one change at a time:
python3.11 bench/h2ab.py [--sizes 65536,1048576] [--rounds R]
    [--duration S] [--transports h2,h1] LABEL=TREE[:ENV=VALUE,...] ...

Each LABEL=TREE names a source tree (a checkout, a worktree or an
exported copy of this repo: its `trio_websocket` is imported through
PYTHONPATH), optionally with environment variables for its server (for
example `off=.:TRIO_WEBSOCKET_FAST_PATHS=0`; `H2AB_SERVER_ARGS` is not
set in the environment but added to the server's arguments, for example
`big=.:H2AB_SERVER_ARGS=--h2-stream-window=1048576`). Every tree gets one echo
server (servers/trio_websocket_server.py --http2, as run.py --http2
starts it); the rounds go round-robin over trees, transports and sizes
(the starting tree rotates each round), so a busy machine weighs on each
the same way. Prints the median server CPU per echoed message over one
HTTP/2 stream (h2loadgen.py echo --framing raw) and over HTTP/1.1
(loadgen.py echo), and their ratio, per tree and size.
Needs the venvs run.py builds (`ours` and `h2load`)."""

import argparse
import os
import statistics
import sys
from pathlib import Path

import measure
from run import WINDOWS
from stacks import H2LOAD_VENV
from venvs import python_of

SCRIPT = "servers/trio_websocket_server.py"


def measure_once(server, transport, size, duration):
    extra = ["--sizes", str(size), "--windows", str(WINDOWS[size]),
             "--duration", str(duration), "--warmup", "0.3",
             "--cpu-pid", str(server.pid)]
    timeout = 60 + 2 * duration
    if transport == "h2":
        (res,) = measure.h2loadgen(python_of(H2LOAD_VENV), "echo", server.port,
                                   [*extra, "--framing", "raw"], timeout)
    else:
        (res,) = measure.loadgen("echo", server.port, "ws", extra, timeout)
    return res["server_cpu"] / res["msgs"] * 1e6


def start(label, tree, env):
    env = dict(env)
    extra = env.pop("H2AB_SERVER_ARGS", "").split()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return measure.Server(f"h2ab-{label}", python_of("ours"), SCRIPT,
                              ["--http2", "--h2-max-streams", "4096", *extra],
                              uses_repo=True, repo=tree)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="LABEL=TREE[:ENV=VALUE,...]")
    p.add_argument("--sizes", default="65536,1048576")
    p.add_argument("--transports", default="h2,h1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=1.0)
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    transports = a.transports.split(",")
    specs = []
    for spec in a.specs:
        label, _, rest = spec.partition("=")
        tree, _, env_text = rest.partition(":")
        env = dict(item.split("=", 1) for item in env_text.split(",") if item)
        specs.append((label, Path(tree).resolve(), env))
    samples = {(label, t, z): [] for label, _, _ in specs
               for t in transports for z in sizes}
    servers = {}
    try:
        for label, tree, env in specs:
            servers[label] = start(label, tree, env)
        for r in range(a.rounds):
            order = specs[r % len(specs):] + specs[:r % len(specs)]
            for size in sizes:
                for transport in transports:
                    for label, _, _ in order:
                        value = measure_once(servers[label], transport, size, a.duration)
                        samples[label, transport, size].append(value)
                        print(f"  round {r + 1} {label:10} {transport} {size:>8} B "
                              f"{value:8.1f} us", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    for size in sizes:
        for label, _, _ in specs:
            medians = {t: statistics.median(samples[label, t, size]) for t in transports}
            line = "  ".join(f"{t} {medians[t]:8.1f} us" for t in transports)
            if "h2" in medians and "h1" in medians:
                line += f"  h2/h1 {medians['h2'] / medians['h1']:.2f}"
            rounds = "; ".join(f"{t}: " + ", ".join(f"{v:.1f}" for v in samples[label, t, size])
                               for t in transports)
            print(f"{size:>8} B {label:10} {line}   ({rounds})")


if __name__ == "__main__":
    main()
