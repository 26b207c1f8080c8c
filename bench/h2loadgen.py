"""Neutral HTTP/2 load generator: WebSockets over HTTP/2 (RFC 8441).

The HTTP/2 twin of loadgen.py, for the server-under-test rows of the
HTTP/2 scenario (run.py --http2).  One TCP connection speaks HTTP/2 by
prior knowledge (h2c: the connection preface first, no upgrade), or with
--tls over TLS where ALPN must choose "h2" (the certificate is not
verified), framed by the sans-I/O `h2` library over a socket polled with
`select`; each WebSocket is one extended CONNECT stream (:method CONNECT,
:protocol websocket, :scheme http or https, :path, :authority,
sec-websocket-version 13), opened once the server's SETTINGS announce
SETTINGS_ENABLE_CONNECT_PROTOCOL, accepted by a 200 response.  WebSocket
frames (masked, RFC 6455, from wsframes.py) travel in the stream's DATA
frames exactly as they would on a TCP connection.

echo --framing raw (the default, what run.py --http2 uses): once `h2` has
opened the stream, its frames are read and written by h2raw.py (same rules
as below, no `h2` objects per frame), so this client reads about as fast as
loadgen.py does over HTTP/1.1; with `h2` for every frame (--framing h2) it
reads 2-4x slower and, at 64 KiB and 1 MiB, the server's socket buffer
fills and its writes turn partial, which the server's CPU per message
would then wrongly include.  --verify checks every echoed byte against the
message sent (and the count of echoes), for a correctness run.

Rules this client keeps, so the server is measured under a well-behaved
peer:
  * flow control both ways: it never sends more DATA than the server's
    windows allow (the rest waits for WINDOW_UPDATE), and it hands every
    DATA frame it consumes back (with `h2`: `acknowledge_received_data`,
    which sends WINDOW_UPDATEs as the windows drain; raw: a WINDOW_UPDATE
    per half window consumed); its own windows (--stream-window,
    --conn-window) are announced at the start;
  * DATA frames no bigger than the server's SETTINGS_MAX_FRAME_SIZE;
    each WebSocket message starts a DATA frame of its own, as a browser's
    would (a message bigger than a frame takes several); --packed puts as
    many messages in one DATA frame as fit instead (cheaper for the
    server: fewer frames to parse);
  * never more open streams than the server's
    SETTINGS_MAX_CONCURRENT_STREAMS (the idle test fails clearly instead).

Subcommands, with the same RESULT keys as loadgen.py's:
  echo  one stream, pipelined echo: `window` messages in flight for the
        window's duration; server CPU from /proc around the window
  idle  one connection, N streams held open: server RSS growth per
        WebSocket and the time to open them (all sent at once, then every
        200 awaited)
"""

import argparse
import os
import select
import socket
import ssl
import time
from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.settings
from benchutil import (
    client_tls_context,
    emit,
    proc_cpu_seconds,
    proc_rss_kib,
    watchdog,
)
from h2raw import RawStream
from wsframes import OP_BINARY, OP_CLOSE, FrameCounter, build_frame, frame_header

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0
RECV_SIZE = 1 << 18
RAW_RECV_SIZE = 1 << 20  # as loadgen.py's read buffer
CLOSE_FRAME = build_frame(OP_CLOSE, (1000).to_bytes(2, "big"), masked=True)
# a non-blocking socket (TLS or not) that cannot go on right now
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class H2ClientError(ConnectionError):
    pass


class H2Client:
    """One h2c connection to the server: h2's state plus a socket, with
    blocking helpers for the handshake phases and non-blocking steps for
    the measured loops."""

    def __init__(self, port, stream_window, conn_window, tls=False):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.scheme = b"https" if tls else b"http"
        if tls:
            self.sock = client_tls_context(["h2"]).wrap_socket(
                self.sock, server_hostname=HOST)
            chosen = self.sock.selected_alpn_protocol()
            if chosen != "h2":
                raise H2ClientError(f"ALPN chose {chosen!r}, not 'h2'")
        config = h2.config.H2Configuration(client_side=True,
                                           header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={codes.INITIAL_WINDOW_SIZE: stream_window,
                            codes.MAX_CONCURRENT_STREAMS: 0,
                            codes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        if conn_window > 65535:
            self.conn.increment_flow_control_window(conn_window - 65535)
        self.connect_enabled = False
        self.flush()
        self.wait(lambda: self.connect_enabled, "the server's SETTINGS")
        if not self.conn.remote_settings.enable_connect_protocol:
            raise H2ClientError("the server does not announce "
                                "SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)")

    # -- plumbing ---------------------------------------------------------
    def flush(self):
        """Write everything h2 has queued (blocking)."""
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def receive(self, on_event):
        """One recv(); every h2 event goes to on_event."""
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise H2ClientError("the server closed the connection")
        for event in self.conn.receive_data(data):
            on_event(event)

    def wait(self, done, what):
        """Read and handle events until done() (blocking, bounded)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {IO_TIMEOUT} s")
            self.receive(self.common_event)
            self.flush()

    def common_event(self, event):
        """Events every phase handles the same way."""
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.connect_enabled = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise H2ClientError(f"GOAWAY from the server: {event.error_code!r}"
                                f" {event.additional_data!r}")
        elif isinstance(event, h2.events.StreamReset):
            raise H2ClientError(f"stream {event.stream_id} reset by the "
                                f"server: {event.error_code!r}")
        elif isinstance(event, h2.events.StreamEnded):
            raise H2ClientError(f"stream {event.stream_id} ended by the "
                                "server")
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                event.stream_id)

    # -- WebSockets ---------------------------------------------------------
    def open_websocket(self, path="/"):
        """Send one extended CONNECT (not flushed); return its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", self.scheme),
            (b":path", path.encode()),
            (b":authority", f"{HOST}:{self.port}".encode()),
            (b"sec-websocket-version", b"13"),
        ])
        return stream_id

    def open_websockets(self, count):
        """Open `count` WebSockets at once; return their stream ids once
        the server accepted all of them (each answered 200)."""
        limit = self.conn.remote_settings.max_concurrent_streams
        have = self.conn.open_outbound_streams
        if have + count > limit:
            raise H2ClientError(f"the server allows {limit} concurrent "
                                f"streams; {have + count} wanted")
        pending = {self.open_websocket() for _ in range(count)}
        accepted = list(pending)
        self.flush()

        def on_event(event):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
                if status != b"200":
                    raise H2ClientError(f"stream {event.stream_id} refused: "
                                        f":status {status!r}")
                pending.discard(event.stream_id)
            else:
                self.common_event(event)

        deadline = time.monotonic() + IO_TIMEOUT + count / 100
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {count} WebSockets "
                                   "not accepted in time")
            self.receive(on_event)
            self.flush()
        return accepted

    def close_websocket(self, stream_id):
        """A WebSocket close frame, then END_STREAM (not flushed)."""
        self.conn.send_data(stream_id, CLOSE_FRAME, end_stream=True)

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except OSError:
            pass
        self.sock.close()


def pump(client, stream_id, counter, blob, flen, window, duration, max_msgs,
         packed=False, check=None):
    """Keep `window` messages in flight on one stream for `duration` s;
    return how many were echoed.  Like loadgen.pump, plus HTTP/2 framing
    and flow control: message bytes become DATA frames as the server's
    windows allow, a new DATA frame at each message's start unless
    `packed`."""
    conn, sock = client.conn, client.sock
    sock.setblocking(False)
    fd = sock.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    credit, sent, received = window, 0, 0
    unframed = None  # message bytes not yet given to h2 (flow control)
    into_message = 0  # how far into its message unframed[0] is
    outgoing = b""  # bytes h2 produced, not yet written to the socket
    deadline = time.perf_counter() + duration
    stopping = False
    timeout_ms = int(IO_TIMEOUT * 1000)
    tls = isinstance(sock, ssl.SSLSocket)
    echoed = 0

    def on_event(event):
        nonlocal echoed
        if isinstance(event, h2.events.DataReceived):
            echoed += counter.feed(event.data)
            if check is not None:
                check.feed(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length,
                                           event.stream_id)
        elif not isinstance(event, (h2.events.WindowUpdated,
                                    h2.events.SettingsAcknowledged,
                                    h2.events.PingReceived,
                                    h2.events.PingAckReceived)):
            client.common_event(event)

    while True:
        if not stopping and (sent >= max_msgs
                             or time.perf_counter() >= deadline):
            stopping = True
        if stopping and unframed is None and not outgoing \
                and received >= sent:
            sock.setblocking(True)
            return sent
        if unframed is None and credit and not stopping:
            sent += credit
            unframed = blob[:credit * flen]
            credit = 0
        if unframed is not None:
            room = min(conn.local_flow_control_window(stream_id),
                       len(unframed))
            step = conn.max_outbound_frame_size
            pos = 0
            while pos < room:
                end = min(pos + step, room)
                if not packed:  # stop at the next message's start
                    end = min(end, pos + flen - (into_message + pos) % flen)
                conn.send_data(stream_id, unframed[pos:end])
                pos = end
            into_message = (into_message + pos) % flen
            unframed = unframed[pos:] if pos < len(unframed) else None
        out = conn.data_to_send()
        if out:
            outgoing = outgoing + out if outgoing else out
        poller.modify(fd, select.POLLIN | select.POLLOUT if outgoing
                      else select.POLLIN)
        # TLS may hold decrypted bytes the socket no longer shows
        buffered = tls and sock.pending()
        events = poller.poll(0 if buffered else timeout_ms)
        if not events and not buffered:
            raise TimeoutError("no progress from the server")
        ev = events[0][1] if events else select.POLLIN
        if ev & select.POLLOUT and outgoing:
            try:
                n = sock.send(outgoing)
            except WOULD_BLOCK:
                n = 0
            outgoing = outgoing[n:]
        if ev & (select.POLLIN | select.POLLERR | select.POLLHUP) or buffered:
            try:
                data = sock.recv(RECV_SIZE)
            except WOULD_BLOCK:
                continue
            if not data:
                raise H2ClientError("the server closed the connection")
            for event in conn.receive_data(data):
                on_event(event)
            received += echoed
            credit += echoed
            echoed = 0


class EchoChecker:
    """--verify: every echoed byte must be the expected unmasked frame
    (the message sent, as one frame), message after message."""

    def __init__(self, payload):
        self.expected = memoryview(frame_header(OP_BINARY, len(payload))
                                   + payload)
        self.pos = 0  # into self.expected
        self.checked = 0

    def feed(self, data):
        data = memoryview(data)
        i, n, size = 0, len(data), len(self.expected)
        while i < n:
            take = min(n - i, size - self.pos)
            if data[i:i + take] != self.expected[self.pos:self.pos + take]:
                raise H2ClientError(f"echo differs at byte {self.checked} "
                                    "of the received WebSocket bytes")
            i += take
            self.checked += take
            self.pos = (self.pos + take) % size


def raw_pump(raw, counter, blob, flen, window, duration, max_msgs,
             packed=False, check=None):
    """pump() with the stream framed by hand (h2raw.RawStream) instead of
    `h2`: the same rules and the same result."""
    sock = raw.sock
    sock.setblocking(False)
    fd = sock.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    rbuf = bytearray(RAW_RECV_SIZE)
    rview = memoryview(rbuf)
    credit, sent, received = window, 0, 0
    unframed = None  # message bytes not yet framed (flow control)
    into_message = 0  # how far into its message unframed[0] is
    deadline = time.perf_counter() + duration
    stopping = False
    timeout_ms = int(IO_TIMEOUT * 1000)
    tls = isinstance(sock, ssl.SSLSocket)
    echoed = 0

    def on_data(piece):
        nonlocal echoed
        echoed += counter.feed(piece)
        if check is not None:
            check.feed(piece)

    raw.on_data = on_data
    out = raw.out
    while True:
        if not stopping and (sent >= max_msgs
                             or time.perf_counter() >= deadline):
            stopping = True
        if stopping and unframed is None and not out and received >= sent:
            sock.setblocking(True)
            return sent
        if unframed is None and credit and not stopping:
            sent += credit
            unframed = blob[:credit * flen]
            credit = 0
        if unframed is not None:
            room = min(raw.send_room(), len(unframed))
            step = raw.max_frame
            pos = 0
            while pos < room:
                end = min(pos + step, room)
                if not packed:  # stop at the next message's start
                    end = min(end, pos + flen - (into_message + pos) % flen)
                raw.add_data(unframed[pos:end])
                pos = end
            into_message = (into_message + pos) % flen
            unframed = unframed[pos:] if pos < len(unframed) else None
        poller.modify(fd, select.POLLIN | select.POLLOUT if out
                      else select.POLLIN)
        # TLS may hold decrypted bytes the socket no longer shows
        buffered = tls and sock.pending()
        events = poller.poll(0 if buffered else timeout_ms)
        if not events and not buffered:
            raise TimeoutError("no progress from the server")
        ev = events[0][1] if events else select.POLLIN
        if ev & select.POLLOUT and out:
            try:
                n = sock.send(out)
            except WOULD_BLOCK:
                n = 0
            del out[:n]
        if ev & (select.POLLIN | select.POLLERR | select.POLLHUP) or buffered:
            try:
                n = sock.recv_into(rbuf)
            except WOULD_BLOCK:
                continue
            if n == 0:
                raise H2ClientError("the server closed the connection")
            raw.feed(rview[:n])
            received += echoed
            credit += echoed
            echoed = 0


def cmd_echo(args):
    for size, window in zip(args.sizes, args.windows, strict=True):
        payload = os.urandom(size)
        frame = build_frame(OP_BINARY, payload, masked=True)
        blob = memoryview(frame * window)
        client = H2Client(args.port, args.stream_window, args.conn_window,
                          args.tls)
        (stream_id,) = client.open_websockets(1)
        counter = FrameCounter("ws")
        check = EchoChecker(payload) if args.verify else None
        max_msgs = args.max_bytes // size + window
        if args.framing == "raw":
            raw = RawStream(client, stream_id, args.stream_window,
                            args.conn_window)
            run = partial(raw_pump, raw)
        else:
            run = partial(pump, client, stream_id)
        run = partial(run, counter, blob, len(frame), window)
        tail = (max_msgs, args.packed, check)
        warm = run(args.warmup, *tail)
        srv0 = proc_cpu_seconds(args.cpu_pid)
        me0 = time.process_time()
        t0 = time.perf_counter()
        msgs = run(args.duration, *tail)
        t1 = time.perf_counter()
        me1 = time.process_time()
        srv1 = proc_cpu_seconds(args.cpu_pid)
        if counter.messages != warm + msgs:
            raise H2ClientError(f"{counter.messages} echoes counted, "
                                f"{warm + msgs} sent")
        if args.framing == "raw":
            if raw.send_room() >= len(CLOSE_FRAME):
                raw.add_data(CLOSE_FRAME, end_stream=True)
            client.sock.sendall(raw.out)
        else:
            client.close_websocket(stream_id)
        client.close()
        result = {"size": size, "window": window, "msgs": msgs,
                  "wall": t1 - t0, "server_cpu": srv1 - srv0,
                  "loadgen_cpu": me1 - me0, "framing": args.framing}
        if check is not None:
            result["verified_bytes"] = check.checked
            result["verified_msgs"] = counter.messages
        emit("RESULT", result)


def cmd_idle(args):
    client = H2Client(args.port, args.stream_window, args.conn_window,
                      args.tls)
    try:
        client.open_websockets(args.warm)
        time.sleep(args.settle)
        rss0 = proc_rss_kib(args.rss_pid)
        t0 = time.perf_counter()
        client.open_websockets(args.count)
        t1 = time.perf_counter()
        time.sleep(args.settle)
        rss1 = proc_rss_kib(args.rss_pid)
        # still one connection, every stream still open?
        client.sock.settimeout(0.2)
        try:
            client.receive(client.common_event)
        except TimeoutError:
            pass
        open_streams = client.conn.open_outbound_streams
    finally:
        client.close()
    if open_streams != args.warm + args.count:
        raise H2ClientError(f"{open_streams} streams open at the end, "
                            f"{args.warm + args.count} expected")
    emit("RESULT", {"count": args.count, "rss_before_kib": rss0,
                    "rss_after_kib": rss1,
                    "kib_per_conn": (rss1 - rss0) / args.count,
                    "open_wall": t1 - t0})


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("echo", "idle"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--lifetime", type=float, default=300)
        s.add_argument("--stream-window", type=int, default=4 << 20,
                       help="our SETTINGS_INITIAL_WINDOW_SIZE (bytes)")
        s.add_argument("--conn-window", type=int, default=16 << 20,
                       help="our connection receive window (bytes)")
        s.add_argument("--tls", action="store_true",
                       help="TLS, ALPN h2 (instead of h2c prior knowledge)")
    e = sub.choices["echo"]
    e.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")])
    e.add_argument("--windows", type=lambda v: [int(x) for x in v.split(",")])
    e.add_argument("--duration", type=float, default=2.0)
    e.add_argument("--warmup", type=float, default=0.3)
    e.add_argument("--max-bytes", type=int, default=8 << 30)
    e.add_argument("--cpu-pid", type=int, required=True)
    e.add_argument("--framing", choices=("raw", "h2"), default="raw",
                   help="raw (default): after the handshake the stream's "
                   "frames are read and written by h2raw.py, about as fast "
                   "as loadgen.py; h2: every frame through `h2` (2-4x "
                   "slower to read: the server's writes back up)")
    e.add_argument("--verify", action="store_true",
                   help="check every echoed byte against the message sent")
    e.add_argument("--packed", action="store_true",
                   help="several messages per DATA frame (default: each "
                   "message starts a DATA frame)")
    i = sub.choices["idle"]
    i.add_argument("--count", type=int, default=1000)
    i.add_argument("--warm", type=int, default=20)
    i.add_argument("--settle", type=float, default=0.5)
    i.add_argument("--rss-pid", type=int, required=True)
    args = p.parse_args()
    watchdog(args.lifetime)
    {"echo": cmd_echo, "idle": cmd_idle}[args.cmd](args)


if __name__ == "__main__":
    main()
