"""The pure-Python scenario of run.py (`run.py --pure-python`): ours as it
runs where no C compiler was at hand (the documented fallback) against
websockets built without its C extension, server CPU per echoed message.

Rows (each its own server process; rounds round-robin, the starting row
rotating, as in the main run):
  * ours, pure Python: this repo's `trio_websocket` copied without its
    compiled module (bench/.venvs/pure-tree/, made afresh each run), so
    `_wire.masking` falls back to its Python maskers exactly as a
    `TRIO_WEBSOCKET_NO_EXTENSIONS=1` install does.  The fast paths stay on
    (TRIO_WEBSOCKET_FAST_PATHS=0 would turn off the Python ones too).
  * ours, compiled: the repo itself with its built `_speedups` (reference).
  * websockets asyncio / Trio API, no C extension: venv `websockets-pure`,
    websockets 17.4 built from its sdist with BUILD_EXTENSION=no (its
    setup.py then leaves `websockets.speedups` out).
Every row's build is checked before the run (the compiled module must be
absent where it should be, present where it should be); a row that fails
the check is skipped with its error.

Measured: `loadgen.py echo` (pipelined, the main run's windows), server
CPU per echoed message at 16 B, 1 KiB, 64 KiB, 1 MiB, and msgs/s.
Target (issue 17): ours in pure Python at or below websockets without its
C extension at every size (checked against both of its APIs).  Results in
bench/results-pure-python.json."""

import shutil
import subprocess
import sys

import measure
import report
import venvs
from stacks import BENCH, BY_KEY, REPO, VENVS, Stack

PURE_TREE = BENCH / ".venvs" / "pure-tree"
STACK_KEYS = ("ours-pure", "ours", "wsasyncio-pure", "wstrio-pure")

_OURS = BY_KEY["ours"]
_STACKS = {
    "ours-pure": Stack("ours-pure", "ours, pure Python", "ours pure", "ours",
                       _OURS.server, _OURS.client, uses_repo=True,
                       tree=PURE_TREE),
    "ours": Stack("ours", "ours, compiled speedup", "ours compiled", "ours",
                  _OURS.server, _OURS.client, uses_repo=True),
    "wsasyncio-pure": Stack("wsasyncio-pure",
                            "websockets asyncio, no C extension",
                            "websockets asyncio pure", "websockets-pure",
                            "servers/websockets_asyncio_server.py",
                            "clients/websockets_asyncio_client.py"),
    "wstrio-pure": Stack("wstrio-pure", "websockets.trio, no C extension",
                         "websockets.trio pure", "websockets-pure",
                         "servers/websockets_trio_server.py",
                         "clients/websockets_trio_client.py"),
}
# the rows ours in pure Python must be at or below
TARGET_PEERS = ("wsasyncio-pure", "wstrio-pure")


def stacks_for(keys):
    return [_STACKS[k] for k in STACK_KEYS if not keys or k in keys]


def prepare(stacks, log):
    """Copy the package without compiled modules for the pure row."""
    if not any(s.tree == PURE_TREE for s in stacks):
        return
    if PURE_TREE.exists():
        shutil.rmtree(PURE_TREE)
    shutil.copytree(REPO / "trio_websocket", PURE_TREE / "trio_websocket",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd",
                                                  "__pycache__"))
    log(f"[pure] {REPO / 'trio_websocket'} copied to {PURE_TREE} without "
        "compiled modules")


_PROBES = {
    "ours": ("import trio_websocket\n"
             "from trio_websocket._wire import masking\n"
             "print(masking.COMPILED, trio_websocket.__file__)"),
    "websockets": ("import importlib.util, websockets\n"
                   "print(importlib.util.find_spec('websockets.speedups')"
                   " is not None, websockets.__file__)"),
}


def check_build(stack):
    """Whether the stack's compiled module is importable, raising
    BenchError unless that is what the row stands for."""
    kind = "ours" if stack.uses_repo else "websockets"
    tree = stack.tree or REPO
    cp = subprocess.run(
        [str(venvs.python_of(stack.venv)), "-c", _PROBES[kind]],
        check=False, capture_output=True, text=True, timeout=120, cwd="/",
        env=measure.child_env(stack.uses_repo, tree))
    if cp.returncode != 0:
        err = (cp.stderr.strip().splitlines() or ["?"])[-1]
        raise measure.BenchError(f"cannot import {kind}: {err}")
    compiled, where = cp.stdout.split()
    compiled = compiled == "True"
    if stack.uses_repo and not where.startswith(str(tree)):
        raise measure.BenchError(f"trio_websocket resolved to {where}, not "
                                 f"inside {tree}")
    want = stack.key == "ours"
    if compiled != want:
        raise measure.BenchError(
            f"{kind} from {where} is {'' if compiled else 'not '}compiled"
            + ("; build it: python setup.py build_ext --inplace"
               if want else ""))
    return compiled


def note(stack, info):
    compiled = info.get("compiled")
    build = ("compiled module present" if compiled
             else "no compiled module (checked)")
    where = f", from `{stack.tree}`" if stack.tree else ""
    return (f"{stack.label}: venv `{stack.venv}` "
            f"({' '.join(VENVS[stack.venv])}){where}; {build}")


def run_rounds(run, sizes):
    for r in range(run.cfg["rounds"]):
        print(f"== pure-Python round {r + 1}/{run.cfg['rounds']}",
              file=sys.stderr, flush=True)
        try:
            order = run.start_round(r)
            for size in sizes:
                run.each(order, f"server echo {size} B", run.server_echo,
                         size)
        finally:
            run.stop_servers()


def checks(get, sizes):
    out = []
    for peer in TARGET_PEERS:
        for size in sizes:
            a, b = get("ours-pure", f"srv_cpu_us:{size}"), \
                get(peer, f"srv_cpu_us:{size}")
            ratio = a / b if a is not None and b else None
            out.append({"name": f"pure Python: server CPU/msg "
                        f"{report.SIZE_LABEL[size]} at or below "
                        f"{_STACKS[peer].label}",
                        "metric": f"srv_cpu_us:{size}", "peer": peer,
                        "ratio": ratio, "limit": 1.0, "op": "<=",
                        "ok": None if ratio is None else ratio <= 1.0})
    return out


def render(run, sizes, notes=()):
    med = report.medians(run.samples)
    mx = {k: {m: max(v) for m, v in ms.items() if v}
          for k, ms in run.samples.items()}
    stacks = [_STACKS[k] for k in STACK_KEYS if k in run.samples]

    def get(key, metric, src=med):
        return src.get(key, {}).get(metric)

    def rows(metrics, src=med):
        return [[s.label] + [report.fmt(get(s.key, m, src)) for m in metrics]
                for s in stacks]

    szl = [report.SIZE_LABEL[s] for s in sizes]
    cfg = run.cfg
    parts = [
        f"## Pure Python (median of {cfg['rounds']} rounds, "
        f"{cfg['duration']} s windows)", "",
        *[f"- {n}" for n in notes], "",
        "### Server CPU per echoed message (us, pipelined, lower is better)",
        report.table(["stack", *szl],
                     rows([f"srv_cpu_us:{s}" for s in sizes])), "",
        "### Server throughput (msgs/s)",
        report.table(["stack", *szl],
                     rows([f"srv_rate:{s}" for s in sizes])), "",
        "### Sanity: max over rounds of the load generator's CPU % of one core",
        report.table(["stack", *szl],
                     rows([f"loadgen_pct:{s}" for s in sizes], mx)),
    ]
    if "ours-pure" in run.samples:
        peers = [s for s in stacks if s.key != "ours-pure"]
        rrows = []
        for size in sizes:
            row = [f"server CPU {report.SIZE_LABEL[size]}"]
            for p in peers:
                a = get("ours-pure", f"srv_cpu_us:{size}")
                b = get(p.key, f"srv_cpu_us:{size}")
                row.append(report.fmt(a / b if a is not None and b else None))
            rrows.append(row)
        parts += ["", "### Ratios ours pure Python / peer (< 1: ours pure "
                  "Python costs less)",
                  report.table(["metric"] + [f"ours pure/{p.short}"
                                             for p in peers], rrows)]
    out = checks(get, sizes)
    parts += ["", "### Targets (pure Python)"]
    for c in out:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["ok"]]
        parts.append(f"- [{'x' if c['ok'] else ' '}] {mark} {c['name']} "
                     f"(ours pure/{_STACKS[c['peer']].short} = "
                     f"{report.fmt(c['ratio'])}, need <= 1)")
    errs = [(k, e) for k, es in run.errors.items() for e in es]
    if errs:
        parts += ["", "### Errors"] + [f"- {k}: {e}" for k, e in errs]
    return "\n".join(parts), out
