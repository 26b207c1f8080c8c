"""Shared driver for the per-library CLIENT scripts.  A script supplies an
async context manager `session(url)` yielding (send, recv) and calls
run_trio() or run_asyncio().  Modes:
  echo  pipelined: `window` messages in flight, one RESULT per size with
        the client process's own CPU time (time.process_time)
  rtt   one message in flight, RESULT with latency percentiles (us)
The peer's CPU (--peer-pid) is sampled too, to show it was not saturated.
--payload json sends JSON-like text of the size (as bytes) instead of the
byte pattern, for a realistic compression ratio; --compression asks the
script's session() for permessage-deflate.  A wss:// (or, for the plain
TCP client, tls://) URL gives session() an `ssl_context` that offers ALPN
http/1.1 and does not verify the certificate (the bench's own)."""

import argparse
import time

from benchutil import client_tls_context, emit, percentile, proc_cpu_seconds, watchdog


def parse_args(doc):
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("echo", "rtt"), default="echo")
    p.add_argument("--sizes", default="16")
    p.add_argument("--windows", default="1")
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--max-bytes", type=int, default=8 << 30)
    p.add_argument("--peer-pid", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=300)
    p.add_argument("--payload", choices=("pattern", "json"), default="pattern")
    p.add_argument("--compression", action="store_true")
    a = p.parse_args()
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.windows = [int(x) for x in a.windows.split(",")]
    watchdog(a.lifetime)
    return a


def _peer_cpu(pid):
    return proc_cpu_seconds(pid) if pid else 0.0


class _Window:
    """Bookkeeping shared by the trio and asyncio pipelined loops."""

    def __init__(self, size, duration, max_msgs):
        self.size = size
        self.deadline = time.perf_counter() + duration
        self.max_msgs = max_msgs
        self.sent = 0
        self.received = 0
        self.stop = False

    def got(self, message):
        if len(message) != self.size:
            raise RuntimeError(f"echo of {len(message)} B, want {self.size}")
        self.received += 1
        if not self.stop and (self.sent >= self.max_msgs
                              or time.perf_counter() >= self.deadline):
            self.stop = True
        return self.stop and self.received >= self.sent


async def _rtt(send, recv, payload, duration, now=time.perf_counter_ns):
    lat = []
    deadline = now() + int(duration * 1e9)
    while True:
        t0 = now()
        await send(payload)
        message = await recv()
        t1 = now()
        if len(message) != len(payload):
            raise RuntimeError("short echo")
        lat.append(t1 - t0)
        if t1 >= deadline or len(lat) >= 200000:
            return lat


def _result(args, size, window, msgs, wall, cpu, peer, lat=None):
    out = {"size": size, "window": window, "msgs": msgs, "wall": wall,
           "client_cpu": cpu, "peer_cpu": peer}
    if lat is not None:
        lat.sort()
        out.update(p50_us=percentile(lat, 50) / 1000,
                   p99_us=percentile(lat, 99) / 1000,
                   mean_us=sum(lat) / len(lat) / 1000)
    emit("RESULT", out)


def json_payload(size):
    """`size` bytes of JSON-like records: repetitive keys, varying values
    (deterministic), the kind of traffic compression is used for."""
    records = []
    total = 0
    i = 0
    while total < size:
        record = (f'{{"id":{i},"type":"trade","symbol":"SYM{i * 7919 % 97}",'
                  f'"price":{(i * 104729) % 100000 / 100:.2f},'
                  f'"qty":{(i * 31) % 1000},"side":"{"buy" if i % 3 else "sell"}"}},')
        records.append(record)
        total += len(record)
        i += 1
    return "".join(records).encode()[:size]


async def _measure(args, size, window, pipelined, send, recv):
    if args.payload == "json":
        payload = json_payload(size)
    else:
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    max_msgs = args.max_bytes // size + window
    if args.mode == "rtt":
        await _rtt(send, recv, payload, args.warmup)
    else:
        await pipelined(send, recv, payload, window, args.warmup, max_msgs)
    peer0, cpu0, t0 = _peer_cpu(args.peer_pid), time.process_time(), \
        time.perf_counter()
    lat = None
    if args.mode == "rtt":
        lat = await _rtt(send, recv, payload, args.duration)
        msgs = len(lat)
    else:
        msgs = await pipelined(send, recv, payload, window, args.duration,
                               max_msgs)
    t1, cpu1, peer1 = time.perf_counter(), time.process_time(), \
        _peer_cpu(args.peer_pid)
    _result(args, size, window, msgs, t1 - t0, cpu1 - cpu0, peer1 - peer0,
            lat)


async def _trio_pipelined(send, recv, payload, window, duration, max_msgs):
    import trio

    w = _Window(len(payload), duration, max_msgs)
    credits = trio.Semaphore(window)

    async def sender():
        while True:
            await credits.acquire()
            if w.stop:
                return
            w.sent += 1
            await send(payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while not w.got(await recv()):
            credits.release()
        nursery.cancel_scope.cancel()
    return w.sent


async def _asyncio_pipelined(send, recv, payload, window, duration,
                             max_msgs):
    import asyncio

    w = _Window(len(payload), duration, max_msgs)
    credits = asyncio.Semaphore(window)

    async def sender():
        while True:
            await credits.acquire()
            if w.stop:
                return
            w.sent += 1
            await send(payload)

    task = asyncio.create_task(sender())
    try:
        while not w.got(await recv()):
            credits.release()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return w.sent


async def _run_all(args, session, pipelined):
    extra = {"compression": True} if args.compression else {}
    if args.url.startswith(("wss://", "tls://")):
        extra["ssl_context"] = client_tls_context(["http/1.1"])
    for size, window in zip(args.sizes, args.windows, strict=True):
        async with session(args.url, **extra) as (send, recv):
            await _measure(args, size, window, pipelined, send, recv)


def run_trio(session, doc):
    import trio

    args = parse_args(doc)
    trio.run(_run_all, args, session, _trio_pipelined)


def run_asyncio(session, doc):
    import asyncio

    args = parse_args(doc)
    asyncio.run(_run_all(args, session, _asyncio_pipelined))
