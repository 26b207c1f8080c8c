"""Neutral load generator (stdlib only, raw blocking/non-blocking sockets).

Drives a server under test with pre-built masked WebSocket frames (or
length-prefixed frames for the plain-TCP stack) and samples the server's
CPU time / RSS from /proc around each measured window.  Subcommands:
  echo       pipelined echo, one RESULT line per message size
  rr         request/response: one message in flight, round trip after
             round trip; server CPU per round trip and the latency of each
             (p50/p99), one RESULT line per message size
  handshake  open + close handshakes in a loop (a few threads)
  idle       RSS growth of the server for N idle connections (--deflate:
             each negotiates permessage-deflate and echoes one compressed
             message first, so the server holds its zlib state)
Every subcommand takes --tls: TLS (the ssl module's defaults, so TLS 1.3;
ALPN http/1.1; the certificate is not verified) for run.py --tls and the
HTTP/2 scenario's --tls mode.  A plain (length-prefixed) TLS connection
ends with a close_notify each way, as trio's SSLStream ends it.
"""

import argparse
import os
import select
import socket
import ssl
import threading
import time
import zlib

from benchutil import (
    client_tls_context,
    emit,
    percentile,
    proc_cpu_seconds,
    proc_rss_kib,
    raise_nofile,
    watchdog,
)
from wsframes import OP_BINARY, OP_CLOSE, FrameCounter, build_frame, client_handshake

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0
CLOSE_FRAME = build_frame(OP_CLOSE, (1000).to_bytes(2, "big"), masked=True)
# a non-blocking socket (TLS or not) that cannot go on right now
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


_tls_contexts = []


def tls_context():
    """The one client context of this process: making one loads the
    system's CA certificates (about 20 ms of CPU), which would otherwise
    make the load generator, not the server, the bottleneck of TLS
    handshakes."""
    if not _tls_contexts:
        _tls_contexts.append(client_tls_context(["http/1.1"]))
    return _tls_contexts[0]


def connect(port, proto, deflate=False, tls=False):
    """Open a TCP (and WebSocket) connection; return (sock, leftover)."""
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = tls_context().wrap_socket(sock, server_hostname=HOST)
    if proto != "ws":
        return sock, b""
    request, accept = client_handshake(HOST, port)
    if deflate:
        request = request[:-2] + DEFLATE_OFFER + b"\r\n"
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF during opening handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or accept not in head:
        raise ConnectionError(f"bad handshake response: {head[:200]!r}")
    if deflate and b"permessage-deflate" not in head.lower():
        raise ConnectionError("the server did not accept permessage-deflate")
    return sock, rest


def deflate_message(payload):
    """One masked binary frame with RSV1: `payload` compressed (RFC 7692)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = bytearray(build_frame(OP_BINARY, data, masked=True))
    frame[0] |= 0x40
    return bytes(frame)


def echo_once(sock, frame, leftover):
    """Send `frame` and read one whole frame back (payload not inspected)."""
    sock.sendall(frame)
    data = leftover
    while True:
        if len(data) >= 2:
            size, offset = data[1] & 0x7F, 2
            if size == 126 and len(data) >= 4:
                size, offset = int.from_bytes(data[2:4], "big"), 4
            elif size == 127 and len(data) >= 10:
                size, offset = int.from_bytes(data[2:10], "big"), 10
            if (size < 126 or offset > 2) and len(data) >= offset + size:
                return
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF before the echo")
        data += chunk


def close_conn(sock, proto, graceful=True):
    """Send a close frame (ws) / FIN or close_notify (plain) and wait for
    the server's EOF."""
    try:
        sock.setblocking(True)
        sock.settimeout(2.0)
        if proto == "ws":
            sock.sendall(CLOSE_FRAME)
        elif isinstance(sock, ssl.SSLSocket):
            sock = tls_goodbye(sock) or sock
        else:
            sock.shutdown(socket.SHUT_WR)
        while graceful and sock.fileno() >= 0:
            chunk = sock.recv(65536)
            if not chunk:
                break
    except OSError:
        pass
    finally:
        sock.close()


def tls_goodbye(sock):
    """End a TLS stream the way trio's SSLStream ends one: a close_notify,
    then the peer's close_notify (or EOF); return the bare socket, to
    drain, or None when the peer went first."""
    try:
        return sock.unwrap()
    except (OSError, ValueError):  # reset, EOF or no close_notify back
        sock.close()
        return None


def pump(sock, counter, blob, flen, window, duration, max_msgs, rbuf):
    """Keep `window` messages in flight for `duration` s; return count."""
    sock.setblocking(False)
    fd = sock.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    rview = memoryview(rbuf)
    credit, sent, received = window, 0, 0
    pending = None
    deadline = time.perf_counter() + duration
    stopping = False
    timeout_ms = int(IO_TIMEOUT * 1000)
    tls = isinstance(sock, ssl.SSLSocket)
    while True:
        if not stopping and (sent >= max_msgs
                             or time.perf_counter() >= deadline):
            stopping = True
        if stopping and pending is None and received >= sent:
            return sent
        if pending is None and credit and not stopping:
            sent += credit
            pending = blob[:credit * flen]
            credit = 0
        poller.modify(fd, select.POLLIN if pending is None
                      else select.POLLIN | select.POLLOUT)
        # TLS may hold decrypted bytes the socket no longer shows
        buffered = tls and sock.pending()
        events = poller.poll(0 if buffered else timeout_ms)
        if not events and not buffered:
            raise TimeoutError("no progress from server")
        ev = events[0][1] if events else select.POLLIN
        if ev & select.POLLOUT and pending is not None:
            try:
                n = sock.send(pending)
            except WOULD_BLOCK:
                n = 0
            pending = pending[n:] if n < len(pending) else None
        if ev & (select.POLLIN | select.POLLERR | select.POLLHUP) or buffered:
            try:
                n = sock.recv_into(rbuf)
            except WOULD_BLOCK:
                continue
            if n == 0:
                raise ConnectionError("server closed the connection")
            got = counter.feed(rview[:n])
            received += got
            credit += got


def cmd_echo(args):
    rbuf = bytearray(1 << 20)
    for size, window in zip(args.sizes, args.windows, strict=True):
        payload = os.urandom(size)
        if args.proto == "ws":
            frame = build_frame(OP_BINARY, payload, masked=True)
        else:
            frame = size.to_bytes(4, "big") + payload
        blob = memoryview(frame * window)
        sock, rest = connect(args.port, args.proto, tls=args.tls)
        counter = FrameCounter(args.proto)
        if rest:
            counter.feed(rest)
        max_msgs = args.max_bytes // size + window
        pump(sock, counter, blob, len(frame), window, args.warmup, max_msgs,
             rbuf)
        srv0 = proc_cpu_seconds(args.cpu_pid)
        me0 = time.process_time()
        t0 = time.perf_counter()
        msgs = pump(sock, counter, blob, len(frame), window, args.duration,
                    max_msgs, rbuf)
        t1 = time.perf_counter()
        me1 = time.process_time()
        srv1 = proc_cpu_seconds(args.cpu_pid)
        close_conn(sock, args.proto)
        emit("RESULT", {"size": size, "window": window, "msgs": msgs,
                        "wall": t1 - t0, "server_cpu": srv1 - srv0,
                        "loadgen_cpu": me1 - me0})


def round_trips(sock, counter, frame, rbuf, duration, max_count):
    """Send `frame` and wait for its whole echo, again and again, for
    `duration` s; return each round trip's latency (ns)."""
    rview = memoryview(rbuf)
    latencies = []
    now = time.perf_counter_ns
    deadline = now() + int(duration * 1e9)
    while True:
        t0 = now()
        sock.sendall(frame)
        got = 0
        while not got:
            n = sock.recv_into(rbuf)
            if n == 0:
                raise ConnectionError("server closed the connection")
            got = counter.feed(rview[:n])
        t1 = now()
        if got != 1:
            raise ConnectionError(f"{got} echoes for one message")
        latencies.append(t1 - t0)
        if t1 >= deadline or len(latencies) >= max_count:
            return latencies


def cmd_rr(args):
    """One message in flight: send, wait for the whole echo, again."""
    rbuf = bytearray(1 << 20)
    for size in args.sizes:
        payload = os.urandom(size)
        if args.proto == "ws":
            frame = build_frame(OP_BINARY, payload, masked=True)
        else:
            frame = size.to_bytes(4, "big") + payload
        sock, rest = connect(args.port, args.proto, tls=args.tls)
        counter = FrameCounter(args.proto)
        if rest:
            counter.feed(rest)
        round_trips(sock, counter, frame, rbuf, args.warmup, args.max_count)
        srv0 = proc_cpu_seconds(args.cpu_pid)
        me0 = time.process_time()
        t0 = time.perf_counter()
        latencies = round_trips(sock, counter, frame, rbuf, args.duration,
                                args.max_count)
        t1 = time.perf_counter()
        me1 = time.process_time()
        srv1 = proc_cpu_seconds(args.cpu_pid)
        close_conn(sock, args.proto)
        latencies.sort()
        emit("RESULT", {"size": size, "msgs": len(latencies), "wall": t1 - t0,
                        "server_cpu": srv1 - srv0, "loadgen_cpu": me1 - me0,
                        "p50_us": percentile(latencies, 50) / 1000,
                        "p99_us": percentile(latencies, 99) / 1000})


def one_handshake(port, proto, tls):
    sock, rest = connect(port, proto, tls=tls)
    if proto == "ws":
        counter = FrameCounter("ws")
        counter.feed(rest)
        sock.sendall(CLOSE_FRAME)
        while not counter.closed:
            chunk = sock.recv(65536)
            if not chunk:
                break
            counter.feed(chunk)
    elif tls:
        sock = tls_goodbye(sock)
        if sock is None:
            return
    else:
        sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
    sock.close()


def cmd_handshake(args):
    counts = [0] * args.concurrency
    errors = []

    def worker(i, deadline, limit):
        try:
            while time.perf_counter() < deadline and counts[i] < limit:
                one_handshake(args.port, args.proto, args.tls)
                counts[i] += 1
        except (OSError, ValueError) as exc:  # reported by run()
            errors.append(repr(exc))

    def run(duration, limit):
        counts[:] = [0] * args.concurrency
        deadline = time.perf_counter() + duration
        threads = [threading.Thread(target=worker, args=(i, deadline, limit))
                   for i in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"handshake failed: {errors[0]}")
        return sum(counts)

    run(args.warmup, 50)
    srv0 = proc_cpu_seconds(args.cpu_pid)
    me0 = time.process_time()
    t0 = time.perf_counter()
    n = run(args.duration, args.max_count // args.concurrency)
    t1 = time.perf_counter()
    me1 = time.process_time()
    srv1 = proc_cpu_seconds(args.cpu_pid)
    emit("RESULT", {"handshakes": n, "wall": t1 - t0,
                    "server_cpu": srv1 - srv0, "loadgen_cpu": me1 - me0,
                    "concurrency": args.concurrency})


def cmd_idle(args):
    """RSS growth of the server (--rss-pid) per idle connection: `--warm`
    connections first, then the baseline, then `--count` more in `--steps`
    equal steps, the RSS read after each (after `--settle` seconds).
    kib_per_conn is the growth over all steps per connection; the steps'
    own rates (step_kib_per_conn) show its spread. The warm-up is the
    marginal cost's guard: a fresh process's first connections partly
    reuse heap its start-up freed, by an amount that depends on how the
    process started (e.g. whether its bytecode came from a cache), not on
    the stack."""
    raise_nofile(args.count + args.warm + 256)
    socks = []
    message = None
    if args.deflate:
        record = b'{"id":1,"type":"trade","symbol":"SYM","price":123.45,"qty":10},'
        message = deflate_message((record * (1024 // len(record) + 1))[:1024])

    def open_one():
        sock, leftover = connect(args.port, args.proto, deflate=args.deflate,
                                 tls=args.tls)
        if message is not None:
            echo_once(sock, message, leftover)
        return sock

    steps = max(1, min(args.steps, args.count))
    sizes = [args.count // steps + (i < args.count % steps)
             for i in range(steps)]
    try:
        for _ in range(args.warm):
            socks.append(open_one())
        time.sleep(args.settle)
        rss = [proc_rss_kib(args.rss_pid)]
        open_time = 0.0
        for size in sizes:
            t = time.perf_counter()
            for _ in range(size):
                socks.append(open_one())
            open_time += time.perf_counter() - t
            time.sleep(args.settle)
            rss.append(proc_rss_kib(args.rss_pid))
    finally:
        for sock in socks:
            sock.close()
    emit("RESULT", {"count": args.count, "warm": args.warm,
                    "rss_before_kib": rss[0], "rss_after_kib": rss[-1],
                    "kib_per_conn": (rss[-1] - rss[0]) / args.count,
                    "step_kib_per_conn": [(b - a) / n for a, b, n
                                          in zip(rss[:-1], rss[1:], sizes, strict=True)],
                    "open_wall": open_time})


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("echo", "rr", "handshake", "idle"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--proto", choices=("ws", "plain"), default="ws")
        s.add_argument("--lifetime", type=float, default=300)
        s.add_argument("--tls", action="store_true")
    e = sub.choices["echo"]
    e.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")])
    e.add_argument("--windows", type=lambda v: [int(x) for x in v.split(",")])
    e.add_argument("--duration", type=float, default=2.0)
    e.add_argument("--warmup", type=float, default=0.3)
    e.add_argument("--max-bytes", type=int, default=8 << 30)
    e.add_argument("--cpu-pid", type=int, required=True)
    r = sub.choices["rr"]
    r.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")])
    r.add_argument("--duration", type=float, default=2.0)
    r.add_argument("--warmup", type=float, default=0.3)
    r.add_argument("--max-count", type=int, default=200000)
    r.add_argument("--cpu-pid", type=int, required=True)
    h = sub.choices["handshake"]
    h.add_argument("--duration", type=float, default=2.0)
    h.add_argument("--warmup", type=float, default=0.3)
    h.add_argument("--max-count", type=int, default=20000)
    h.add_argument("--concurrency", type=int, default=4)
    h.add_argument("--cpu-pid", type=int, required=True)
    i = sub.choices["idle"]
    i.add_argument("--count", type=int, default=1000)
    i.add_argument("--warm", type=int, default=20)
    i.add_argument("--steps", type=int, default=1)
    i.add_argument("--settle", type=float, default=0.5)
    i.add_argument("--rss-pid", type=int, required=True)
    i.add_argument("--deflate", action="store_true")
    args = p.parse_args()
    watchdog(args.lifetime)
    {"echo": cmd_echo, "rr": cmd_rr, "handshake": cmd_handshake,
     "idle": cmd_idle}[args.cmd](args)


if __name__ == "__main__":
    main()
