"""permessage-deflate as a wsproto extension: negotiation hooks and the
zlib codec of one connection.

Rules:
- One :class:`DeflateExtension` per connection and side; it never outlives
  its connection. The negotiation itself is ``_core.compression``'s; this
  module plugs it into wsproto's hooks (``offer``/``finalize`` on a client,
  ``accept`` on a server) and keeps the agreed :class:`DeflateParameters`.
- Inflating is bounded: a message inflates into at most
  ``max_message_size + 1`` bytes per input chunk (zlib's ``max_length``);
  the first byte past the limit fails the message with 1009, so a small
  zip bomb never allocates its inflated size.
- Outgoing messages are compressed whole by :meth:`compress_message`,
  called at the moment the frame is serialized, so the shared compressor
  sees messages in wire order; whether to compress is the connection's
  decision (:meth:`wants_to_compress`). A message sent in pieces is not
  compressed. Frames that go through wsproto (fast paths off:
  ``frame_outbound``) follow the same decision and compressor.
- zlib objects are made on first use and dropped after each message when
  that side has no context takeover: an idle connection without context
  takeover holds no zlib memory.
- Counters (for statistics): ``bytes_sent_uncompressed`` and
  ``bytes_sent_compressed`` count the payloads of compressed messages
  we sent, before and after compression; ``bytes_received_compressed``
  and ``bytes_received_uncompressed`` count compressed messages received
  whole, before and after inflating (a message that fails to inflate
  counts in neither: how much of it was read first depends on the reads;
  ``_core.connection`` makes ``compression_ratio`` of them). Messages sent
  or received uncompressed are not counted here.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import RemoteProtocolError

from .compression import (
    DEFAULT_COMPRESS_WINDOW_BITS,
    EXTENSION_NAME,
    ZLIB_MIN_COMPRESS_WINDOW_BITS,
    DeflateConfig,
    DeflateParameters,
    client_accept,
    client_offer,
    parse_element,
    server_accept,
)

#: What a sync flush ends with; RFC 7692 section 7.2.1 drops it from the
#: wire and section 7.2.2 has the receiver put it back.
_SYNC_TAIL = b"\x00\x00\xff\xff"
_NO_RSV = RsvBits(False, False, False)
_RSV1_ONLY = RsvBits(True, False, False)


class DeflateExtension(Extension):
    """permessage-deflate for one connection (client or server side)."""

    name = EXTENSION_NAME

    def __init__(self, config: DeflateConfig, *, is_client: bool, max_message_size: int) -> None:
        self._config = config
        self._is_client = is_client
        self._max_message_size = max_message_size
        #: The agreed parameters, once negotiated.
        self.parameters: DeflateParameters | None = None
        #: Why the last inbound message failed (wsproto only carries a code).
        self.failure: str | None = None
        self._compressor: zlib._Compress | None = None
        self._compress_bits = 0
        self._compress_resets = False
        self._decompressor: zlib._Decompress | None = None
        self._decompress_bits = 0
        self._decompress_resets = False
        # Inbound state: does the message in progress inflate, how much has
        # it inflated to and from, and does the current frame (not a
        # control frame between fragments) belong to it.
        self._inflating_message = False
        self._inflated = 0
        self._inflated_from = 0
        self._frame_is_data = False
        # Whether the next data frame wsproto serializes (fast paths off)
        # is a whole message to compress: the connection decides.
        self.compress_next = False

        self.bytes_sent_uncompressed = 0
        self.bytes_sent_compressed = 0
        self.bytes_received_compressed = 0
        self.bytes_received_uncompressed = 0

    def __repr__(self) -> str:
        return f"<DeflateExtension {self.parameters}>"

    # ------------------------------------------------------------------
    # Negotiation (wsproto calls these during the opening handshake)

    def enabled(self) -> bool:
        return self.parameters is not None

    def offer(self) -> str:
        return client_offer(self._config)

    def accept(self, offer: str) -> str | None:
        """Server: answer one offer. wsproto asks about every offer in the
        client's order and keeps the last answer, so once one offer is
        accepted the later ones are declined."""
        if self.parameters is not None:
            return None
        try:
            _, parameters = parse_element(offer)
        except ValueError:
            return None
        answer = server_accept(parameters, self._config)
        if answer is None:
            return None
        agreed, response = answer
        self._agree(agreed)
        return response

    def finalize(self, offer: str) -> None:
        """Client: take the server's response, or fail the handshake."""
        try:
            if self.parameters is not None:
                raise ValueError("permessage-deflate accepted twice")
            _, parameters = parse_element(offer)
            agreed = client_accept(parameters, self._config)
        except ValueError as exc:
            raise RemoteProtocolError(f"bad permessage-deflate response: {exc}", None) from exc
        self._agree(agreed)

    def _agree(self, agreed: DeflateParameters) -> None:
        self.parameters = agreed
        ours = agreed.client_max_window_bits if self._is_client else agreed.server_max_window_bits
        theirs = agreed.server_max_window_bits if self._is_client else agreed.client_max_window_bits
        own_limit = (
            self._config.client_max_window_bits
            if self._is_client
            else self._config.server_max_window_bits
        )
        self._compress_bits = min(ours, own_limit or DEFAULT_COMPRESS_WINDOW_BITS)
        # A bigger window inflates anything a smaller one made; zlib's
        # raw inflate does not go below 9 bits reliably.
        self._decompress_bits = max(theirs, ZLIB_MIN_COMPRESS_WINDOW_BITS)
        if self._is_client:
            self._compress_resets = agreed.client_no_context_takeover
            self._decompress_resets = agreed.server_no_context_takeover
        else:
            self._compress_resets = agreed.server_no_context_takeover
            self._decompress_resets = agreed.client_no_context_takeover

    # ------------------------------------------------------------------
    # Sending

    @property
    def can_compress(self) -> bool:
        """False when the agreed window is one zlib cannot compress with
        (8 bits): then every message goes uncompressed."""
        return self._compress_bits >= ZLIB_MIN_COMPRESS_WINDOW_BITS

    def wants_to_compress(self, size: int, compress: bool | None) -> bool:
        """Whether a message of ``size`` bytes goes compressed, given the
        ``compress`` argument of ``send_message`` (None: by the threshold)."""
        if not self.can_compress or compress is False:
            return False
        return compress is True or size >= self._config.threshold

    def _take_compressor(self) -> zlib._Compress:
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self._config.compression_level,
                zlib.DEFLATED,
                -self._compress_bits,
                self._config.memory_level,
            )
        return compressor

    def compress_message(self, data: bytes) -> bytes:
        """Compress one whole message (its frame gets RSV1)."""
        compressor = self._take_compressor()
        payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if payload.endswith(_SYNC_TAIL):
            payload = payload[:-4]
        if self._compress_resets:
            self._compressor = None
        self.bytes_sent_uncompressed += len(data)
        self.bytes_sent_compressed += len(payload)
        return payload

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Data frames serialized by wsproto, which happens only with the
        fast paths off (``_wire.fast_paths``): a frame is compressed when
        the connection said so for it (:attr:`compress_next`), as our own
        framing would compress it."""
        if opcode.iscontrol() or not self.compress_next:
            return rsv, data
        self.compress_next = False
        return RsvBits(True, rsv.rsv2, rsv.rsv3), self.compress_message(data)

    # ------------------------------------------------------------------
    # Receiving (wsproto's frame decoder calls these for every frame)

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            self._frame_is_data = False
            if rsv.rsv1:
                self.failure = "RSV1 set on a control frame"
                return CloseReason.PROTOCOL_ERROR
            return _NO_RSV
        self._frame_is_data = True
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                self.failure = "RSV1 set on a continuation frame"
                return CloseReason.PROTOCOL_ERROR
        else:
            self._inflating_message = rsv.rsv1
            self._inflated = 0
            self._inflated_from = 0
        return _RSV1_ONLY

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self._decompress_bits)
        room = self._max_message_size - self._inflated
        try:
            # At most one byte past the limit is ever produced.
            out = decompressor.decompress(data, room + 1)
        except zlib.error as exc:
            self.failure = f"invalid compressed data: {exc}"
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > room:
            self.failure = f"message exceeds {self._max_message_size} bytes"
            return CloseReason.MESSAGE_TOO_BIG
        if decompressor.unused_data:
            self.failure = "data after the end of the compressed stream"
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._frame_is_data and self._inflating_message):
            return data
        self._inflated_from += len(data)
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (fin and self._frame_is_data and self._inflating_message):
            return None
        self._inflating_message = False
        decompressor = self._decompressor
        tail: bytes | CloseReason = b""
        if decompressor is not None and not decompressor.eof:
            tail = self._inflate(_SYNC_TAIL)
            if isinstance(tail, CloseReason):
                return tail
        if decompressor is None or decompressor.eof or self._decompress_resets:
            # A stream the peer ended (BFINAL) cannot be continued.
            self._decompressor = None
        self.bytes_received_compressed += self._inflated_from
        self.bytes_received_uncompressed += self._inflated
        return tail
