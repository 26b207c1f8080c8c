"""Benchmark harness entry point: python3.11 bench/run.py [--quick]
[--only ours,tws012,...] [--tls].  Builds the venvs, then for R rounds
starts one server per stack and measures, interleaved round-robin over the
stacks: idle RSS per connection, handshakes, pipelined server echo and
request/response (one message in flight: server CPU per round trip, p50/p99
latency) from the neutral load generator, pipelined client echo (each
library's client vs the neutral server) and round-trip latency (each
client vs its own server).  Prints Markdown tables of the medians + ratios
+ target checks and writes bench/results.json.

`--tls` runs the same over TLS (wss://; the plain stack becomes a
length-prefixed echo on trio.SSLStream, "raw trio TLS"): every server, the
load generator, the clients and the neutral server speak TLS 1.3 with the
bench's self-signed certificate; its own targets (issue 17) and
bench/results-tls.json.

`--pure-python` runs only the pure-Python scenario instead (see
purepython.py): ours without its compiled speedup against websockets built
without its C extension, server CPU per echoed message:
    python3.11 bench/run.py --pure-python [--quick]

`--compression` runs only the compression scenario instead (see
compression.py): ours vs websockets.trio with permessage-deflate, memory
per idle compressed connection and CPU per compressed message, on and off:
    python3.11 bench/run.py --compression [--quick]

`--http2` runs only the HTTP/2 scenario instead (see http2.py): WebSockets
over one HTTP/2 stream (RFC 8441) vs HTTP/1.1 on the same server, ours and
hypercorn, CPU per echoed message and memory per WebSocket at 1,000:
    python3.11 bench/run.py --http2 [--quick] [--tls]"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import compression
import http2
import measure
import purepython
import report
import venvs
from benchutil import raise_nofile
from stacks import (
    BENCH,
    BY_KEY,
    H2LOAD_VENV,
    NEUTRAL_VENV,
    REPO,
    STACKS,
    VENVS,
    standin_ours,
)

SIZES = [16, 1024, 65536, 1048576]
WINDOWS = {16: 32, 1024: 32, 65536: 8, 1048576: 2}
RR_SIZES = [16, 1024, 65536]  # request/response, one message in flight
TLS_LABEL = "raw trio TLS"  # the plain stack's name over TLS
#: Idle memory: connections opened before the baseline (a fresh server's
#: first few hundred partly reuse heap its start-up freed, by an amount
#: that depends on how it started, not on the stack: raw trio TLS measured
#: 22.9 or 24.8 KiB/conn with 20 by whether PYTHONPYCACHEPREFIX was set),
#: and the steps the measured ones are opened in (their spread is kept).
IDLE_WARM = 500
IDLE_STEPS = 4
PROFILES = {
    "full": {"rounds": 3, "duration": 2.0, "warmup": 0.3, "idle": 1000,
             "hs_concurrency": 4},
    "quick": {"rounds": 2, "duration": 0.5, "warmup": 0.1, "idle": 1000,
              "hs_concurrency": 4},
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Run:
    def __init__(self, cfg, stacks):
        self.cfg = cfg
        self.stacks = stacks
        self.samples = {s.key: {} for s in stacks}
        self.errors = {s.key: [] for s in stacks}
        self.python = {s.key: venvs.python_of(s.venv) for s in stacks}
        self.servers = {}
        # every server, load generator and client over TLS (run.py --tls)
        self.tls = ["--tls"] if cfg.get("tls") else []

    def add(self, stack, metric, value):
        self.samples[stack.key].setdefault(metric, []).append(value)

    def fail(self, stack, what, exc):
        msg = f"{what}: {exc}"
        srv = self.servers.get(stack.key)
        if srv is not None and not srv.alive():
            msg += f" [server died; log tail: {srv.tail(5)}]"
        self.errors[stack.key].append(msg)
        log(f"  !! {stack.key} {msg}")

    def server(self, stack):
        """The stack's server for this round, restarted if it died."""
        srv = self.servers.get(stack.key)
        if srv is None or not srv.alive():
            if srv is not None:
                srv.stop()
            srv = measure.Server(stack.key, self.python[stack.key],
                                 stack.server, self.tls,
                                 uses_repo=stack.uses_repo,
                                 repo=stack.tree or REPO)
            self.servers[stack.key] = srv
        return srv

    def stop_servers(self):
        for srv in self.servers.values():
            srv.stop()
        self.servers = {}

    # -- individual measurements -------------------------------------
    def idle_rss(self, stack):
        srv = self.server(stack)
        # Measured on the round's fresh server, before anything else ran
        # on it: its growth for `idle` connections opened after IDLE_WARM
        # (see loadgen.py idle), in IDLE_STEPS steps whose spread is kept.
        (res,) = measure.loadgen(
            "idle", srv.port, stack.proto,
            ["--count", str(self.cfg["idle"]), "--rss-pid", str(srv.pid),
             "--warm", str(IDLE_WARM), "--steps", str(IDLE_STEPS),
             "--settle", str(measure.IDLE_SETTLE),
             *self.tls], timeout=180)
        steps = res["step_kib_per_conn"]
        self.add(stack, "rss_kib_per_conn", res["kib_per_conn"])
        self.add(stack, "rss_step_spread_kib", max(steps) - min(steps))
        log(f"  {stack.key:10} idle RSS {res['kib_per_conn']:.2f} KiB/conn "
            f"(steps {' '.join(f'{v:.2f}' for v in steps)})")

    def handshakes(self, stack):
        srv = self.server(stack)
        d = self.cfg["duration"]
        (res,) = measure.loadgen(
            "handshake", srv.port, stack.proto,
            ["--duration", str(d), "--warmup", str(self.cfg["warmup"]),
             "--concurrency", str(self.cfg["hs_concurrency"]),
             "--cpu-pid", str(srv.pid), *self.tls], timeout=60 + 2 * d)
        n = res["handshakes"]
        self.add(stack, "hs_cpu_us", res["server_cpu"] / n * 1e6)
        self.add(stack, "hs_rate", n / res["wall"])
        self.add(stack, "hs_loadgen_pct", res["loadgen_cpu"] / res["wall"]
                 * 100)
        log(f"  {stack.key:10} handshakes {n / res['wall']:.0f}/s "
            f"{res['server_cpu'] / n * 1e6:.0f} us CPU each")

    def server_echo(self, stack, size):
        srv = self.server(stack)
        d = self.cfg["duration"]
        (res,) = measure.loadgen(
            "echo", srv.port, stack.proto,
            ["--sizes", str(size), "--windows", str(WINDOWS[size]),
             "--duration", str(d), "--warmup", str(self.cfg["warmup"]),
             "--cpu-pid", str(srv.pid), *self.tls], timeout=60 + 2 * d)
        n, wall = res["msgs"], res["wall"]
        self.add(stack, f"srv_cpu_us:{size}", res["server_cpu"] / n * 1e6)
        self.add(stack, f"srv_rate:{size}", n / wall)
        self.add(stack, f"srv_util_pct:{size}", res["server_cpu"] / wall
                 * 100)
        self.add(stack, f"loadgen_pct:{size}", res["loadgen_cpu"] / wall
                 * 100)
        log(f"  {stack.key:10} server echo {size:>7} B {n / wall:9.0f} "
            f"msg/s {res['server_cpu'] / n * 1e6:8.1f} us/msg "
            f"(loadgen {res['loadgen_cpu'] / wall * 100:.0f}%)")

    def server_rr(self, stack, size):
        """Request/response: one message in flight, server CPU per round
        trip and the latency of each (the neutral load generator)."""
        srv = self.server(stack)
        d = self.cfg["duration"]
        (res,) = measure.loadgen(
            "rr", srv.port, stack.proto,
            ["--sizes", str(size), "--duration", str(d),
             "--warmup", str(self.cfg["warmup"]), "--cpu-pid", str(srv.pid),
             *self.tls], timeout=60 + 2 * d)
        n, wall = res["msgs"], res["wall"]
        self.add(stack, f"rr_cpu_us:{size}", res["server_cpu"] / n * 1e6)
        self.add(stack, f"rr_p50_us:{size}", res["p50_us"])
        self.add(stack, f"rr_p99_us:{size}", res["p99_us"])
        self.add(stack, f"rr_loadgen_pct:{size}", res["loadgen_cpu"] / wall
                 * 100)
        log(f"  {stack.key:10} request/response {size:>7} B "
            f"{res['server_cpu'] / n * 1e6:8.1f} us/round trip, "
            f"p50 {res['p50_us']:.0f} us p99 {res['p99_us']:.0f} us")

    def scheme(self, stack):
        if stack.proto == "ws":
            return "wss" if self.tls else "ws"
        return "tls" if self.tls else "tcp"

    def client_echo(self, stack, neutral):
        srv = neutral[stack.proto]
        scheme = self.scheme(stack)
        d = self.cfg["duration"]
        results = measure.client(
            self.python[stack.key], stack.client,
            f"{scheme}://127.0.0.1:{srv.port}/",
            ["--mode", "echo", "--sizes", ",".join(map(str, SIZES)),
             "--windows", ",".join(str(WINDOWS[s]) for s in SIZES),
             "--duration", str(d), "--warmup", str(self.cfg["warmup"]),
             "--peer-pid", str(srv.pid)],
            timeout=60 + len(SIZES) * 2 * d, uses_repo=stack.uses_repo)
        for res in results:
            size, n, wall = res["size"], res["msgs"], res["wall"]
            self.add(stack, f"cli_cpu_us:{size}", res["client_cpu"] / n * 1e6)
            self.add(stack, f"cli_rate:{size}", n / wall)
            self.add(stack, f"peer_pct:{size}", res["peer_cpu"] / wall * 100)
            log(f"  {stack.key:10} client echo {size:>7} B {n / wall:9.0f} "
                f"msg/s {res['client_cpu'] / n * 1e6:8.1f} us/msg")

    def rtt(self, stack):
        srv = self.server(stack)
        scheme = self.scheme(stack)
        d = self.cfg["duration"]
        (res,) = measure.client(
            self.python[stack.key], stack.client,
            f"{scheme}://127.0.0.1:{srv.port}/",
            ["--mode", "rtt", "--sizes", "16", "--windows", "1",
             "--duration", str(d), "--warmup", str(self.cfg["warmup"]),
             "--peer-pid", str(srv.pid)],
            timeout=60 + 2 * d, uses_repo=stack.uses_repo)
        self.add(stack, "rtt_p50_us", res["p50_us"])
        self.add(stack, "rtt_p99_us", res["p99_us"])
        self.add(stack, "rtt_srv_cpu_us", res["peer_cpu"] / res["msgs"] * 1e6)
        log(f"  {stack.key:10} rtt p50 {res['p50_us']:.0f} us "
            f"p99 {res['p99_us']:.0f} us")

    def each(self, order, what, fn, *args):
        for stack in order:
            try:
                fn(stack, *args)
            except measure.EXPECTED as exc:  # go on with the other stacks
                self.fail(stack, what, exc)

    def start_round(self, r):
        """The stacks in round ``r``'s order (the first one rotates each
        round), each with its server started."""
        n = len(self.stacks)
        order = [self.stacks[(i + r) % n] for i in range(n)]
        for stack in order:
            try:
                self.server(stack)
            except measure.EXPECTED as exc:
                self.fail(stack, "server start", exc)
        return order

    def round(self, r, neutral):
        try:
            order = self.start_round(r)
            self.each(order, "idle RSS", self.idle_rss)
            self.each(order, "handshakes", self.handshakes)
            for size in SIZES:
                self.each(order, f"server echo {size} B", self.server_echo,
                          size)
            for size in RR_SIZES:
                self.each(order, f"request/response {size} B",
                          self.server_rr, size)
            self.each(order, "client echo", self.client_echo, neutral)
            self.each(order, "rtt", self.rtt)
        finally:
            self.stop_servers()


def other_cpu_load(seconds=1.0):
    """Cores kept busy by anything on the machine over `seconds`."""

    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # no idle/iowait

    b0 = busy()
    time.sleep(seconds)
    return (busy() - b0) / os.sysconf("SC_CLK_TCK") / seconds


def busy_note(load_before, load_after):
    return (f"machine CPU busy while idle (other processes): {load_before:.2f} cores "
            f"before, {load_after:.2f} after"
            + (" -- WARNING: not idle, numbers are noisy/skewed"
               if max(load_before, load_after) > 0.15 else ""))


def check_import(stack, python):
    """Return the path trio_websocket is imported from in this stack."""
    code = "import trio_websocket; print(trio_websocket.__file__)"
    cp = subprocess.run([str(python), "-c", code], check=False, capture_output=True,
                        text=True, timeout=120, cwd="/",
                        env=measure.child_env(stack.uses_repo))
    if cp.returncode != 0:
        err = (cp.stderr.strip().splitlines() or ["?"])[-1]
        raise measure.BenchError(f"cannot import trio_websocket: {err}")
    path = cp.stdout.strip()
    if stack.uses_repo and not path.startswith(str(REPO)):
        raise measure.BenchError(f"trio_websocket resolved to {path}, "
                                 f"not inside {REPO}")
    return path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="short windows, 2 rounds (~2 min)")
    p.add_argument("--only", default="",
                   help="comma list of stacks: "
                   + ",".join(s.key for s in STACKS))
    p.add_argument("--rounds", type=int, help="override round count")
    p.add_argument("--duration", type=float,
                   help="override each measured window (s)")
    p.add_argument("--ours-standin", action="store_true",
                   help="run `ours` on PyPI trio-websocket 0.12.2 "
                   "(harness self-test)")
    p.add_argument("--ours-install", action="store_true",
                   help="pip install -e the repo into the ours venv "
                   "(for builds that need it; PYTHONPATH is used anyway)")
    p.add_argument("--json", default=str(BENCH / "results.json"))
    p.add_argument("--compression", action="store_true",
                   help="run only the compression scenario (ours and "
                   "websockets.trio with permessage-deflate); results in "
                   "bench/results-compression.json unless --json is given")
    p.add_argument("--http2", action="store_true",
                   help="run only the HTTP/2 scenario (ours and hypercorn, "
                   "WebSockets over an HTTP/2 stream vs HTTP/1.1); results "
                   "in bench/results-http2.json unless --json is given")
    p.add_argument("--tls", action="store_true",
                   help="everything over TLS (wss://; the plain stack is "
                   "raw trio TLS); results in bench/results-tls.json (with "
                   "--http2: bench/results-http2-tls.json) unless --json "
                   "is given")
    p.add_argument("--pure-python", action="store_true",
                   help="run only the pure-Python scenario (ours without "
                   "its compiled speedup vs websockets without its C "
                   "extension); results in bench/results-pure-python.json "
                   "unless --json is given")
    return p.parse_args()


def main():
    args = parse_args()
    cfg = dict(PROFILES["quick" if args.quick else "full"])
    if args.rounds:
        cfg["rounds"] = args.rounds
    if args.duration:
        cfg["duration"] = args.duration
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    known = (http2.STACK_KEYS if args.http2 else purepython.STACK_KEYS
             if args.pure_python else list(BY_KEY))
    unknown = [k for k in keys if k not in known]
    if unknown:
        sys.exit(f"unknown stack(s) {unknown}; choose from {list(known)}")
    if sum((args.compression, args.http2, args.pure_python)) > 1:
        sys.exit("--compression, --http2 and --pure-python are separate runs")
    if args.tls and (args.compression or args.pure_python):
        sys.exit("--tls goes with the main run or --http2")
    stacks = [s for s in STACKS if not keys or s.key in keys]
    if args.compression:
        stacks = compression.stacks_for(keys)
        if args.json == str(BENCH / "results.json"):
            args.json = str(BENCH / "results-compression.json")
    if args.pure_python:
        stacks = purepython.stacks_for(keys)
        if args.json == str(BENCH / "results.json"):
            args.json = str(BENCH / "results-pure-python.json")
    if args.tls and not args.http2:
        cfg["tls"] = True
        stacks = [dataclasses.replace(s, label=TLS_LABEL, short=TLS_LABEL)
                  if s.key == "plain" else s for s in stacks]
        if args.json == str(BENCH / "results.json"):
            args.json = str(BENCH / "results-tls.json")
    if args.http2:
        stacks = http2.stacks_for(keys)
        cfg["tls"] = args.tls
        if args.json == str(BENCH / "results.json"):
            args.json = str(BENCH / ("results-http2-tls.json" if args.tls
                                     else "results-http2.json"))
    if args.ours_standin:
        stacks = [standin_ours(s) if s.key == "ours" else s for s in stacks]
    planned = list(stacks)  # the report's rows, skipped stacks too
    raise_nofile(cfg["idle"] + IDLE_WARM + 512)
    t_start = time.time()

    extra_venvs = {H2LOAD_VENV} if args.http2 else set()
    if args.pure_python:
        purepython.prepare(stacks, log)
    for name in sorted({s.venv for s in stacks} | {NEUTRAL_VENV}
                       | extra_venvs):
        venvs.ensure(name, log)
    if args.ours_install and any(s.uses_repo for s in stacks):
        venvs.pip_install_editable("ours", REPO)

    info, errors = {}, {}
    for stack in list(stacks):
        python = venvs.python_of(stack.venv)
        info[stack.key] = {"label": stack.label, "python": str(python)}
        if stack.key in ("ours", "tws012"):
            try:
                info[stack.key]["trio_websocket"] = check_import(stack,
                                                                 python)
            except measure.EXPECTED as exc:
                log(f"!! {stack.key}: {exc} -- skipping this stack "
                    "(use --ours-standin to self-test the harness)")
                errors[stack.key] = [str(exc)]
                stacks.remove(stack)
    if args.pure_python:
        for stack in list(stacks):
            try:
                info[stack.key]["compiled"] = purepython.check_build(stack)
            except measure.EXPECTED as exc:
                log(f"!! {stack.key}: {exc} -- skipping this stack")
                errors[stack.key] = [str(exc)]
                stacks.remove(stack)
    log(f"config: {cfg}; stacks: {[s.key for s in stacks]}")
    load_before = other_cpu_load()

    run = Run(cfg, stacks)
    if args.pure_python:
        try:
            purepython.run_rounds(run, SIZES)
        finally:
            run.stop_servers()
        load_after = other_cpu_load()
        for key, errs in errors.items():
            run.errors[key] = errs
        notes = [purepython.note(s, info[s.key]) for s in stacks]
        notes.append(busy_note(load_before, load_after))
        text, checks = purepython.render(run, SIZES, notes)
        print(text)
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "sizes": SIZES, "windows": WINDOWS,
                       "stacks": info, "samples": run.samples,
                       "medians": report.medians(run.samples),
                       "checks": checks,
                       "other_cpu_load_cores": [load_before, load_after],
                       "errors": run.errors,
                       "elapsed_s": time.time() - t_start}, f, indent=1)
        log(f"wrote {args.json} ({time.time() - t_start:.0f} s total)")
        return
    if args.compression:
        try:
            compression.run_rounds(run)
        finally:
            run.stop_servers()
        print(compression.render(run))
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "stacks": info, "samples": run.samples,
                       "errors": run.errors,
                       "elapsed_s": time.time() - t_start}, f, indent=1)
        log(f"wrote {args.json} ({time.time() - t_start:.0f} s total)")
        return
    if args.http2:
        try:
            http2.run_rounds(run, SIZES, WINDOWS)
        finally:
            run.stop_servers()
        load_after = other_cpu_load()
        for key, errs in errors.items():
            run.errors[key] = errs
        notes = [f"{s.label}: venv `{s.venv}` ({' '.join(VENVS[s.venv])})"
                 for s in stacks]
        notes.append(f"load generators: HTTP/2 `h2loadgen.py` (venv "
                     f"`{H2LOAD_VENV}`: {' '.join(VENVS[H2LOAD_VENV])}), "
                     "HTTP/1.1 `loadgen.py`")
        notes.append(busy_note(load_before, load_after))
        text, checks = http2.render(run, SIZES, notes)
        print(text)
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "sizes": SIZES, "windows": WINDOWS,
                       "stacks": info, "samples": run.samples,
                       "medians": http2.medians(run), "checks": checks,
                       "other_cpu_load_cores": [load_before, load_after],
                       "errors": run.errors,
                       "elapsed_s": time.time() - t_start}, f, indent=1)
        log(f"wrote {args.json} ({time.time() - t_start:.0f} s total)")
        return
    neutral = {}
    try:
        npy = venvs.python_of(NEUTRAL_VENV)
        for mode in ("ws", "plain"):
            neutral[mode] = measure.Server(f"neutral-{mode}", npy,
                                           "neutral_server.py",
                                           ["--mode", mode, *run.tls])
        for r in range(cfg["rounds"]):
            log(f"== round {r + 1}/{cfg['rounds']}")
            run.round(r, neutral)
    finally:
        run.stop_servers()
        for srv in neutral.values():
            srv.stop()

    load_after = other_cpu_load()
    for key, errs in errors.items():
        run.errors[key] = errs
    notes = []
    for s in stacks:
        where = info[s.key].get("trio_websocket")
        notes.append(f"{s.label}: venv `{s.venv}` ({' '.join(VENVS[s.venv])})"
                     + (f", trio_websocket from `{where}`" if where else ""))
    notes.append(busy_note(load_before, load_after))
    all_stacks = [s for s in planned if s.key in info]
    labels = {k: v["label"] for k, v in info.items()}
    medians = report.medians(run.samples)
    text, ratios, checks = report.render(all_stacks, labels, run.samples,
                                         run.errors, SIZES, cfg, notes,
                                         rr_sizes=RR_SIZES)
    print(text)
    out = {"config": cfg, "sizes": SIZES, "windows": WINDOWS,
           "rr_sizes": RR_SIZES,
           "stacks": info, "started": time.strftime(
               "%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
           "elapsed_s": time.time() - t_start, "samples": run.samples,
           "medians": medians, "ratios": ratios, "checks": checks,
           "other_cpu_load_cores": [load_before, load_after],
           "errors": run.errors}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    log(f"wrote {args.json} ({time.time() - t_start:.0f} s total)")


if __name__ == "__main__":
    main()
