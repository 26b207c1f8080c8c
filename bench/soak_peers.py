"""The load process of bench/soak.py: N clients against one server, each
picking a behaviour at random from a weighted mix, again and again, until
the run's deadline.

Rules:
- Only 127.0.0.1. Every behaviour has its own time budget and the whole run
  a deadline (trio cancel scopes), so every loop and every wait is bounded.
- Every peer, good or hostile, is a plain trio socket with hand-built frames
  (wsframes.py; client frames masked, RFC 6455 5.3): nothing of the library
  under test runs in this process, so what fails is the server.
- Good clients ("good") check every echo byte for byte; any error of theirs,
  a refused handshake included, is a failure, recorded with when, where
  and why. Hostile behaviours only count outcomes (how the server ended
  them); none of those is a failure.
- A hostile peer leaves with a TCP reset (SO_LINGER 0) unless its behaviour
  says otherwise.
- Prints one `RESULT {json}` line at the end (benchutil.emit), also when
  stopped early by SIGTERM.
"""

import argparse
import os
import random
import signal
import socket
import struct
import time
import zlib
from collections import Counter

import trio
from benchutil import emit, percentile, raise_nofile, watchdog
from wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    build_frame,
    client_handshake,
    frame_header,
)

HOST = "127.0.0.1"
READ_SIZE = 65536
SMALL_RCVBUF = 4096  # slow and non-reading peers: the server's sends block soon
DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
EMPTY_DEFLATE_TAIL = b"\x00\x00\xff\xff"
NORMAL_CLOSE = build_frame(OP_CLOSE, (1000).to_bytes(2, "big"), masked=True)


class ServerClosed(Exception):
    """The server sent a close frame."""

    def __init__(self, code):
        super().__init__(f"close {code}")
        self.code = code


class Refused(Exception):
    """The server answered the opening handshake with something but 101."""

    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class Mismatch(Exception):
    """An echo differed from what was sent."""


def masked_frame(opcode, payload, fin=True, rsv1=False):
    frame = bytearray(build_frame(opcode, payload, masked=True))
    if not fin:
        frame[0] &= 0x7F
    if rsv1:
        frame[0] |= 0x40
    return bytes(frame)


def deflate(payload, wbits, level=6):
    """A message compressed on its own (RFC 7692 7.2.1: sync flush, tail cut)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def parse_frame(buf):
    """The first complete server frame in `buf` as (fin, rsv1, opcode,
    payload, consumed), or None if it is incomplete."""
    size = len(buf)
    if size < 2:
        return None
    length = buf[1] & 0x7F
    pos = 2
    if length == 126:
        if size < 4:
            return None
        length = int.from_bytes(buf[2:4], "big")
        pos = 4
    elif length == 127:
        if size < 10:
            return None
        length = int.from_bytes(buf[2:10], "big")
        pos = 10
    if buf[1] & 0x80:  # servers must not mask, but skip a mask if there is one
        pos += 4
    if size < pos + length:
        return None
    b0 = buf[0]
    return (bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F,
            bytes(buf[pos:pos + length]), pos + length)


class Conn:
    """One raw client connection (a trio SocketStream) with a frame reader."""

    def __init__(self, trial, stream):
        self.trial = trial
        self.stream = stream
        self.buf = bytearray()
        self.client_wbits = None  # set when permessage-deflate was agreed
        self.inflater = None
        self.closed_gracefully = False

    async def send(self, data):
        await self.stream.send_all(data)
        self.trial.sent += len(data)

    async def read_some(self):
        chunk = await self.stream.receive_some(READ_SIZE)
        if not chunk:
            raise EOFError("server EOF")
        self.buf += chunk
        return chunk

    async def handshake(self, deflate_offer=False):
        request, accept = client_handshake(HOST, self.trial.run.port)
        if deflate_offer:
            request = request[:-2] + DEFLATE_OFFER + b"\r\n"
        await self.send(request)
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise Refused("oversized response head")
            await self.read_some()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        status = head.split(b" ", 2)[1].decode("latin-1") if b" " in head else "?"
        if status != "101":
            raise Refused(status)
        if accept not in head:
            raise Refused("101 with a wrong accept key")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-extensions":
                self.client_wbits = 15
                for param in value.split(b";"):
                    key, _, bits = param.strip().partition(b"=")
                    if key == b"client_max_window_bits" and bits:
                        self.client_wbits = int(bits.strip(b'"'))
                self.inflater = zlib.decompressobj(-15)

    async def frame(self):
        while True:
            parsed = parse_frame(self.buf)
            if parsed is not None:
                del self.buf[:parsed[4]]
                return parsed[:4]
            await self.read_some()

    async def message(self):
        """The next data message (pings answered, pongs skipped)."""
        parts = []
        compressed = False
        while True:
            fin, rsv1, opcode, payload = await self.frame()
            if opcode == OP_PING:
                await self.send(masked_frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                raise ServerClosed(code)
            if opcode != OP_CONT:
                compressed = rsv1
            parts.append(payload)
            if fin:
                break
        data = b"".join(parts)
        if compressed:
            data = self.inflater.decompress(data + EMPTY_DEFLATE_TAIL)
        return data

    async def close_gracefully(self):
        """Send a normal close, wait for the server's close frame and EOF."""
        await self.send(NORMAL_CLOSE)
        while True:
            try:
                _, _, opcode, _ = await self.frame()
            except EOFError:
                self.closed_gracefully = True
                return
            if opcode == OP_CLOSE:
                break
        while True:
            chunk = await self.stream.receive_some(READ_SIZE)
            if not chunk:
                self.closed_gracefully = True
                return

    def reset(self):
        """Leave with a TCP reset (SO_LINGER 0), unless the closing
        handshake completed: then a plain close."""
        sock = self.stream.socket
        if self.closed_gracefully:
            sock.close()
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()


class Trial:
    """One run of one behaviour by one client."""

    def __init__(self, run, name, rng):
        self.run = run
        self.name = name
        self.rng = rng
        self.sent = 0
        self.conns = []

    async def connect(self, rcvbuf=None):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await sock.connect((HOST, self.run.port))
        except BaseException:
            sock.close()
            raise
        conn = Conn(self, trio.SocketStream(sock))
        self.conns.append(conn)
        return conn

    def budget(self):
        """Seconds this hostile trial holds on (at most the run's --hold)."""
        return self.rng.uniform(0.3, self.run.hold)

    def random_bytes(self, size):
        return self.rng.randbytes(size)


# ---- the good client -------------------------------------------------------

def good_payload(trial):
    rng = trial.rng
    limit = trial.run.max_message_size
    r = rng.random()
    if r < 0.6:
        size = rng.randint(0, 125)
    elif r < 0.9:
        size = rng.randint(126, 16384)
    elif r < 0.99:
        size = rng.randint(16385, min(131072, limit))
    else:
        size = rng.randint(min(131073, limit), limit)
    if rng.random() < 0.5:
        return os.urandom(size)
    text = b"soak %d: the quick brown fox jumps over the lazy dog. " % rng.randint(0, 10**6)
    return (text * (size // len(text) + 1))[:size]


async def good(trial):
    run = trial.run
    phase = "connect"
    size = None
    try:
        with trio.fail_after(run.good_timeout):
            conn = await trial.connect()
            phase = "handshake"
            await conn.handshake(deflate_offer=run.compression)
        for _ in range(trial.rng.randint(1, 20)):
            payload = good_payload(trial)
            size = len(payload)
            phase = "echo"
            with trio.fail_after(run.good_timeout):
                started = time.perf_counter()
                if conn.client_wbits is not None and trial.rng.random() < 0.5:
                    await conn.send(masked_frame(
                        OP_BINARY, deflate(payload, conn.client_wbits), rsv1=True))
                else:
                    await conn.send(masked_frame(OP_BINARY, payload))
                echoed = await conn.message()
                elapsed = time.perf_counter() - started
            if echoed != payload:
                raise Mismatch(f"echo of {size} B came back as {len(echoed)} B, different")
            run.good_latencies.append(elapsed)
            second = int(time.time() - run.epoch)
            run.good_per_second[second] += 1
        size = None
        phase = "close"
        with trio.fail_after(run.good_timeout):
            await conn.close_gracefully()
        return "ok"
    except trio.Cancelled:
        raise
    except Exception as exc:
        if isinstance(exc, trio.TooSlowError):
            error = f"no answer within --good-timeout ({run.good_timeout:g} s)"
        else:
            error = f"{type(exc).__name__}: {exc}"
        run.good_failures.append({
            "t": round(time.time() - run.epoch, 2), "phase": phase, "size": size,
            "error": error})
        return f"FAILED in {phase}"


# ---- hostile behaviours ----------------------------------------------------

async def reset_mid_message(trial):
    """A frame header promising a big payload, part of it, then a reset."""
    conn = await trial.connect()
    await conn.handshake()
    rng = trial.rng
    promised = rng.randint(65536, trial.run.max_message_size)
    part = rng.randint(0, min(promised - 1, 262144))
    await conn.send(frame_header(OP_BINARY, promised, mask=os.urandom(4))
                    + trial.random_bytes(part))
    await trio.sleep(rng.uniform(0, 0.2))
    return "reset"


async def reset_before_handshake(trial):
    conn = await trial.connect()
    request, _ = client_handshake(HOST, trial.run.port)
    cut = trial.rng.randint(0, len(request) - 1)
    if cut:
        await conn.send(request[:cut])
    await trio.sleep(trial.rng.uniform(0, 0.1))
    return "reset"


async def reset_after_handshake(trial):
    conn = await trial.connect()
    await conn.handshake(deflate_offer=trial.run.compression)
    if trial.rng.random() < 0.5:
        await conn.send(masked_frame(OP_BINARY, trial.random_bytes(trial.rng.randint(0, 4096))))
    return "reset"


async def send_for(conn, trial, blob, seconds):
    """Write `blob` again and again for `seconds` (or until the server stops
    reading): returns how it ended."""
    with trio.move_on_after(seconds):
        while True:
            with trio.move_on_after(min(1.0, seconds)) as stuck:
                await conn.send(blob)
            if stuck.cancelled_caught:
                await trio.sleep_forever()  # the server stopped reading: hold on
    return "held to budget"


async def ping_flood(trial):
    """Pings as fast as the server takes them, never reading. Half the
    time the handler's own send is blocked first (two big messages the
    never-reading peer does not take), so pongs pile up behind it."""
    conn = await trial.connect(rcvbuf=SMALL_RCVBUF)
    await conn.handshake()
    if trial.rng.random() < 0.5:
        big = bytes(trial.run.max_message_size // 2)
        await conn.send(masked_frame(OP_BINARY, big) * 2)
    await send_for(conn, trial, trial.run.blob("pings"), trial.budget())
    return "held to budget"


async def frame_flood(trial):
    """Floods of empty or tiny frames, never reading: endless empty
    continuation frames of a message that never ends, or empty messages,
    or one-byte messages."""
    conn = await trial.connect(rcvbuf=SMALL_RCVBUF)
    await conn.handshake()
    kind = trial.rng.choice(("empty_continuations", "empty_messages", "tiny_messages"))
    if kind == "empty_continuations":
        await conn.send(masked_frame(OP_BINARY, b"", fin=False))
    trial.run.totals[trial.name][kind] += 1
    await send_for(conn, trial, trial.run.blob(kind), trial.budget())
    return "held to budget"


async def compression_bomb(trial):
    """Deflated messages that inflate to just under max_message_size,
    --bombs-per-write of them in each write, never reading."""
    conn = await trial.connect(rcvbuf=SMALL_RCVBUF)
    await conn.handshake(deflate_offer=True)
    if conn.client_wbits is None:
        return "compression declined"
    await send_for(conn, trial, trial.run.bomb_blob(conn.client_wbits), trial.budget())
    return "held to budget"


async def slow_reader(trial):
    """Asks for echoes, then reads them 1 byte per 100 ms."""
    conn = await trial.connect(rcvbuf=SMALL_RCVBUF)
    await conn.handshake()
    rng = trial.rng
    budget = trial.budget()

    async def ask():
        while True:
            size = rng.randint(16384, min(262144, trial.run.max_message_size))
            await conn.send(masked_frame(OP_BINARY, bytes(size)))

    with trio.move_on_after(budget):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            while True:
                if not await conn.stream.receive_some(1):
                    raise EOFError("server EOF")
                await trio.sleep(0.1)
    return "held to budget"


async def half_open(trial):
    """Half an opening request, then wait for the server to drop us
    (connect_timeout) or for the budget (connect_timeout + 3 s) to end."""
    conn = await trial.connect()
    request, _ = client_handshake(HOST, trial.run.port)
    await conn.send(request[:len(request) // 2])
    started = time.monotonic()
    answered = b""
    with trio.move_on_after(trial.run.connect_timeout + 3) as scope:
        while True:
            chunk = await conn.stream.receive_some(READ_SIZE)
            if not chunk:
                break
            answered += chunk
    if scope.cancelled_caught:
        return "never dropped"
    waited = time.monotonic() - started
    late = "" if waited <= trial.run.connect_timeout + 1 else " late"
    if answered:
        status = answered.split(b" ", 2)[1].decode("latin-1", "replace")
        return f"dropped{late} with HTTP {status}"
    return f"dropped{late}"


async def garbage(trial):
    """Random bytes instead of the request, or after the handshake; then
    read until the server ends it (or the budget ends)."""
    conn = await trial.connect()
    rng = trial.rng
    after = rng.random() < 0.5
    if after:
        await conn.handshake()
    when = "after handshake" if after else "before handshake"
    await conn.send(trial.random_bytes(rng.randint(1, 2048)))
    try:
        return await read_verdict(conn, after, trial.run.connect_timeout + 3)
    except (EOFError, trio.BrokenResourceError, ConnectionError) as exc:
        return f"{when}: {classify(exc)}"


async def read_verdict(conn, after, seconds):
    """How the server answers garbage: its HTTP status, close code, or nothing."""
    with trio.move_on_after(seconds):
        if not after:
            while b"\r\n" not in conn.buf:
                await conn.read_some()
            status = bytes(conn.buf).split(b" ", 2)
            return f"before handshake: HTTP {status[1].decode('latin-1', 'replace')}" \
                if len(status) > 1 else "before handshake: unparsable answer"
        while True:
            _, _, opcode, payload = await conn.frame()
            if opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                return f"after handshake: close {code}"
    return f"{'after' if after else 'before'} handshake: still open after {seconds:g} s"


async def stop_reading(trial):
    """Asks for echoes of 16-256 KiB without ever reading them."""
    conn = await trial.connect(rcvbuf=SMALL_RCVBUF)
    await conn.handshake()
    rng = trial.rng
    with trio.move_on_after(trial.budget()):
        while True:
            with trio.move_on_after(1.0) as stuck:
                size = rng.randint(16384, min(262144, trial.run.max_message_size))
                await conn.send(masked_frame(OP_BINARY, bytes(size)))
            if stuck.cancelled_caught:
                await trio.sleep_forever()  # the server stopped reading: hold on
    return "held to budget"


BEHAVIOURS = {
    "good": (good, 40),
    "reset_mid_message": (reset_mid_message, 6),
    "reset_before_handshake": (reset_before_handshake, 3),
    "reset_after_handshake": (reset_after_handshake, 3),
    "ping_flood": (ping_flood, 6),
    "frame_flood": (frame_flood, 6),
    "compression_bomb": (compression_bomb, 6),  # only with --compression
    "slow_reader": (slow_reader, 6),
    "half_open": (half_open, 4),
    "garbage": (garbage, 6),
    "stop_reading": (stop_reading, 6),
}


def parse_mix(text, compression):
    """`name=weight,...` (missing names weigh 0); empty: the defaults."""
    if text:
        mix = {}
        for item in text.split(","):
            name, _, weight = item.partition("=")
            if name.strip() not in BEHAVIOURS:
                raise SystemExit(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
            mix[name.strip()] = float(weight or 1)
    else:
        mix = {name: weight for name, (_, weight) in BEHAVIOURS.items()}
    if not compression:
        mix.pop("compression_bomb", None)
    return {name: weight for name, weight in mix.items() if weight > 0}


def classify(exc):
    """How the server ended a trial, from the exception that ended it."""
    if isinstance(exc, ServerClosed):
        return f"server sent close {exc.code}"
    if isinstance(exc, Refused):
        return f"handshake refused: HTTP {exc.status}"
    if isinstance(exc, EOFError):
        return "server EOF"
    if isinstance(exc, (trio.BrokenResourceError, ConnectionError)):
        return "server reset"
    return f"error {type(exc).__name__}"


class Run:
    def __init__(self, args):
        self.port = args.port
        self.epoch = args.epoch
        self.deadline = None
        self.hold = args.hold
        self.good_timeout = args.good_timeout
        self.connect_timeout = args.connect_timeout
        self.max_message_size = args.max_message_size
        self.compression = args.compression
        self.bombs_per_write = args.bombs_per_write
        self.seed = args.seed
        self.mix = parse_mix(args.mix, args.compression)
        self.runs = Counter()
        self.outcomes = {name: Counter() for name in self.mix}
        self.sent = Counter()
        self.totals = {name: Counter() for name in self.mix}
        self.good_latencies = []
        self.good_per_second = Counter()
        self.good_failures = []
        self._blobs = {}

    def blob(self, kind):
        """A pre-built write of about 64 KiB of flood frames."""
        if kind not in self._blobs:
            one = {
                "pings": masked_frame(OP_PING, b"p" * 125),
                "empty_continuations": masked_frame(OP_CONT, b"", fin=False),
                "empty_messages": masked_frame(OP_BINARY, b""),
                "tiny_messages": masked_frame(OP_BINARY, b"x"),
            }[kind]
            self._blobs[kind] = one * (65536 // len(one))
        return self._blobs[kind]

    def bomb_blob(self, wbits):
        key = ("bomb", wbits)
        if key not in self._blobs:
            body = deflate(bytes(self.max_message_size - 1), wbits, level=9)
            self._blobs[key] = masked_frame(OP_BINARY, body, rsv1=True) * self.bombs_per_write
        return self._blobs[key]

    async def trial(self, name, rng):
        trial = Trial(self, name, rng)
        self.runs[name] += 1
        try:
            with trio.move_on_at(self.deadline) as scope:
                outcome = await BEHAVIOURS[name][0](trial)
            if scope.cancelled_caught:
                outcome = "cut by the end of the run"
        except Exception as exc:  # ServerClosed, Refused, EOFError, OSError...
            while getattr(exc, "exceptions", None):  # a group from a behaviour's nursery
                exc = exc.exceptions[0]
            outcome = classify(exc)
        finally:
            for conn in trial.conns:
                conn.reset()
        self.outcomes[name][outcome] += 1
        self.sent[name] += trial.sent

    async def client(self, index):
        rng = random.Random(self.seed * 100003 + index)
        names = list(self.mix)
        weights = [self.mix[name] for name in names]
        while trio.current_time() < self.deadline:
            await self.trial(rng.choices(names, weights)[0], rng)

    def result(self):
        latencies = sorted(self.good_latencies)
        ms = [round(1000 * v, 3) if v is not None else None for v in
              (percentile(latencies, 50), percentile(latencies, 99),
               latencies[-1] if latencies else None)]
        return {
            "mix": self.mix,
            "behaviours": {
                name: {"runs": self.runs[name], "outcomes": dict(self.outcomes[name]),
                       "bytes_sent": self.sent[name],
                       **({"kinds": dict(self.totals[name])} if self.totals[name] else {})}
                for name in self.mix},
            "good": {
                "exchanges_ok": len(latencies),
                "latency_ms": {"p50": ms[0], "p99": ms[1], "max": ms[2]},
                "per_second": {str(k): v for k, v in sorted(self.good_per_second.items())},
                "failures": len(self.good_failures),
                "failure_list": self.good_failures[:200],
            },
            "load_cpu_seconds": time.process_time(),
        }


async def stop_on_sigterm(cancel_scope):
    """SIGTERM (soak.py stopping us early, e.g. when the server died) ends
    the run; the result is still printed."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()
            return


async def main(args):
    run = Run(args)
    run.deadline = trio.current_time() + args.seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_sigterm, nursery.cancel_scope)
        async with trio.open_nursery() as clients:
            for index in range(args.clients):
                clients.start_soon(run.client, index)
        nursery.cancel_scope.cancel()
    emit("RESULT", run.result())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--epoch", type=float, default=None, help="time.time() of t=0")
    p.add_argument("--mix", default="")
    p.add_argument("--hold", type=float, default=4.0)
    p.add_argument("--good-timeout", type=float, default=10.0)
    p.add_argument("--connect-timeout", type=float, required=True)
    p.add_argument("--max-message-size", type=int, required=True)
    p.add_argument("--bombs-per-write", type=int, default=64)
    p.add_argument("--compression", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.epoch is None:
        a.epoch = time.time()
    watchdog(a.seconds + 120)
    raise_nofile()
    trio.run(main, a)
