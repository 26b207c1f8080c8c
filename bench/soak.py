"""Soak benchmark: one trio_websocket echo server under a long mix of good
and hostile clients, watched once a second. Does its memory stay flat?

    python bench/soak.py --seconds 60                 # a minute, 50 clients
    python bench/soak.py --seconds 60 --compression   # with permessage-deflate
                                                      # (and compression bombs)
    python bench/soak.py --seconds 1800 --clients 100 # the long run
    python bench/soak.py --isolate --seconds 15       # good clients + one hostile
                                                      # behaviour at a time

Any Python with trio and wsproto runs it (the dev venv: .venv/bin/python);
the server imports this source tree (PYTHONPATH), the built speedups too.

Rules:
- Three processes: this one only starts, samples and reports (it sleeps
  between samples, so its timing holds while the other two are busy);
  servers/soak_server.py is the server (limits as given here, a STATS line
  every second on its log); soak_peers.py runs the clients.
- Only 127.0.0.1. Every loop is bounded by --seconds plus the drain time;
  children are stopped by their PID in finally blocks (and die with this
  process: benchutil.watchdog).
- Each second: the server's VmRSS and open file descriptors (/proc/<pid>),
  its CPU time, and its own count of open connections and living tasks
  (from the STATS line). The server is killed if its RSS passes --rss-limit.
- After the load ends the server gets --drain seconds to close what is left;
  then its connections, tasks and descriptors must be back where they were
  before the load.
- The report (Markdown) goes to stdout, progress to stderr, everything to
  --json (bench/results-soak.json).
- Exit status: 1 if a good client failed or the server died (or was
  killed), 2 if only the memory verdict failed (RSS grew more than
  --rss-growth-mib over the second half, or the server did not drain), 0
  otherwise.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time

from benchutil import proc_cpu_seconds, proc_rss_kib, watchdog
from measure import LOG_DIR, BenchError, Server, child_env
from soak_peers import BEHAVIOURS
from stacks import BENCH

SPARK = "▁▂▃▄▅▆▇█"
MIB = 1024.0
STATS_INTERVAL = 1.0  # the server's default --stats-interval


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class StatsTail:
    """Follows the server's log for its `STATS {json}` lines."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.latest = None

    def poll(self):
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if line.startswith(b"STATS "):
                self.latest = json.loads(line[6:])
        return self.latest


class Sampler:
    """One sample a second of the server process."""

    def __init__(self, server, epoch):
        self.server = server
        self.epoch = epoch
        self.tail = StatsTail(server.log_path)
        self.samples = []
        self._cpu = None

    def take(self, phase):
        pid = self.server.pid
        now = time.time()
        cpu = proc_cpu_seconds(pid)
        stats = self.tail.poll() or {}
        # The event loop's lag: how late the server's last STATS timer
        # fired, or how overdue the next line is when the loop is stuck.
        lag = None
        if stats:
            lag = max(stats.get("loop_lag", 0.0), now - stats["time"] - STATS_INTERVAL)
        cpu_pct = None
        if self._cpu is not None:
            cpu_pct = 100 * (cpu - self._cpu[1]) / max(1e-6, now - self._cpu[0])
        self._cpu = (now, cpu)
        sample = {
            "t": round(now - self.epoch, 2), "phase": phase,
            "rss_kib": proc_rss_kib(pid), "fds": fd_count(pid),
            "cpu_pct": None if cpu_pct is None else round(cpu_pct, 1),
            "loop_lag": None if lag is None else round(max(0.0, lag), 2),
            "connections": stats.get("connections"), "tasks": stats.get("tasks"),
            "echoed": stats.get("echoed"),
            "handler_errors": stats.get("handler_errors", {}),
        }
        self.samples.append(sample)
        return sample


def sample_if_alive(sampler, server, phase):
    """A sample, or None if the server process has gone (or goes meanwhile)."""
    if not server.alive():
        return None
    try:
        return sampler.take(phase)
    except OSError:  # /proc/<pid> vanished under us
        if server.alive():
            raise
        return None


def server_args(a):
    args = ["--max-message-size", str(a.max_message_size),
            "--max-buffered-bytes", str(a.max_buffered_bytes),
            "--message-queue-size", str(a.message_queue_size),
            "--max-connections", str(a.max_connections),
            "--connect-timeout", str(a.connect_timeout),
            "--disconnect-timeout", str(a.disconnect_timeout),
            "--lifetime", str(a.seconds + a.drain + 120)]
    return args + (["--compression"] if a.compression else [])


def start_load(a, port, epoch):
    cmd = [sys.executable, str(BENCH / "soak_peers.py"), "--port", str(port),
           "--seconds", str(a.seconds), "--clients", str(a.clients), "--epoch", repr(epoch),
           "--hold", str(a.hold), "--good-timeout", str(a.good_timeout),
           "--connect-timeout", str(a.connect_timeout),
           "--max-message-size", str(a.max_message_size),
           "--bombs-per-write", str(a.bombs_per_write), "--seed", str(a.seed)]
    if a.mix:
        cmd += ["--mix", a.mix]
    if a.compression:
        cmd.append("--compression")
    out = open(LOG_DIR / "soak-load.out", "w+")  # noqa: SIM115 (read back at the end)
    err = open(LOG_DIR / "soak-load.err", "w+")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            env=child_env(False), cwd=str(BENCH))
    return proc, out, err


def stop_by_pid(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


def wait_tick(next_tick):
    delay = next_tick - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    return max(next_tick + 1.0, time.monotonic())


def soak(a):
    """Run the soak; returns the whole record (the JSON)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    record = {"config": vars(a).copy(), "cores": os.cpu_count(),
              "loadavg_before": os.getloadavg(), "events": []}
    events = record["events"]
    server = Server("soak", sys.executable, "servers/soak_server.py", server_args(a),
                    uses_repo=True)
    load = out = err = None
    try:
        epoch = time.time()
        sampler = Sampler(server, epoch)
        record["samples"] = sampler.samples
        time.sleep(1.2)  # the first STATS line, a settled baseline
        record["baseline"] = sampler.take("baseline")
        record["baseline"]["t"] = 0.0
        load, out, err = start_load(a, server.port, time.time())
        sampler.epoch = time.time()
        next_tick = time.monotonic() + 1.0
        while load.poll() is None:
            next_tick = wait_tick(next_tick)
            sample = sample_if_alive(sampler, server, "load")
            if sample is None:
                events.append(f"server died at t={time.time() - sampler.epoch:.1f}s")
                break
            if sample["rss_kib"] > a.rss_limit * MIB:
                events.append(f"server killed at t={sample['t']}s: RSS "
                              f"{sample['rss_kib'] / MIB:.0f} MiB over --rss-limit {a.rss_limit}")
                server.stop()
                break
            if len(sampler.samples) % 10 == 0:
                print(f"t={sample['t']:6.1f}s rss={sample['rss_kib'] / MIB:7.1f} MiB "
                      f"fds={sample['fds']} conns={sample['connections']} "
                      f"tasks={sample['tasks']} cpu={sample['cpu_pct']}%",
                      file=sys.stderr, flush=True)
        if load.poll() is None:  # the server went away first
            stop_by_pid(load)
        load.wait(a.seconds + 60)
        record["load_exit"] = load.returncode
        # Drain: the server closes what is left, then must be back at baseline.
        base = record["baseline"]
        drain_end = time.monotonic() + a.drain
        drained = False
        while server.alive() and time.monotonic() < drain_end:
            next_tick = wait_tick(next_tick)
            sample = sample_if_alive(sampler, server, "drain")
            if sample is None:
                events.append(f"server died at t={time.time() - sampler.epoch:.1f}s")
                break
            if (sample["connections"] == 0 and sample["tasks"] == base["tasks"]
                    and sample["fds"] == base["fds"]):
                drained = True
                break
        record["drained"] = drained
        record["server_alive_at_end"] = server.alive()
        if not server.alive():
            record["server_log_tail"] = server.tail(40)
    finally:
        if load is not None:
            stop_by_pid(load)
        server.stop()
    out.seek(0)
    err.seek(0)
    results = [json.loads(line[7:]) for line in out.read().splitlines()
               if line.startswith("RESULT ")]
    record["load"] = results[0] if results else None
    if not results:
        events.append("the load process printed no result: "
                      + (err.read().strip().splitlines() or ["?"])[-1])
    out.close()
    err.close()
    record["server_handler_errors"] = (sampler.tail.latest or {}).get("handler_errors", {})
    record["loadavg_after"] = os.getloadavg()
    return record


# ---- analysis and report ---------------------------------------------------

def slope_per_second(points):
    """Least-squares slope of (t, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in points) / var


def sparkline(values, width=60):
    if not values:
        return ""
    if len(values) > width:  # each cell: the peak of its slice
        step = len(values) / width
        values = [max(values[int(i * step):max(int(i * step) + 1, int((i + 1) * step))])
                  for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1
    return "".join(SPARK[min(7, int((v - low) / span * 8))] for v in values)


def analyse(record, a):
    load_samples = [s for s in record["samples"] if s["phase"] == "load"]
    summary = {}
    if load_samples:
        rss = [s["rss_kib"] / MIB for s in load_samples]
        end = load_samples[-1]["t"]
        second_half = [(s["t"], s["rss_kib"] / MIB) for s in load_samples if s["t"] >= end / 2]
        slope = slope_per_second(second_half)
        half_seconds = end - end / 2
        summary["rss_mib"] = {
            "baseline": round(record["baseline"]["rss_kib"] / MIB, 1),
            "first": round(rss[0], 1), "peak": round(max(rss), 1), "last": round(rss[-1], 1),
            "second_half_slope_mib_per_min": round(slope * 60, 2),
            "second_half_fitted_growth_mib": round(slope * half_seconds, 1),
        }
        summary["fds"] = {"baseline": record["baseline"]["fds"],
                          "peak": max(s["fds"] for s in load_samples)}
        summary["tasks"] = {"baseline": record["baseline"]["tasks"],
                            "peak": max(s["tasks"] or 0 for s in load_samples)}
        summary["connections_peak"] = max(s["connections"] or 0 for s in load_samples)
        lags = sorted(s["loop_lag"] or 0.0 for s in load_samples)
        summary["loop_lag_s"] = {"median": lags[len(lags) // 2], "max": lags[-1]}
    final = record["samples"][-1] if record["samples"] else {}
    summary["after_drain"] = {k: final.get(k) for k in ("t", "rss_kib", "fds", "tasks",
                                                        "connections")}
    load = record.get("load") or {}
    good = load.get("good", {})
    server_ok = record.get("server_alive_at_end", False) and not any(
        e.startswith("server") for e in record["events"])
    good_ok = bool(load) and good.get("failures", 1) == 0
    growth = summary.get("rss_mib", {}).get("second_half_fitted_growth_mib", 0.0)
    rss_ok = growth < a.rss_growth_mib
    summary["verdicts"] = {
        "server_survived": server_ok,
        "good_clients_all_served": good_ok,
        "rss_flat": rss_ok,
        "drained": record.get("drained", False),
    }
    if not (server_ok and good_ok):
        summary["exit"] = 1
    elif not (rss_ok and record.get("drained", False)):
        summary["exit"] = 2
    else:
        summary["exit"] = 0
    record["summary"] = summary
    return summary


def fmt_mib(kib):
    return f"{kib / MIB:.1f}"


def report(record, a):
    s = record["summary"]
    load = record.get("load") or {}
    good = load.get("good", {})
    lines = []
    w = lines.append
    cfg = record["config"]
    w(f"# Soak: {cfg['clients']} clients, {cfg['seconds']:g} s, compression "
      f"{'on' if cfg['compression'] else 'off'}")
    w("")
    w(f"Server limits: max_message_size={cfg['max_message_size']}, "
      f"max_buffered_bytes={cfg['max_buffered_bytes']}, "
      f"message_queue_size={cfg['message_queue_size']}, "
      f"max_connections={cfg['max_connections']}, connect_timeout={cfg['connect_timeout']:g} s, "
      f"disconnect_timeout={cfg['disconnect_timeout']:g} s. {record['cores']} cores; "
      f"load average before {record['loadavg_before'][0]:.2f}, "
      f"after {record['loadavg_after'][0]:.2f}.")
    w("")
    samples = [x for x in record["samples"] if x["phase"] != "baseline"]
    per_second = {int(k): v for k, v in good.get("per_second", {}).items()}
    if samples:
        step = max(1, round(cfg["seconds"] / 20))
        w("| t (s) | phase | RSS MiB | fds | tasks | conns | loop lag s | server CPU % "
          "| good echoes |")
        w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        b = record["baseline"]
        w(f"| 0 | baseline | {fmt_mib(b['rss_kib'])} | {b['fds']} | {b['tasks']} | "
          f"{b['connections']} | | | |")
        rows = []
        for x in samples:
            if x["phase"] == "load" and (not rows or x["t"] // step > rows[-1]["t"] // step):
                rows.append(x)
        for phase in ("load", "drain"):  # the last of each phase too
            last = [x for x in samples if x["phase"] == phase][-1:]
            if last and last[0] not in rows:
                rows += last
        previous = 0
        for x in rows:
            echoes = sum(v for k, v in per_second.items() if previous <= k < x["t"])
            previous = x["t"]
            w(f"| {x['t']:.0f} | {x['phase']} | {fmt_mib(x['rss_kib'])} | {x['fds']} | "
              f"{x['tasks']} | {x['connections']} | {x['loop_lag']} | {x['cpu_pct']} | "
              f"{echoes if x['phase'] == 'load' else ''} |")
        w("")
        w("RSS over the load, one cell per " + (
            "second" if len(samples) <= 60 else f"{len(samples) / 60:.1f} s (peak of each)")
          + ":")
        w("")
        w("    " + sparkline([x["rss_kib"] / MIB for x in samples if x["phase"] == "load"]))
        w("")
    r = s.get("rss_mib")
    if r:
        w(f"RSS MiB: baseline {r['baseline']}, first {r['first']}, peak {r['peak']}, "
          f"last {r['last']}; second half slope {r['second_half_slope_mib_per_min']} MiB/min "
          f"(fitted growth {r['second_half_fitted_growth_mib']} MiB). "
          f"fds baseline {s['fds']['baseline']}, peak {s['fds']['peak']}; tasks baseline "
          f"{s['tasks']['baseline']}, peak {s['tasks']['peak']}; connections peak "
          f"{s['connections_peak']}; event loop lag median {s['loop_lag_s']['median']} s, "
          f"max {s['loop_lag_s']['max']} s.")
        d = s["after_drain"]
        w(f"After the load ({'drained' if record.get('drained') else 'NOT drained'} at "
          f"t={d['t']} s): RSS {fmt_mib(d['rss_kib'] or 0)} MiB, fds {d['fds']}, "
          f"tasks {d['tasks']}, connections {d['connections']}.")
        w("")
    if load:
        w("| behaviour | runs | sent MiB | outcomes |")
        w("|---|---:|---:|---|")
        for name, b in load["behaviours"].items():
            outcomes = ", ".join(f"{n} {k}" for k, n in sorted(
                b["outcomes"].items(), key=lambda kv: -kv[1]))
            if b.get("kinds"):
                outcomes += " (" + ", ".join(f"{k} {n}" for k, n in b["kinds"].items()) + ")"
            w(f"| {name} | {b['runs']} | {b['bytes_sent'] / 2**20:.1f} | {outcomes} |")
        w("")
        lat = good["latency_ms"]
        w(f"Good clients: {good['exchanges_ok']} echoes verified, latency p50 {lat['p50']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms; failures: {good['failures']}.")
        for f in good["failure_list"][:20]:
            w(f"  - t={f['t']} s, {f['phase']}"
              + (f" ({f['size']} B)" if f["size"] is not None else "") + f": {f['error']}")
        if good["failures"] > 20:
            w(f"  - ... {good['failures'] - 20} more in the JSON")
        w(f"Load process CPU: {load['load_cpu_seconds']:.1f} s.")
    if record["server_handler_errors"]:
        w(f"Server handler errors (library exceptions other than ConnectionClosed): "
          f"{record['server_handler_errors']}")
    for event in record["events"]:
        w(f"EVENT: {event}")
    if record.get("server_log_tail"):
        w("Server log tail:")
        w("```")
        w(record["server_log_tail"])
        w("```")
    w("")
    v = s["verdicts"]
    growth = (r or {}).get("second_half_fitted_growth_mib")
    w(f"VERDICT: server {'survived' if v['server_survived'] else 'DIED'}; good clients "
      f"{'all served' if v['good_clients_all_served'] else 'FAILED'}; RSS growth over the "
      f"second half {growth} MiB {'<' if v['rss_flat'] else '>='} {a.rss_growth_mib:g} MiB "
      f"({'flat' if v['rss_flat'] else 'GROWING'}); "
      f"{'drained' if v['drained'] else 'NOT drained'} -> "
      f"{'PASS' if s['exit'] == 0 else 'FAIL'} (exit {s['exit']})")
    return "\n".join(lines)


def isolate(a, hostile):
    """Good clients next to one hostile behaviour at a time (even weights)."""
    record = {"config": vars(a).copy(), "runs": {}}
    for name in hostile:
        one = copy.copy(a)
        one.mix = f"good=1,{name}=1"
        print(f"isolate: {name}", file=sys.stderr, flush=True)
        run = soak(one)
        analyse(run, one)
        record["runs"][name] = run
    exits = {run["summary"]["exit"] for run in record["runs"].values()}
    record["summary"] = {"exit": 1 if 1 in exits else max(exits, default=0)}
    return record


def isolation_report(record, a):
    cfg = record["config"]
    lines = [f"# Soak, one hostile behaviour at a time: {cfg['clients']} clients "
             f"(half good), {cfg['seconds']:g} s each, compression "
             f"{'on' if cfg['compression'] else 'off'}", "",
             "| hostile behaviour | runs | RSS peak MiB | 2nd-half growth MiB | "
             "loop lag median / max s | good echoes | good p50 / p99 ms | good failures | "
             "exit |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in record["runs"].items():
        s = run["summary"]
        load = run.get("load") or {"behaviours": {name: {"runs": "?"}},
                                   "good": {"exchanges_ok": "?", "failures": "?",
                                            "latency_ms": {"p50": "?", "p99": "?"}}}
        good = load["good"]
        rss = s.get("rss_mib", {})
        lag = s.get("loop_lag_s", {})
        lines.append(
            f"| {name} | {load['behaviours'][name]['runs']} | {rss.get('peak')} | "
            f"{rss.get('second_half_fitted_growth_mib')} | {lag.get('median')} / "
            f"{lag.get('max')} | {good['exchanges_ok']} | {good['latency_ms']['p50']} / "
            f"{good['latency_ms']['p99']} | {good['failures']} | {s['exit']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="load duration (default 60)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--compression", action="store_true",
                   help="the server accepts permessage-deflate; adds compression bombs")
    p.add_argument("--mix", default="", help="behaviour weights, e.g. good=40,ping_flood=10 "
                   "(names left out weigh 0; default: soak_peers.BEHAVIOURS)")
    p.add_argument("--max-message-size", type=int, default=2**20)
    p.add_argument("--max-buffered-bytes", type=int, default=2**20)
    p.add_argument("--message-queue-size", type=int, default=4)
    p.add_argument("--max-connections", type=int, default=500)
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--disconnect-timeout", type=float, default=5.0)
    p.add_argument("--hold", type=float, default=4.0,
                   help="longest time a hostile client holds on (s)")
    p.add_argument("--good-timeout", type=float, default=10.0,
                   help="a good exchange slower than this fails (s)")
    p.add_argument("--bombs-per-write", type=int, default=64)
    p.add_argument("--drain", type=float, default=15.0,
                   help="seconds the server gets after the load to close everything")
    p.add_argument("--rss-growth-mib", type=float, default=16.0,
                   help="verdict: fitted RSS growth over the second half below this")
    p.add_argument("--rss-limit", type=float, default=4096,
                   help="kill the server above this RSS (MiB)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=str(BENCH / "results-soak.json"))
    p.add_argument("--isolate", action="store_true",
                   help="one run per hostile behaviour (good clients + that one), a table")
    a = p.parse_args()
    hostile = [name for name in BEHAVIOURS if name != "good"
               and (a.compression or name != "compression_bomb")]
    runs = len(hostile) if a.isolate else 1
    watchdog(runs * (a.seconds + a.drain + 30) + 300)
    try:
        if a.isolate:
            record = isolate(a, hostile)
            print(isolation_report(record, a))
        else:
            record = soak(a)
            analyse(record, a)
            print(report(record, a))
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    with open(a.json, "w") as f:
        json.dump(record, f, indent=1)
    print(f"(JSON: {a.json})", file=sys.stderr)
    return record["summary"]["exit"]


if __name__ == "__main__":
    sys.exit(main())
