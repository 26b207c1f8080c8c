"""The HTTP/2 scenario of run.py (`run.py --http2`): WebSockets over one
HTTP/2 stream (RFC 8441) against the same server's HTTP/1.1 WebSockets,
for `ours` and hypercorn's asyncio worker (the reference row).

Each stack runs one server that serves both (ours: serve_websocket(...,
http2=True), h2c by prior knowledge on the same port; hypercorn: always
both).  Per round, every measurement goes round-robin over the rows
(stack x transport; the starting row rotates each round):
  * KiB per WebSocket and the time to open 1,000: on a fresh server
    process each time (so one test's freed memory cannot hide the next
    one's growth), 1,000 WebSockets as extended CONNECT streams on one
    HTTP/2 connection (h2loadgen.py idle: opened all at once, each
    answered 200) against 1,000 HTTP/1.1 connections (loadgen.py idle:
    one after the other, each a full handshake); the server's RSS growth
    over 20 warm-up ones, divided by 1,000.
  * Server CPU per echoed message and msgs/s (16 B, 1 KiB, 64 KiB,
    1 MiB; the windows of run.py): pipelined echo on one HTTP/2 stream
    (h2loadgen.py echo --framing raw: after the handshake, frames read and
    written by hand, so the load generator keeps up as loadgen.py does) and
    on one HTTP/1.1 connection (loadgen.py echo), server CPU from /proc
    around the window.
Targets (issue 15): ours' CPU per message over HTTP/2 within 1.5x of
HTTP/1.1 at every size; ours' memory per HTTP/2 WebSocket at most half of
an HTTP/1.1 connection's.  Results in bench/results-http2.json.
With --tls (run.cfg["tls"]) everything runs over TLS instead: the servers
use the bench's self-signed certificate, ALPN picks h2 or http/1.1, and the
results go to bench/results-http2-tls.json."""

import statistics
import sys

import measure
import venvs
from stacks import BY_KEY, H2LOAD_VENV, HYPERCORN_STACK

STACK_KEYS = ("ours", "hypercorn")
TRANSPORTS = ("h2", "h1")
TRANSPORT_LABEL = {"h2": "HTTP/2 stream", "h1": "HTTP/1.1"}
SIZE_LABEL = {16: "16 B", 1024: "1 KiB", 65536: "64 KiB", 1048576: "1 MiB"}
CPU_TARGET = 1.5  # ours: h2 / h1 CPU per message, at most
MEMORY_TARGET = 0.5  # ours: h2 / h1 KiB per WebSocket, at most


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def stacks_for(keys):
    """The stacks the scenario runs: ours and hypercorn (or those of
    them named by --only)."""
    table = {"ours": BY_KEY["ours"], "hypercorn": HYPERCORN_STACK}
    return [table[k] for k in STACK_KEYS if not keys or k in keys]


def _tls(run):
    return ["--tls"] if run.cfg.get("tls") else []


# streams one HTTP/2 connection may carry, on both servers (ours' default
# is 100, hypercorn's too): the idle test opens 1,020 on one connection
MAX_STREAMS = 4096


def _start(run, stack, tag):
    args = ["--http2"] if stack.key == "ours" else []
    args += ["--h2-max-streams" if stack.key == "ours" else "--max-streams",
             str(MAX_STREAMS), *_tls(run)]
    return measure.Server(f"{stack.key}-{tag}", run.python[stack.key],
                          stack.server, args, uses_repo=stack.uses_repo)


def _idle(run, stack, transport):
    server = _start(run, stack, f"idle-{transport}")
    try:
        # (The settle of run.py's idle step: HTTP/1.1 connections of
        # ours give back their reader task after a quiet second.)
        extra = ["--count", str(run.cfg["idle"]), "--rss-pid",
                 str(server.pid), "--settle", str(measure.IDLE_SETTLE), *_tls(run)]
        timeout = 180
        if transport == "h2":
            (res,) = measure.h2loadgen(venvs.python_of(H2LOAD_VENV), "idle",
                                       server.port, extra, timeout)
        else:
            (res,) = measure.loadgen("idle", server.port, "ws", extra,
                                     timeout)
        if not server.alive():
            raise measure.BenchError(f"server died: {server.tail(5)}")
    finally:
        server.stop()
    run.add(stack, f"idle_kib:{transport}", res["kib_per_conn"])
    run.add(stack, f"open_s:{transport}", res["open_wall"])
    _log(f"  {stack.key:10} {transport} idle {res['kib_per_conn']:.2f} KiB "
         f"per WebSocket, {res['open_wall']:.2f} s to open {res['count']}")


def _echo(run, stack, transport, server, size, window):
    d = run.cfg["duration"]
    extra = ["--sizes", str(size), "--windows", str(window),
             "--duration", str(d), "--warmup", str(run.cfg["warmup"]),
             "--cpu-pid", str(server.pid), *_tls(run)]
    timeout = 60 + 2 * d
    if transport == "h2":
        (res,) = measure.h2loadgen(venvs.python_of(H2LOAD_VENV), "echo",
                                   server.port, [*extra, "--framing", "raw"],
                                   timeout)
    else:
        (res,) = measure.loadgen("echo", server.port, "ws", extra, timeout)
    n, wall = res["msgs"], res["wall"]
    run.add(stack, f"srv_cpu_us:{transport}:{size}",
            res["server_cpu"] / n * 1e6)
    run.add(stack, f"srv_rate:{transport}:{size}", n / wall)
    run.add(stack, f"srv_util_pct:{transport}:{size}",
            res["server_cpu"] / wall * 100)
    run.add(stack, f"loadgen_pct:{transport}:{size}",
            res["loadgen_cpu"] / wall * 100)
    _log(f"  {stack.key:10} {transport} echo {size:>7} B {n / wall:9.0f} "
         f"msg/s {res['server_cpu'] / n * 1e6:8.1f} us/msg "
         f"(loadgen {res['loadgen_cpu'] / wall * 100:.0f}%)")


def run_rounds(run, sizes, windows):
    rows = [(stack, t) for stack in run.stacks for t in TRANSPORTS]
    if not rows:  # every stack was skipped (its errors say why)
        return
    for r in range(run.cfg["rounds"]):
        _log(f"== HTTP/2 round {r + 1}/{run.cfg['rounds']}")
        order = rows[r % len(rows):] + rows[:r % len(rows)]
        for stack, transport in order:
            try:
                _idle(run, stack, transport)
            except measure.EXPECTED as exc:
                run.fail(stack, f"{transport} idle", exc)
        servers = {}
        try:
            for stack in run.stacks:
                try:
                    servers[stack.key] = _start(run, stack, "echo")
                except measure.EXPECTED as exc:
                    run.fail(stack, "server start", exc)
            for size in sizes:
                for stack, transport in order:
                    server = servers.get(stack.key)
                    if server is None:
                        continue
                    try:
                        _echo(run, stack, transport, server, size,
                              windows[size])
                    except measure.EXPECTED as exc:
                        tail = "" if server.alive() else \
                            f" [server died: {server.tail(5)}]"
                        run.fail(stack, f"{transport} echo {size} B",
                                 f"{exc}{tail}")
        finally:
            for server in servers.values():
                server.stop()


def medians(run):
    return {key: {m: statistics.median(v) for m, v in metrics.items() if v}
            for key, metrics in run.samples.items()}


def fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(a, b):
    return a / b if a is not None and b else None


def checks(run):
    """The issue's targets for `ours`: list of dicts (name, ratio, limit,
    ok; ok is None when a number is missing)."""
    m = medians(run).get("ours", {})
    out = []
    for size in sorted({int(k.rsplit(":", 1)[1]) for k in m
                        if k.startswith("srv_cpu_us:")}):
        r = _ratio(m.get(f"srv_cpu_us:h2:{size}"),
                   m.get(f"srv_cpu_us:h1:{size}"))
        out.append({"name": f"server CPU per {SIZE_LABEL[size]} message, "
                    "HTTP/2 stream / HTTP/1.1", "ratio": r,
                    "limit": CPU_TARGET,
                    "ok": None if r is None else r <= CPU_TARGET})
    r = _ratio(m.get("idle_kib:h2"), m.get("idle_kib:h1"))
    out.append({"name": "KiB per WebSocket, 1,000 on one HTTP/2 connection "
                "/ 1,000 HTTP/1.1 connections", "ratio": r,
                "limit": MEMORY_TARGET,
                "ok": None if r is None else r <= MEMORY_TARGET})
    return out


def render(run, sizes, notes=()):
    med = medians(run)
    mx = {k: {m: max(v) for m, v in ms.items() if v}
          for k, ms in run.samples.items()}
    labels = {s.key: s.label for s in run.stacks}
    szl = [SIZE_LABEL[s] for s in sizes]

    def table(header, rows):
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2))
               + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in rows]

    def rows(metric, src=med):
        return [[labels[s.key], TRANSPORT_LABEL[t]]
                + [fmt(src.get(s.key, {}).get(metric.format(t=t, size=z)))
                   for z in sizes]
                for s in run.stacks for t in TRANSPORTS]

    over = " over TLS (ALPN)" if run.cfg.get("tls") else ""
    lines = [f"## WebSockets over HTTP/2{over} (median of "
             f"{run.cfg['rounds']} rounds, {run.cfg['duration']} s windows)",
             ""]
    lines += [f"- {n}" for n in notes] + [""]
    lines += ["### Server CPU per echoed message (us, one stream / one "
              "connection, pipelined)"]
    lines += table(["stack", "transport", *szl],
                   rows("srv_cpu_us:{t}:{size}"))
    lines += ["", "### HTTP/2 / HTTP/1.1, server CPU per message "
              "(< 1: HTTP/2 cheaper)"]
    lines += table(["stack", "", *szl], [
        [labels[s.key], "h2 / 1.1"]
        + [fmt(_ratio(med.get(s.key, {}).get(f"srv_cpu_us:h2:{z}"),
                      med.get(s.key, {}).get(f"srv_cpu_us:h1:{z}")))
           for z in sizes] for s in run.stacks])
    lines += ["", "### Server throughput (msgs/s)"]
    lines += table(["stack", "transport", *szl], rows("srv_rate:{t}:{size}"))
    lines += ["", f"### {run.cfg['idle']:,} idle WebSockets: streams of one "
              f"HTTP/2 connection vs {run.cfg['idle']:,} HTTP/1.1 "
              "connections"]
    lines += table(["stack", "transport", "KiB per WebSocket",
                    f"s to open {run.cfg['idle']:,}"],
                   [[labels[s.key], TRANSPORT_LABEL[t],
                     fmt(med.get(s.key, {}).get(f"idle_kib:{t}")),
                     fmt(med.get(s.key, {}).get(f"open_s:{t}"))]
                    for s in run.stacks for t in TRANSPORTS])
    lines += ["", "### Sanity: max over rounds of CPU % of one core "
              "(load generator; server utilisation)"]
    lines += table(["stack", "transport"] + [f"loadgen {x}" for x in szl]
                   + [f"server {x}" for x in szl],
                   [[labels[s.key], TRANSPORT_LABEL[t]]
                    + [fmt(mx.get(s.key, {}).get(f"loadgen_pct:{t}:{z}"))
                       for z in sizes]
                    + [fmt(mx.get(s.key, {}).get(f"srv_util_pct:{t}:{z}"))
                       for z in sizes]
                    for s in run.stacks for t in TRANSPORTS])
    found = checks(run)
    if any(s.key == "ours" for s in run.stacks):
        lines += ["", "### Targets (ours)"]
        for c in found:
            mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["ok"]]
            lines.append(f"- [{'x' if c['ok'] else ' '}] {mark} {c['name']}"
                         f" = {fmt(c['ratio'])}, need <= {fmt(c['limit'])}")
    errs = [(k, e) for k, es in run.errors.items() for e in es]
    if errs:
        lines += ["", "### Errors"] + [f"- {k}: {e}" for k, e in errs]
    return "\n".join(lines), found
