"""Neutral fast echo server used as the fixed peer when measuring each
library's CLIENT: blocking sockets, one thread per connection (only one
connection is active at a time, so the GIL is uncontended and each echo
costs ~2 syscalls).  --mode ws speaks RFC 6455 (echoes every data frame
unmasked, answers close/ping); --mode plain echoes the length-prefixed
stream verbatim.  Unmasking uses websockets' C helper when importable
(a neutral byte-XOR routine, not a protocol stack), else a stdlib XOR.
--tls serves both modes over TLS (the ssl module, the bench's self-signed
certificate, ALPN http/1.1), each connection's handshake in its own
thread: the peer of run.py --tls's client measurements.
Prints `PORT <n>`."""

import argparse
import socket
import ssl
import threading

from benchutil import MAX_MESSAGE_SIZE, emit, raise_nofile, server_tls_context, watchdog
from wsframes import OP_CLOSE, OP_PING, OP_PONG, frame_header, server_handshake_response
from wsframes import xor_mask as py_xor_mask

try:
    from websockets.speedups import apply_mask as xor_mask
except ImportError:
    xor_mask = py_xor_mask

RECV_SIZE = 1 << 20


def ws_frames(buf, out):
    """Echo complete frames of `buf` into `out`; return (consumed, close)."""
    pos = 0
    size = len(buf)
    while size - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            head = 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            head = 10
        if length > MAX_MESSAGE_SIZE or not b1 & 0x80:
            raise ValueError("oversized or unmasked client frame")
        end = pos + head + 4 + length
        if end > size:
            break
        mask = bytes(buf[pos + head:pos + head + 4])
        payload = xor_mask(bytes(buf[pos + head + 4:end]), mask)
        opcode = b0 & 0x0F
        pos = end
        if opcode == OP_PING:
            out.append(frame_header(OP_PONG, length) + payload)
        elif opcode == OP_CLOSE:
            out.append(frame_header(OP_CLOSE, length) + payload)
            return pos, True
        elif opcode != OP_PONG:
            out.append(frame_header(opcode, length, fin=bool(b0 & 0x80)))
            out.append(payload)
    return pos, False


def serve_conn(sock, mode, tls_context):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_context is not None:
        try:
            sock = tls_context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
    rbuf = bytearray(RECV_SIZE)
    view = memoryview(rbuf)
    buf = bytearray()
    is_open = mode == "plain"
    try:
        while True:
            n = sock.recv_into(rbuf)
            if n == 0:
                return
            if mode == "plain":
                sock.sendall(view[:n])
                continue
            buf += view[:n]
            if not is_open:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                sock.sendall(server_handshake_response(bytes(buf[:end])))
                del buf[:end + 4]
                is_open = True
            out = []
            used, closing = ws_frames(buf, out)
            del buf[:used]
            if out:
                sock.sendall(b"".join(out))
            if closing:
                return
    except (OSError, ValueError):
        pass
    finally:
        sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=("ws", "plain"), default="ws")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=1800)
    p.add_argument("--tls", action="store_true")
    a = p.parse_args()
    watchdog(a.lifetime)
    raise_nofile()
    lsock = socket.create_server(("127.0.0.1", a.port), backlog=128)
    tls_context = None
    if a.tls:
        tls_context = server_tls_context()
        tls_context.set_alpn_protocols(["http/1.1"])
    emit("PORT", lsock.getsockname()[1])
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve_conn, args=(conn, a.mode, tls_context),
                         daemon=True).start()


if __name__ == "__main__":
    main()
