"""Many idle connections: python3.11 bench/many_idle.py [--count 10000]
[--only ours,wstrio,...]

Starts each stack's benchmark server in turn, opens COUNT WebSocket
connections to it from the neutral load generator (each one a full opening
handshake, then left idle), and reports the server's RSS growth per
connection, its total RSS, and how long opening them all took.  This is the
"10,000 concurrent idle connections in one server process" check; the main
run (bench/run.py) measures idle memory at 1,000 connections side by side
with the CPU numbers."""

import argparse
import sys

import measure
import venvs
from benchutil import raise_nofile
from stacks import BY_KEY, NEUTRAL_VENV, STACKS


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--only", default="",
                   help="comma-separated stack keys: " + ",".join(BY_KEY))
    args = p.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    stacks = [s for s in STACKS if not keys or s.key in keys]
    raise_nofile(args.count + 512)
    for name in sorted({s.venv for s in stacks} | {NEUTRAL_VENV}):
        venvs.ensure(name, lambda msg: print(msg, file=sys.stderr))
    rows = []
    for stack in stacks:
        server = measure.Server(stack.key, venvs.python_of(stack.venv),
                                stack.server, uses_repo=stack.uses_repo)
        try:
            (res,) = measure.loadgen(
                "idle", server.port, stack.proto,
                ["--count", str(args.count), "--rss-pid", str(server.pid)],
                timeout=600)
            alive = server.alive()
        finally:
            server.stop()
        rows.append((stack.label, res, alive))
        print(f"{stack.key}: {res['kib_per_conn']:.2f} KiB/conn", file=sys.stderr)
    print("| stack | idle connections | KiB per conn | server RSS MiB "
          "| s to open all | server alive |")
    print("|---|---|---|---|---|---|")
    for label, res, alive in rows:
        print(f"| {label} | {res['count']:,} | {res['kib_per_conn']:.1f} "
              f"| {res['rss_after_kib'] / 1024:.0f} | {res['open_wall']:.1f} "
              f"| {'yes' if alive else 'NO'} |")


if __name__ == "__main__":
    main()
