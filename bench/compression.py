"""The compression scenario of run.py (`run.py --compression`): what
permessage-deflate costs, for `ours` and websockets' Trio API.

For each round and stack it starts the stack's server twice, with
compression off and on, and measures:
  * KiB per idle compressed connection: `loadgen.py idle --deflate` opens
    N connections that negotiate permessage-deflate and each echo one
    compressed 1 KiB JSON message (so both directions' zlib state exists,
    as on a live connection), then measures the server's RSS growth. The
    same with compression off gives the baseline.
  * CPU per message, client and server: the stack's own client against
    its own server, pipelined echo of JSON-like payloads (SIZES), once
    with compression on both sides and once off. The difference is the
    cost of compressing and inflating each message, on each side.
  * The compression ratio of the payloads (zlib here, for reference).
Both stacks compress every message (ours with threshold 0) with their own
default window and memory settings; those defaults are part of what is
compared (ours: 12-bit window, memLevel 5 for the compressor)."""

import zlib

import measure
from clients.clientcore import json_payload
from stacks import BY_KEY

STACK_KEYS = ("ours", "wstrio")
SIZES = [1024, 16384, 262144]
WINDOWS = {1024: 16, 16384: 8, 262144: 2}


def _log(msg):
    import sys

    print(msg, file=sys.stderr, flush=True)


def _measure_stack(run, stack, compressed):
    tag = "on" if compressed else "off"
    args = ["--compression"] if compressed else []
    server = measure.Server(
        f"{stack.key}-deflate-{tag}",
        run.python[stack.key],
        stack.server,
        args,
        uses_repo=stack.uses_repo,
    )
    try:
        idle_args = ["--count", str(run.cfg["idle"]), "--rss-pid", str(server.pid)]
        if compressed:
            idle_args.append("--deflate")
        (res,) = measure.loadgen("idle", server.port, stack.proto, idle_args, timeout=180)
        run.add(stack, f"idle_kib:{tag}", res["kib_per_conn"])
        _log(f"  {stack.key:8} compression {tag:3} idle {res['kib_per_conn']:.1f} KiB/conn")
        d = run.cfg["duration"]
        client_args = [
            "--mode",
            "echo",
            "--payload",
            "json",
            "--sizes",
            ",".join(map(str, SIZES)),
            "--windows",
            ",".join(str(WINDOWS[s]) for s in SIZES),
            "--duration",
            str(d),
            "--warmup",
            str(run.cfg["warmup"]),
            "--peer-pid",
            str(server.pid),
            *args,
        ]
        results = measure.client(
            run.python[stack.key],
            stack.client,
            f"ws://127.0.0.1:{server.port}/",
            client_args,
            timeout=60 + len(SIZES) * 2 * d,
            uses_repo=stack.uses_repo,
        )
        for res in results:
            size, n = res["size"], res["msgs"]
            run.add(stack, f"cli_us:{tag}:{size}", res["client_cpu"] / n * 1e6)
            run.add(stack, f"srv_us:{tag}:{size}", res["peer_cpu"] / n * 1e6)
            _log(
                f"  {stack.key:8} compression {tag:3} {size:>7} B "
                f"client {res['client_cpu'] / n * 1e6:8.1f} us/msg "
                f"server {res['peer_cpu'] / n * 1e6:8.1f} us/msg"
            )
    finally:
        server.stop()


def run_rounds(run):
    for r in range(run.cfg["rounds"]):
        _log(f"== compression round {r + 1}/{run.cfg['rounds']}")
        order = run.stacks[r % len(run.stacks) :] + run.stacks[: r % len(run.stacks)]
        for stack in order:
            for compressed in (False, True):
                try:
                    _measure_stack(run, stack, compressed)
                except measure.EXPECTED as exc:
                    run.fail(stack, f"compression {'on' if compressed else 'off'}", exc)


def _median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def render(run):
    """Markdown tables of the medians."""
    med = {key: {m: _median(v) for m, v in run.samples[key].items()} for key in run.samples}

    def cell(value, fmt="{:.1f}"):
        return "—" if value is None else fmt.format(value)

    labels = {s.key: s.label for s in run.stacks}
    lines = [
        "## Compression (permessage-deflate)",
        "",
        "Memory per idle connection after one compressed 1 KiB message each (server RSS growth):",
        "",
        "| stack | KiB/conn off | KiB/conn on | cost of compression |",
        "|---|---:|---:|---:|",
    ]
    for key in med:
        off, on = med[key].get("idle_kib:off"), med[key].get("idle_kib:on")
        extra = None if off is None or on is None else on - off
        lines.append(f"| {labels[key]} | {cell(off)} | {cell(on)} | {cell(extra)} |")
    lines += [
        "",
        "CPU per echoed JSON message, us (own client against own server; "
        "zlib ratio of the payload in brackets):",
        "",
        "| stack | size | client off | client on | server off | server on | server cost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in med:
        for size in SIZES:
            payload = json_payload(size)
            ratio = len(zlib.compress(payload)) / len(payload)
            m = med[key]
            off, on = m.get(f"srv_us:off:{size}"), m.get(f"srv_us:on:{size}")
            cost = None if off is None or on is None else on - off
            lines.append(
                f"| {labels[key]} | {size} ({ratio:.0%}) | {cell(m.get(f'cli_us:off:{size}'))} "
                f"| {cell(m.get(f'cli_us:on:{size}'))} | {cell(off)} | {cell(on)} "
                f"| {cell(cost)} |"
            )
    for key, errors in run.errors.items():
        for error in errors:
            lines.append(f"\n!! {labels.get(key, key)}: {error}")
    return "\n".join(lines)


def stacks_for(keys):
    """The stacks the scenario runs: ours and websockets.trio (or those of
    them named by --only)."""
    chosen = [k for k in STACK_KEYS if not keys or k in keys]
    return [BY_KEY[k] for k in chosen]
