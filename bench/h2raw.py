"""HTTP/2 framing by hand for h2loadgen.py's fast mode (--framing raw).

`h2` opens the connection (preface, SETTINGS, the extended CONNECT and its
200); from then on one WebSocket stream is driven here without `h2`, so the
load generator reads about as fast as loadgen.py does over HTTP/1.1 and the
server's writes are not held back by a slow client.

Rules kept (the same as with `h2`, so the server sees a well-behaved peer):
  * flow control, sending: the stream's and the connection's send windows
    start where `h2` left them and follow the server's WINDOW_UPDATEs and
    SETTINGS_INITIAL_WINDOW_SIZE changes; no DATA beyond them, none bigger
    than the server's SETTINGS_MAX_FRAME_SIZE;
  * flow control, receiving: every DATA frame's whole payload (padding
    included) is counted, a WINDOW_UPDATE for the stream (and one for the
    connection) goes out once half of that window is consumed; the server
    overrunning a window is an error;
  * every non-ACK SETTINGS is ACKed (its changes applied first), every
    non-ACK PING answered with a PING ACK of the same payload;
  * GOAWAY, RST_STREAM, HEADERS, PUSH_PROMISE, CONTINUATION, END_STREAM on
    our stream, DATA on another stream or a frame bigger than our
    SETTINGS_MAX_FRAME_SIZE (the default: we announce none) are errors;
    PRIORITY and unknown frame types are skipped.
Incoming DATA without padding is streamed: its payload goes to `on_data`
in the pieces recv() returned, never copied; every other frame (and a
header split across reads) is gathered whole first.
"""

import struct

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_ACK = 0x1
FLAG_END_STREAM = 0x1
FLAG_PADDED = 0x8
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
OUR_MAX_FRAME_SIZE = 16384  # we never announce more (RFC 9113 6.5.2)
MAX_WINDOW = (1 << 31) - 1
HEAD = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id


class H2RawError(ConnectionError):
    pass


def frame_head(length, ftype, flags, stream_id):
    return HEAD.pack(length << 8 | ftype, flags, stream_id)


class RawStream:
    """One WebSocket stream of an H2Client, after `h2` opened it."""

    def __init__(self, client, stream_id, stream_window, conn_window):
        client.flush()  # whatever h2 still had to say goes first
        conn = client.conn
        if conn.incoming_buffer._data:  # h2 4.4.1's FrameBuffer (pinned)
            raise H2RawError("h2 still holds unparsed bytes")
        self.sock = client.sock
        self.stream_id = stream_id
        # what we may send (from h2's view of the server's windows)
        self.send_stream = conn.streams[stream_id].outbound_flow_control_window
        self.send_conn = conn.outbound_flow_control_window
        self.peer_initial_window = conn.remote_settings.initial_window_size
        self.max_frame = conn.max_outbound_frame_size
        # what the server may send us, and what it used of that
        self.stream_window, self.conn_window = stream_window, conn_window
        self.used_stream = self.used_conn = 0
        self.out = bytearray()  # whole frames, not yet written
        self.on_data = None  # called with each piece of WebSocket bytes
        self._data_left = 0  # bytes of the current DATA frame to stream
        self._partial = bytearray()  # a frame (or header) gathered whole

    # -- sending ----------------------------------------------------------
    def send_room(self):
        return max(0, min(self.send_stream, self.send_conn))

    def add_data(self, payload, end_stream=False):
        """Queue one DATA frame; the caller keeps within send_room() and
        max_frame."""
        n = len(payload)
        if n > self.send_room() or n > self.max_frame:
            raise AssertionError("DATA beyond the server's window or frame "
                                 "size")
        self.out += frame_head(n, DATA, FLAG_END_STREAM if end_stream else 0,
                               self.stream_id)
        self.out += payload
        self.send_stream -= n
        self.send_conn -= n

    # -- receiving ----------------------------------------------------------
    def feed(self, view):
        """Consume one recv()'s bytes (a memoryview)."""
        n = len(view)
        pos = 0
        while pos < n:
            if self._data_left:
                take = min(self._data_left, n - pos)
                self.on_data(view[pos:pos + take])
                self._data_left -= take
                pos += take
                continue
            if self._partial:
                need = self._need(self._partial)
                take = min(need - len(self._partial), n - pos)
                self._partial += view[pos:pos + take]
                pos += take
                if len(self._partial) < self._need(self._partial):
                    continue  # more of it to come (or this read is done)
                frame = bytes(self._partial)
                self._partial = bytearray()
                self._frame(frame)
                continue
            if n - pos < 9:
                self._partial += view[pos:n]
                return
            word, flags, _ = HEAD.unpack_from(view, pos)
            length, ftype = word >> 8, word & 0xFF
            if length > OUR_MAX_FRAME_SIZE:
                raise H2RawError(f"frame of {length} bytes above our "
                                 "SETTINGS_MAX_FRAME_SIZE")
            if ftype == DATA and not flags & FLAG_PADDED:
                self._frame(bytes(view[pos:pos + 9]))
                pos += 9
            elif n - pos >= 9 + length:
                self._frame(bytes(view[pos:pos + 9 + length]))
                pos += 9 + length
            else:
                self._partial += view[pos:n]
                return

    @staticmethod
    def _need(buf):
        """How many bytes of `buf` make a unit to handle."""
        if len(buf) < 9:
            return 9
        word, flags, _ = HEAD.unpack_from(buf, 0)
        if word >> 8 > OUR_MAX_FRAME_SIZE:
            raise H2RawError(f"frame of {word >> 8} bytes above our "
                             "SETTINGS_MAX_FRAME_SIZE")
        if word & 0xFF == DATA and not flags & FLAG_PADDED:
            return 9  # the payload is streamed
        return 9 + (word >> 8)

    def _frame(self, frame):
        """A frame's header (unpadded DATA: its payload streams after it) or
        a whole frame."""
        word, flags, sid = HEAD.unpack_from(frame, 0)
        length, ftype = word >> 8, word & 0xFF
        sid &= 0x7FFFFFFF
        if ftype == DATA:
            if sid != self.stream_id:
                raise H2RawError(f"DATA on stream {sid}")
            if flags & FLAG_END_STREAM:
                raise H2RawError("the server ended the WebSocket's stream")
            self._consumed(length)
            if flags & FLAG_PADDED:
                pad = frame[9]
                if pad >= length:
                    raise H2RawError("DATA padding longer than its payload")
                if length - 1 - pad:
                    self.on_data(memoryview(frame)[10:9 + length - pad])
            else:
                self._data_left = length
        elif ftype == WINDOW_UPDATE:
            if length != 4:
                raise H2RawError("WINDOW_UPDATE of the wrong size")
            inc = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
            if sid == 0:
                self.send_conn += inc
                if self.send_conn > MAX_WINDOW:
                    raise H2RawError("connection send window overflow")
            elif sid == self.stream_id:
                self.send_stream += inc
                if self.send_stream > MAX_WINDOW:
                    raise H2RawError("stream send window overflow")
        elif ftype == SETTINGS:
            if not flags & FLAG_ACK:
                self._settings(frame[9:9 + length])
                self.out += frame_head(0, SETTINGS, FLAG_ACK, 0)
        elif ftype == PING:
            if not flags & FLAG_ACK:
                self.out += frame_head(8, PING, FLAG_ACK, 0) + frame[9:17]
        elif ftype == GOAWAY:
            code = int.from_bytes(frame[13:17], "big")
            raise H2RawError(f"GOAWAY from the server: error {code} "
                             f"{frame[17:9 + length]!r}")
        elif ftype == RST_STREAM:
            code = int.from_bytes(frame[9:13], "big")
            raise H2RawError(f"stream {sid} reset by the server: {code}")
        elif ftype in (HEADERS, PUSH_PROMISE, CONTINUATION):
            raise H2RawError(f"unexpected frame type {ftype} on stream {sid}")
        # PRIORITY, unknown types: nothing to do

    def _settings(self, body):
        if len(body) % 6:
            raise H2RawError("SETTINGS of the wrong size")
        for off in range(0, len(body), 6):
            ident = int.from_bytes(body[off:off + 2], "big")
            value = int.from_bytes(body[off + 2:off + 6], "big")
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2RawError("SETTINGS_INITIAL_WINDOW_SIZE too big")
                self.send_stream += value - self.peer_initial_window
                self.peer_initial_window = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                self.max_frame = value

    def _consumed(self, length):
        """Count a DATA payload against our windows; hand back half a
        window at a time."""
        self.used_stream += length
        self.used_conn += length
        if self.used_stream > self.stream_window \
                or self.used_conn > self.conn_window:
            raise H2RawError("the server sent beyond our receive window")
        if self.used_stream >= self.stream_window // 2:
            self.out += frame_head(4, WINDOW_UPDATE, 0, self.stream_id) \
                + self.used_stream.to_bytes(4, "big")
            self.used_stream = 0
        if self.used_conn >= self.conn_window // 2:
            self.out += frame_head(4, WINDOW_UPDATE, 0, 0) \
                + self.used_conn.to_bytes(4, "big")
            self.used_conn = 0
