"""Minimal RFC 6455 pieces for the neutral load generator and the neutral
echo server: opening-handshake request/response, frame building (masked or
not), XOR unmasking and an incremental frame counter that skips payloads."""

import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def client_handshake(host, port, path="/"):
    """Return (request bytes, expected Sec-WebSocket-Accept value)."""
    key = base64.b64encode(os.urandom(16))
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return req, accept_key(key)


def server_handshake_response(request_head):
    """Build the 101 response for a raw request head (bytes)."""
    key = None
    for line in request_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if key is None:
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + accept_key(key) + b"\r\n\r\n"
    )


def xor_mask(data, mask):
    """Apply a 4-byte WebSocket mask (bulk XOR via big integers)."""
    n = len(data)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little")
            ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame_header(opcode, length, fin=True, mask=None):
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((b0, mbit | length))
    elif length < 65536:
        head = bytes((b0, mbit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


def build_frame(opcode, payload, masked):
    """One complete frame; client frames must be masked (RFC 6455 5.3)."""
    if not masked:
        return frame_header(opcode, len(payload)) + payload
    mask = os.urandom(4)
    return frame_header(opcode, len(payload), mask=mask) + xor_mask(payload,
                                                                    mask)


class FrameCounter:
    """Counts complete messages in a byte stream without copying payloads.

    proto "ws": RFC 6455 frames (a message ends at a FIN data frame);
    proto "plain": 4-byte big-endian length prefix + payload.
    """

    def __init__(self, proto):
        self.ws = proto == "ws"
        self.messages = 0
        self.closed = False  # a close frame was seen
        self._skip = 0  # payload bytes still to skip
        self._skip_counts = 0  # messages completed when the skip ends
        self._rest = b""  # incomplete header bytes

    def feed(self, data):
        """Consume bytes (bytes/memoryview); return messages completed."""
        before = self.messages
        n = len(data)
        pos = 0
        if self._skip:
            if self._skip >= n:
                self._skip -= n
                if not self._skip:
                    self.messages += self._skip_counts
                return self.messages - before
            pos = self._skip
            self._skip = 0
            self.messages += self._skip_counts
        buf = bytes(data[pos:])
        if self._rest:
            buf = self._rest + buf
            self._rest = b""
        if self.ws:
            self._walk_ws(buf)
        else:
            self._walk_plain(buf)
        return self.messages - before

    def _walk_plain(self, buf):
        size = len(buf)
        pos = 0
        count = 0
        while size - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
            if end > size:
                self._skip = end - size
                self._skip_counts = 1
                pos = size
                break
            count += 1
            pos = end
        self.messages += count
        self._rest = buf[pos:]

    def _walk_ws(self, buf):
        size = len(buf)
        pos = 0
        count = 0
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
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
            if b1 & 0x80:
                head += 4
            end = pos + head + length
            opcode = b0 & 0x0F
            done = 1 if (b0 & 0x80 and opcode < 8) else 0
            if opcode == OP_CLOSE:
                self.closed = True
            if end > size:
                if pos + head > size:
                    break  # header itself incomplete
                self._skip = end - size
                self._skip_counts = done
                pos = size
                break
            count += done
            pos = end
        self.messages += count
        self._rest = buf[pos:]
