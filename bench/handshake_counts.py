"""Deterministic counts per server handshake, for work on the handshake
path where CPU time on a shared machine is too noisy to see a few percent:

    PYTHONPATH=TREE python bench/handshake_counts.py [--tls]
        [--raw | --floor sslstream|lean] [-n N] [--concurrency C] [--profile [--sort KEY] [--top K]]
        [--steps [--where]]

The server (this library's echo server, as `servers/trio_websocket_server.py`
serves it; with `--raw`, the raw trio TLS / plain trio echo of
`servers/plain_trio_server.py`; with `--floor`, the library-less
WebSocket exchange of `floor_server.py --tasks 1`, on trio's streams
(`sslstream`: `trio.serve_tcp`, or `trio.SSLStream` with `--tls`) or on
this library's lean (TLS) streams (`lean`: its `--lean`)) runs in this
process; the load generator
(`loadgen.py handshake`, C threads, N handshakes: open + close, or for
`--raw` connect + TLS handshake + close_notify) in another, started from
a worker thread once 50 warm-up handshakes are done. Prints the server's
CPU per handshake (user / system, from getrusage: noisy) and, with
`--profile`, Python function calls per handshake (cProfile, this thread
only; the top K functions by KEY), with `--steps` trio task steps,
tasks spawned and I/O waits per handshake (a trio instrument; `--where`
adds where the tasks were suspended, the innermost frames). Run the
profile and the step count separately: each one's hooks add calls to the
other's numbers. PYTHONPATH=TREE chooses the source tree whose
`trio_websocket` is measured (a checkout or worktree). 127.0.0.1 only;
the load generator is this script's child and ends on its own.
"""

import argparse
import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "servers"))

from benchutil import server_tls_context  # noqa: E402

from trio_websocket import ConnectionClosed, serve_websocket  # noqa: E402


async def echo(request):
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


class Steps(trio.abc.Instrument):
    def __init__(self, where):
        self.on = False
        self.steps = self.spawned = self.waits = 0
        self.where = {} if where else None

    def before_task_step(self, task):
        if not self.on:
            return
        self.steps += 1
        if self.where is not None:
            chain, coro = [], task.coro
            while coro is not None:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None:
                    chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            key = " > ".join(chain[-4:])
            self.where[key] = self.where.get(key, 0) + 1

    def task_spawned(self, task):
        self.spawned += self.on

    def after_io_wait(self, timeout):
        self.waits += self.on


def run_loadgen(port, proto, tls, count, concurrency):
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "handshake", "--port", str(port),
           "--proto", proto, "--duration", "300", "--warmup", "0",
           "--max-count", str(count), "--concurrency", str(concurrency),
           "--cpu-pid", str(os.getpid()), "--lifetime", "600"] + (["--tls"] if tls else [])
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, timeout=600)


async def main(a):
    steps = Steps(a.where)
    if a.steps:
        trio.lowlevel.add_instrument(steps)
    context = server_tls_context() if a.tls else None
    async with trio.open_nursery() as nursery:
        if a.raw:
            from plain_trio_server import handler
            if context is not None:
                listeners = await nursery.start(partial(
                    trio.serve_ssl_over_tcp, handler, 0, context, host="127.0.0.1"))
                sock = listeners[0].transport_listener.socket
            else:
                listeners = await nursery.start(partial(
                    trio.serve_tcp, handler, 0, host="127.0.0.1"))
                sock = listeners[0].socket
            port, proto = sock.getsockname()[1], "plain"
        elif a.floor:
            import floor_server
            if a.floor == "lean":
                if context is not None:
                    listener = (await trio.open_ssl_over_tcp_listeners(
                        0, context, host="127.0.0.1", https_compatible=True))[0]
                    sock = listener.transport_listener.socket
                else:
                    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
                    sock = listener.socket
                await nursery.start(floor_server.lean_server, floor_server.one_task, listener)
            elif context is not None:
                listeners = await nursery.start(partial(
                    trio.serve_ssl_over_tcp, floor_server.one_task, 0, context,
                    host="127.0.0.1"))
                sock = listeners[0].transport_listener.socket
            else:
                listeners = await nursery.start(partial(
                    trio.serve_tcp, floor_server.one_task, 0, host="127.0.0.1"))
                sock = listeners[0].socket
            port, proto = sock.getsockname()[1], "ws"
        else:
            server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, context)
            port, proto = server.port, "ws"
        await trio.to_thread.run_sync(run_loadgen, port, proto, a.tls, 50, 1)
        profile = cProfile.Profile()
        steps.on = True
        before = resource.getrusage(resource.RUSAGE_SELF)
        if a.profile:
            profile.enable()
        await trio.to_thread.run_sync(run_loadgen, port, proto, a.tls, a.n, a.concurrency)
        if a.profile:
            profile.disable()
        after = resource.getrusage(resource.RUSAGE_SELF)
        steps.on = False
        nursery.cancel_scope.cancel()
    n = a.n
    user = (after.ru_utime - before.ru_utime) / n * 1e6
    system = (after.ru_stime - before.ru_stime) / n * 1e6
    print(f"server CPU per handshake: {user + system:.0f} us (user {user:.0f}, "
          f"system {system:.0f}; noisy)")
    if a.steps:
        print(f"task steps per handshake {steps.steps / n:.2f}, tasks spawned "
              f"{steps.spawned / n:.2f}, I/O waits {steps.waits / n:.2f}")
        for where, count in sorted((steps.where or {}).items(), key=lambda kv: -kv[1]):
            if count / n >= 0.01:
                print(f"  {count / n:6.2f}  {where}")
    if a.profile:
        stats = pstats.Stats(profile)
        calls = sum(entry[1] for entry in stats.stats.values())
        print(f"Python function calls per handshake {calls / n:.1f}")
        if a.top:
            out = io.StringIO()
            stats.stream = out
            stats.sort_stats(a.sort).print_stats(a.top)
            print(out.getvalue())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--raw", action="store_true",
                   help="raw trio TLS (plain trio without --tls) instead of ours")
    p.add_argument("--floor", choices=("sslstream", "lean"),
                   help="floor_server.py's library-less WebSocket exchange (one task), "
                        "on trio's streams or on this library's")
    p.add_argument("-n", type=int, default=2000, help="handshakes measured")
    p.add_argument("--concurrency", type=int, default=4, help="load generator threads")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--sort", default="ncalls")
    p.add_argument("--top", type=int, default=0)
    p.add_argument("--steps", action="store_true")
    p.add_argument("--where", action="store_true")
    trio.run(main, p.parse_args())
