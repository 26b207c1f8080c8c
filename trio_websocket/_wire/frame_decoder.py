"""Speeding up wsproto where it is slow, without changing what it does.

Rules:
- The only module that touches wsproto internals. Every access is guarded:
  if wsproto's layout is not the one expected, nothing is changed, so a
  wsproto upgrade can cost speed but never correctness. A test checks that
  the fast path is active with the pinned wsproto.
- wsproto stays the protocol engine: it validates everything (UTF-8, close
  codes, RSV bits, lengths, the order of frames), calls the extensions and
  parses every frame header but one kind. What is ours: where received
  bytes wait (``_ChunkBuffer``), the unmasking (``_wire.masking``, compiled when
  available), when a data frame's payload is handed over (see "whole
  frames"), and the header of a plain frame (no extension in use, no
  reserved bit or opcode, masked as the role wants, a control frame whole
  and short, lengths in their shortest form), which is most of them: wsproto
  spends about 5 us on one, with an enum lookup and three tuples.
  ``_parse_plain_header`` leaves the decoder exactly as wsproto's
  ``parse_header`` would (a test compares them on every possible first two
  bytes, both roles, every length form, whole and cut short); on any other
  header it backs off and wsproto parses it and raises its errors.
- A wsproto object we change is replaced by a new instance of our subclass,
  never given a new ``__class__``: CPython specializes attribute reads for
  objects laid out by their own class, and a swapped class made every
  attribute wsproto reads on the decoder slower (about 0.8 us a frame).
  (``use_fast_unmasking``, the older class swap, is only the fallback.)
- Memory: a wsproto ``Connection`` keeps a ``deque`` of pending events that
  is empty nearly all its life (wsproto only queues into it when the stream
  ends), yet an empty deque costs about 760 bytes. An idle connection lives
  long, so it gets a list (56 bytes empty) with the two deque methods
  wsproto calls on it.
- Received payloads are copied once, masked ones too, where wsproto copies
  them three to five times. wsproto's receive ``Buffer`` appends every read
  to a bytearray, slices each payload out of it and turns that into
  ``bytes``; a message that spans reads arrives as one event per read,
  joined again by the assembler. ``_ChunkBuffer`` keeps the reads as they
  came (no copy on feed) and hands out a payload as the read itself when
  it is one whole read, a memoryview slice when it lies inside one read, or
  the pieces of the reads (``_Pieces``) when it spans reads. The decoder's
  payload maskers (ours, always) turn that into ``bytes`` with one copy
  (plain: a join or ``bytes()``; masked: the unmasking writes the ``bytes``
  itself, pieces and all, in one pass: ``_wire.masking.apply_mask_bytes`` and
  ``apply_mask_joined``), so wsproto's ``+=`` and ``bytes()`` on the
  payload behave as before and cost nothing (``bytes()`` of ``bytes`` is
  no copy, nor is ``+=`` of the empty bytearray it adds when no extension
  has data to add; with permessage-deflate the extension gets the unmasked
  ``bytes`` uncopied, and wsproto copies what it inflates). Short runs
  (headers, masking keys, control payloads) are always ``bytes``.
- Whole frames: a binary frame whose payload fits in what the caller says a
  message may still take (``room``) is handed over once all of it has
  arrived, as wsproto already does for control frames (its
  ``payload_required``), instead of one piece per read. Then a message sent
  as one frame is one event whose payload is the message, with no join.
  Neither are frames out of order (a continuation with no message under
  way, a new message inside one): wsproto refuses them at their first
  payload byte, and holding one would delay that until it is whole.
  Text frames are not held: wsproto validates UTF-8 as pieces arrive, so a
  frame with invalid UTF-8 is refused (1007) as soon as the bad bytes come,
  not when the frame ends (Autobahn 6.4.3 and 6.4.4 check this).
  Nor are the frames of a compressed message (RSV1 on its first frame):
  the extension inflates them as they arrive, so a payload that does not
  inflate (1007) or inflates past the limit (1009) is refused at once, as
  wsproto refuses it, and ``room`` counts a message's bytes, which its
  compressed size says nothing about (tests/test_fuzz_fast_paths.py found
  a bomb's start held, unanswered, until its frame would end).
  Larger frames, and every frame while ``room`` says 0 (a streamed receive
  wants pieces as they come), keep wsproto's piece-by-piece delivery, so a
  too-big message is still refused after at most one read past the limit.
  A streamed receive that starts while a frame is held stops the holding
  (``stop_holding``): what has arrived of the frame comes with the next
  read.
- Between messages: ``decoder_between_messages`` says when whole data
  frames may be taken from a read before wsproto sees it
  (``_wire.quick_frames``) with wsproto none the wiser: the connection
  open, no event queued, its parser alive (a parse error ends wsproto's
  parsing generator, and wsproto parses nothing more), no extension, and
  the fast decoder holding no byte, no frame and no message under way.
  For whole, unfragmented data frames wsproto then keeps nothing that
  outlives the frame but the decoder's leftovers of the last one
  (``payload_consumed``, ``payload_required``, ``in_text_message``),
  which ``note_whole_frames_taken`` sets as wsproto would have (they are
  rewritten by the next header before any use). The layout this reads is
  checked once, on a connection built for the purpose
  (``_BETWEEN_MESSAGES_KNOWN``); if it is not the one expected, nothing
  is ever between messages.
- Held frames: ``decoder_holding_frame`` says when the binary frame the
  decoder holds until whole (see "Whole frames") may be added to or
  completed from a read before wsproto sees it (``_wire.quick_frames``):
  as between messages (open, no event queued, parser alive, no extension,
  no message under way in wsproto's message decoder), and the decoder
  holding a plain frame (FIN, binary, no reserved bit, at most the
  caller's ``max_size``) none of whose payload was handed over, its mask
  at offset 0, with fewer bytes buffered than the frame needs. A read short of the frame's end only
  joins the buffer (``add_to_held_frame``: wsproto's parse would find the
  frame still short and do nothing else); a read that completes it gives
  its payload, unmasked and joined in one pass from the buffer's reads
  and the read's first bytes (``take_held_frame``), and leaves the
  decoder as wsproto's parse of the frame does (no header, masker or
  byte held; ``payload_consumed`` and ``payload_required`` both its
  length). ``hold_frame`` does what wsproto's parse of the start of a
  plain binary frame at the end of a read does when the decoder holds it
  (``room``): the header's state, as ``_parse_plain_header`` and
  ``parse_header`` leave it, and the payload so far in the buffer, which
  keeps the read uncopied (``feed_from``) unless what it keeps is at most
  an eighth of it (as ``commit`` does).
- Close frames: ``decoder_at_frame_boundary`` says when a whole close
  frame may be taken from a read before wsproto sees it
  (``_wire.close_frames``): as between messages, and also while the
  connection waits for the answer to its own close frame.
  ``note_close_frame_taken`` then does what wsproto's parse of it does:
  the connection's state (closed, or closing at the peer's request) and
  the end of its parsing generator (wsproto parses nothing after a close
  frame). ``note_close_frame_sent`` does what wsproto's sending of one
  does to the state. Both read and write ``Connection._state`` behind
  its ``state`` property, checked with the rest of the layout.
- The chunk buffer lets go of a read once its unread rest is at most an
  eighth of it (``_KEEP_AT_MOST``), copying that rest: a connection waiting
  for the end of a frame keeps at most about eight times the bytes it
  still has to hand over. (wsproto's bytearray shrinks at a half; copying
  at a half would cost a second copy of up to half of every read when
  frames are pipelined, as every rest is then the start of the next frame.)
  Reads smaller than ``_SMALL_READ`` are merged into the previous small
  one, so a peer trickling bytes cannot make the list's per-chunk overhead
  outweigh the data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.frame_protocol import (
    Buffer,
    FrameDecoder,
    FrameProtocol,
    Header,
    MessageDecoder,
    Opcode,
    RsvBits,
    XorMaskerNull,
    XorMaskerSimple,
)

from .masking import apply_mask_bytes, apply_mask_joined

if TYPE_CHECKING:
    from wsproto.extensions import Extension


class _Pieces:
    """A payload that spans reads, as the pieces of those reads, handed by
    ``_ChunkBuffer`` to the payload maskers below (and only to them: the
    frame decoder has nothing else read a payload this big)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | memoryview], size: int) -> None:
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size


class _FastMasker(XorMaskerSimple):
    """wsproto's masker interface, unmasking with the compiled maskers of
    ``_wire.masking`` straight into ``bytes``: a payload, whole or in pieces, is
    copied once. One per masked frame; its payload may come in several
    calls, each continuing the mask at ``_offset``."""

    def __init__(self, key: bytes | bytearray) -> None:
        # (Not XorMaskerSimple.__init__: the key is never rotated here, the
        # offset says where in it the next byte starts.)
        if len(key) != 4:
            raise ValueError("mask must be exactly 4 bytes")
        self._masking_key = key
        self._offset = 0

    def process(self, data: bytes | memoryview | _Pieces) -> bytes:  # type: ignore[override]
        if type(data) is _Pieces:
            result = apply_mask_joined(data.parts, self._masking_key, self._offset)
        else:
            result = apply_mask_bytes(data, self._masking_key, self._offset)  # type: ignore[arg-type]
        self._offset = (self._offset + len(result)) & 3
        return result


class _FastUnmaskingDecoder(FrameDecoder):
    """wsproto's frame decoder, unmasking payloads with ``_FastMasker``."""

    def parse_header(self) -> bool:
        parsed = super().parse_header()
        masker = self.masker
        if parsed and type(masker) is XorMaskerSimple:
            key = getattr(masker, "_masking_key", None)
            if isinstance(key, (bytes, bytearray)) and len(key) == 4:
                self.masker = _FastMasker(key)
        return parsed


class _PlainPayload(XorMaskerNull):
    """wsproto's "no mask" for frames read from a ``_ChunkBuffer``: hands
    the payload on as ``bytes`` (no copy when it already is), so wsproto's
    ``bytes(payload)`` is no copy either. Stateless: one is shared."""

    def process(self, data: bytes | bytearray | memoryview | _Pieces) -> bytes:  # type: ignore[override]
        if type(data) is bytes:
            return data
        if type(data) is _Pieces:
            return b"".join(data.parts)
        return bytes(data)  # type: ignore[arg-type]


_PLAIN_PAYLOAD = _PlainPayload()

#: Reads shorter than this are merged into the previous short one.
_SMALL_READ = 4096
#: A read is kept only while its unread rest is more than this fraction of
#: it; otherwise the rest is copied and the read let go.
_KEEP_AT_MOST = 8
#: Slices up to this size are copied out as ``bytes``; a header, a masking
#: key or a short payload is cheaper to copy than to view.
_SMALL_SLICE = 8192


class _ChunkBuffer:
    """A drop-in for wsproto's receive ``Buffer`` that keeps the reads as
    they came (see the module rules). Like wsproto's, it hands bytes out
    from a cursor (``consume_*``) that ``commit`` makes final and
    ``rollback`` takes back, and ``len()`` counts the bytes not yet
    committed as consumed."""

    __slots__ = ("_chunks", "_cursor_chunk", "_cursor_offset", "_size", "_start", "_used", "room")

    def __init__(self, room: Callable[[], int] | None = None) -> None:
        self._chunks: list[bytes] = []
        # Where the committed data starts in ``_chunks[0]``.
        self._start = 0
        # Bytes held from the committed start, and how many of them have
        # been consumed since the last commit.
        self._size = 0
        self._used = 0
        # Where the next consume reads: a chunk index and an offset in it;
        # never at the very end of a chunk (then it is the next one's start).
        self._cursor_chunk = 0
        self._cursor_offset = 0
        #: How many payload bytes a data frame may have and still be held
        #: until it is whole (asked once per data frame); None: never.
        self.room = room

    def __len__(self) -> int:
        return self._size

    def feed(self, new_bytes: bytes | bytearray | memoryview) -> None:
        if not new_bytes:
            return
        # A bytearray or memoryview may change after this call: keep a copy
        # (wsproto copied every read).
        data = new_bytes if type(new_bytes) is bytes else bytes(new_bytes)
        chunks = self._chunks
        if (
            len(data) < _SMALL_READ
            and chunks
            and len(chunks[-1]) < _SMALL_READ
            and self._cursor_chunk < len(chunks)
        ):
            # Merge a short read into the short one before it (the cursor is
            # not past that one, so its index and offset stay right).
            chunks[-1] += data
        else:
            chunks.append(data)
        self._size += len(data)

    def feed_from(self, data: bytes, offset: int) -> None:
        """``data`` from ``offset`` on, into the empty buffer: the read is
        kept, uncopied, unless what is kept of it is at most an eighth
        (``_KEEP_AT_MOST``), as ``commit`` keeps a read."""
        size = len(data) - offset
        if offset and size * _KEEP_AT_MOST <= len(data):
            data = data[offset:]
            offset = 0
        self._chunks = [data] if size else []
        self._start = self._cursor_offset = offset if size else 0
        self._cursor_chunk = self._used = 0
        self._size = size

    def consume_at_most(self, nbytes: int) -> bytes | memoryview | _Pieces:
        available = self._size - self._used
        count = nbytes if nbytes < available else available
        if count <= 0:
            return b""
        index = self._cursor_chunk
        chunk = self._chunks[index]
        offset = self._cursor_offset
        end = offset + count
        if end < len(chunk):
            self._cursor_offset = end
        elif end == len(chunk):
            self._cursor_chunk = index + 1
            self._cursor_offset = 0
            if not offset:
                self._used += count
                return chunk
        else:
            return self._consume_across_chunks(count)
        self._used += count
        if count <= _SMALL_SLICE:
            return chunk[offset:end]
        return memoryview(chunk)[offset:end]

    def _consume_across_chunks(self, count: int) -> bytes | _Pieces:
        """Bytes that span reads: a short run joined (a header, a masking
        key, a control frame's payload), a payload as its pieces, for the
        masker to copy once."""
        chunks = self._chunks
        index = self._cursor_chunk
        chunk = chunks[index]
        pieces: list[bytes | memoryview] = [memoryview(chunk)[self._cursor_offset :]]
        remaining = count - len(pieces[0])
        while True:
            index += 1
            chunk = chunks[index]
            if len(chunk) >= remaining:
                break
            pieces.append(chunk)
            remaining -= len(chunk)
        if remaining == len(chunk):
            pieces.append(chunk)
            self._cursor_chunk = index + 1
            self._cursor_offset = 0
        else:
            pieces.append(memoryview(chunk)[:remaining])
            self._cursor_chunk = index
            self._cursor_offset = remaining
        self._used += count
        if count <= _SMALL_SLICE:
            return b"".join(pieces)
        return _Pieces(pieces, count)

    def consume_exactly(self, nbytes: int) -> bytes | memoryview | _Pieces | None:
        if self._size - self._used < nbytes:
            return None
        return self.consume_at_most(nbytes)

    def commit(self) -> None:
        used = self._used
        if not used:
            return
        self._size -= used
        self._used = 0
        chunks = self._chunks
        index = self._cursor_chunk
        if index:
            del chunks[:index]
            self._cursor_chunk = 0
        start = self._start = self._cursor_offset
        if start:
            chunk = chunks[0]
            if (len(chunk) - start) * _KEEP_AT_MOST <= len(chunk):
                # Keep what is left, not the whole read it came in.
                chunks[0] = chunk[start:]
                self._start = self._cursor_offset = 0

    def rollback(self) -> None:
        self._used = 0
        self._cursor_chunk = 0
        self._cursor_offset = self._start


class _FastReceiveDecoder(FrameDecoder):
    """wsproto's frame decoder reading from a ``_ChunkBuffer``: fast
    unmasking, payloads passed on without copies, and data frames that fit
    the buffer's ``room`` held until whole (see the module rules)."""

    buffer: _ChunkBuffer  # type: ignore[assignment]

    def __init__(self, client: bool, extensions: list[Extension] | None = None) -> None:
        super().__init__(client, extensions)
        # Whether the data frames coming belong to a text message, or to a
        # compressed one (a continuation frame does not say), and whether a
        # fragmented message is under way (so a continuation frame is in
        # order).
        self.in_text_message = False
        self.in_compressed_message = False
        self.in_message = False

    def parse_header(self) -> bool:
        parsed = None if self.extensions else self._parse_plain_header()
        if parsed is None:
            # Not a plain header: wsproto's parser decides (and raises the
            # protocol errors).
            if not FrameDecoder.parse_header(self):
                return False
            masker = self.masker
            if type(masker) is XorMaskerNull:
                self.masker = _PLAIN_PAYLOAD
            elif type(masker) is XorMaskerSimple:
                # (A payload in pieces needs our masker; the key is known to
                # be where ``_KNOWN_LAYOUT`` checked it is.)
                self.masker = _FastMasker(masker._masking_key)
        elif not parsed:
            return False
        header = self.header
        if header is None or header.opcode >= 8:  # control opcodes are 8 and up
            return True
        continuation = not header.opcode
        in_order = continuation is self.in_message
        if not continuation:
            self.in_text_message = header.opcode == 1
            self.in_compressed_message = header.rsv.rsv1
        self.in_message = not header.fin
        if not in_order:
            # wsproto refuses it (1002) at its first payload byte: never hold
            # it, or a peer that stops there would never be told.
            return True
        if (
            header.payload_len > self.buffer._size
            and not self.in_text_message
            and not self.in_compressed_message
        ):
            # Not all here yet: wsproto's own "wait for the whole payload"
            # (used for control frames), applied to a binary frame that
            # fits. (Text is validated, and a compressed payload inflated,
            # as it arrives: a bad one is refused at once, not when the
            # frame is complete.)
            room = self.buffer.room
            if room is not None and header.payload_len <= room():
                self.payload_required = header.payload_len
        return True

    def _parse_plain_header(self) -> bool | None:
        """The header of a frame that wsproto would accept with no
        extension in use, parsed to the same decoder state as wsproto's
        ``parse_header`` leaves (see the module rules): True once parsed,
        False when more bytes are needed, None (nothing consumed) when the
        header is anything else: reserved bits or opcodes, a masking that
        does not fit the role, a fragmented or too long control frame, a
        length not in its shortest form. wsproto then parses it again and
        raises what it raises."""
        buffer = self.buffer
        # (Runs this short always come as ``bytes``: see _SMALL_SLICE.)
        start = cast("bytes | None", buffer.consume_exactly(2))
        if start is None:
            buffer.rollback()
            return False
        first = start[0]
        second = start[1]
        opcode = _OPCODES.get(first & 0x0F)
        # A client receives unmasked frames, a server masked ones.
        if opcode is None or first & 0x70 or bool(second & 0x80) is self.client:
            buffer.rollback()
            return None
        length = second & 0x7F
        control = opcode >= 8
        if control:
            if not first & 0x80 or length > 125:
                buffer.rollback()
                return None
        elif length == 126:
            extended = cast("bytes | None", buffer.consume_exactly(2))
            if extended is None:
                buffer.rollback()
                return False
            length = int.from_bytes(extended, "big")
            if length < 126:
                buffer.rollback()
                return None
        elif length == 127:
            extended = cast("bytes | None", buffer.consume_exactly(8))
            if extended is None:
                buffer.rollback()
                return False
            length = int.from_bytes(extended, "big")
            if length <= 0xFFFF or length >> 63:
                buffer.rollback()
                return None
        if self.client:
            self.masker = _PLAIN_PAYLOAD
        else:
            key = cast("bytes | None", buffer.consume_exactly(4))
            if key is None:
                buffer.rollback()
                return False
            self.masker = _FastMasker(key)
        buffer.commit()
        self.header = Header(bool(first & 0x80), _NO_RESERVED_BITS, opcode, length, None)
        self.effective_opcode = opcode
        self.payload_required = length if control else 0
        self.payload_consumed = 0
        return True


#: wsproto's opcodes by value (the reserved ones are missing), and the
#: reserved bits of a frame that sets none (one shared immutable value).
_OPCODES = {opcode.value: opcode for opcode in Opcode}
_NO_RESERVED_BITS = RsvBits(False, False, False)
_BINARY = Opcode.BINARY


class _EventList(list):  # type: ignore[type-arg]
    """A small stand-in for the event ``deque`` of a wsproto ``Connection``:
    it only ever holds a close event or two, so ``pop(0)`` costs nothing."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


def use_compact_event_queue(protocol: Connection) -> bool:
    """Give ``protocol`` a list in place of its event deque (see the module
    rules), keeping any event already queued. Returns whether it could."""
    events = getattr(protocol, "_events", None)
    if type(events) is not deque:
        return False
    protocol._events = _EventList(events)  # type: ignore[assignment]
    return True


def use_fast_unmasking(protocol: Connection) -> bool:
    """Make ``protocol`` unmask incoming payloads with the fast masker.
    Returns whether it could (False: wsproto's layout is not the known one)."""
    frame_protocol = getattr(protocol, "_proto", None)
    decoder = getattr(frame_protocol, "_frame_decoder", None)
    if type(decoder) is not FrameDecoder:
        return False
    decoder.__class__ = _FastUnmaskingDecoder
    return True


def has_unparsed_bytes(protocol: Connection) -> bool:
    """Whether bytes received by ``protocol`` wait in its buffer, not yet
    parsed into events (True when that cannot be told). The reader stops
    parsing at a budget only when there is more to parse: stopping costs
    something, since wsproto's parser keeps the last frame it handed over
    (its payload, the message just queued) until it is resumed."""
    decoder = getattr(getattr(protocol, "_proto", None), "_frame_decoder", None)
    buffer = getattr(decoder, "buffer", None)
    if type(buffer) is _ChunkBuffer:
        return buffer._size > buffer._used
    return True


#: (Globals: reading an enum member off its class is slow.)
_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED


def decoder_between_messages(protocol: Connection) -> FrameDecoder | None:
    """``protocol``'s frame decoder if whole data frames may be taken from
    a read before wsproto sees it, else None (see "Between messages" in
    the module rules)."""
    if protocol.state is not _OPEN:
        return None
    return _idle_decoder(protocol)


def decoder_at_frame_boundary(protocol: Connection) -> FrameDecoder | None:
    """``protocol``'s frame decoder if a whole close frame may be taken
    from a read before wsproto sees it, else None: as
    ``decoder_between_messages``, and also while the connection waits for
    the answer to its own close frame (see "Close frames")."""
    state = protocol.state
    if state is not _OPEN and state is not _LOCAL_CLOSING:
        return None
    return _idle_decoder(protocol)


def note_close_frame_taken(protocol: Connection) -> None:
    """Leave ``protocol`` (whose decoder ``decoder_at_frame_boundary``
    gave) as wsproto's parse of a close frame would: closed if it had sent
    its own, else closing at the peer's request, and its parser finished."""
    protocol._state = _CLOSED if protocol.state is _LOCAL_CLOSING else _REMOTE_CLOSING
    protocol._proto._parse_more.close()


def note_close_frame_sent(protocol: Connection) -> bool | None:
    """Move ``protocol`` on as wsproto's sending of a close frame would:
    closed if the peer's came first, else waiting for the answer. Returns
    whether it is a client's (whose frames are masked); None, changing
    nothing, when wsproto would not send one or its layout is not the one
    known (wsproto then sends it, or refuses)."""
    state = protocol.state
    if not _BETWEEN_MESSAGES_KNOWN or (state is not _OPEN and state is not _REMOTE_CLOSING):
        return None
    protocol._state = _CLOSED if state is _REMOTE_CLOSING else _LOCAL_CLOSING
    return protocol.client


def _idle_decoder(protocol: Connection) -> FrameDecoder | None:
    if not _BETWEEN_MESSAGES_KNOWN or protocol._events:
        return None
    frame_protocol = protocol._proto
    decoder = frame_protocol._frame_decoder
    if (
        type(decoder) is not _FastReceiveDecoder
        or decoder.header is not None
        or decoder.extensions
        or frame_protocol.extensions
        or frame_protocol._message_decoder.opcode is not None
        or frame_protocol._parse_more.gi_frame is None  # type: ignore[attr-defined]
    ):
        return None
    buffer = decoder.buffer
    if type(buffer) is not _ChunkBuffer or buffer._size:
        return None
    return decoder


def note_whole_frames_taken(decoder: FrameDecoder, last: bytes | str, last_size: int) -> None:
    """Leave ``decoder`` (from ``decoder_between_messages``) as wsproto's
    parse of whole data frames would have, the last one carrying ``last``,
    ``last_size`` bytes on the wire."""
    decoder.payload_consumed = last_size
    decoder.payload_required = 0
    if type(decoder) is _FastReceiveDecoder:
        decoder.in_text_message = type(last) is str


def decoder_holding_frame(protocol: Connection, max_size: int) -> _FastReceiveDecoder | None:
    """``protocol``'s frame decoder if it holds a frame until whole, of at
    most ``max_size`` bytes, that a read may add to or complete before
    wsproto sees it, else None (see "Held frames" in the module rules)."""
    if protocol.state is not _OPEN or not _BETWEEN_MESSAGES_KNOWN or protocol._events:
        return None
    frame_protocol = protocol._proto
    decoder = frame_protocol._frame_decoder
    if (
        type(decoder) is not _FastReceiveDecoder
        or decoder.extensions
        or frame_protocol.extensions
        or frame_protocol._message_decoder.opcode is not None
        or frame_protocol._parse_more.gi_frame is None  # type: ignore[attr-defined]
    ):
        return None
    header = decoder.header
    if (
        header is None
        or header.opcode is not _BINARY
        or not header.fin
        or header.rsv != _NO_RESERVED_BITS
        or decoder.effective_opcode is not _BINARY
        or decoder.payload_consumed
        or decoder.payload_required != header.payload_len
        or header.payload_len > max_size
    ):
        return None
    masker = decoder.masker
    if type(masker) is _FastMasker:
        fast_masker: _FastMasker = masker
        if fast_masker._offset:
            return None
    elif masker is not _PLAIN_PAYLOAD:
        return None
    buffer: _ChunkBuffer = decoder.buffer
    if type(buffer) is not _ChunkBuffer or buffer._used or buffer._size >= header.payload_len:
        return None
    return decoder


def held_frame_missing(decoder: _FastReceiveDecoder) -> int:
    """How many bytes the frame ``decoder`` holds (``decoder_holding_frame``
    gave it) still lacks."""
    buffer: _ChunkBuffer = decoder.buffer
    return decoder.payload_required - buffer._size


def add_to_held_frame(decoder: _FastReceiveDecoder, data: bytes | bytearray) -> None:
    """Keep ``data``, a read that does not complete the frame ``decoder``
    holds, as wsproto's parse of it would: in the buffer, and nothing else
    (wsproto would find the frame still short of its payload)."""
    decoder.buffer.feed(data)


def hold_frame(
    decoder: FrameDecoder, source: bytes, start: int, length: int, key: bytes | None
) -> bool:
    """Take the start of a binary frame at the end of ``source``, a read,
    as wsproto's parse of it would: ``decoder`` (between messages:
    ``decoder_between_messages`` gave it, and any whole frames taken
    before are noted) gets its header, and its payload so far (from
    ``start``) waits in the buffer until the rest comes. The frame has a
    plain header (FIN, binary, no reserved bit, masked as the role wants
    with ``key``, or not, the length in its shortest form) and is cut
    short. Returns False, changing nothing, when the decoder would not
    hold it (see "Whole frames"): then it is wsproto's to parse."""
    if type(decoder) is not _FastReceiveDecoder:
        return False
    buffer = decoder.buffer
    room = buffer.room
    if room is None or length > room():
        return False
    decoder.header = Header(True, _NO_RESERVED_BITS, _BINARY, length, None)
    decoder.effective_opcode = _BINARY
    decoder.masker = _PLAIN_PAYLOAD if key is None else _FastMasker(key)
    decoder.payload_required = length
    decoder.payload_consumed = 0
    decoder.in_text_message = False
    decoder.in_compressed_message = False
    decoder.in_message = False
    buffer.feed_from(source, start)
    return True


def take_held_frame(decoder: _FastReceiveDecoder, data: bytes, need: int) -> bytes:
    """The payload of the frame ``decoder`` holds, completed by the first
    ``need`` bytes of ``data`` (``held_frame_missing``), unmasked and
    joined in one pass; the decoder and its buffer are left as wsproto's
    parse of the frame leaves them (nothing held, the frame's leftovers
    in ``payload_required`` and ``payload_consumed``)."""
    buffer: _ChunkBuffer = decoder.buffer
    parts: list[bytes | memoryview] = list(buffer._chunks)
    if parts and buffer._start:
        parts[0] = memoryview(parts[0])[buffer._start :]
    if need == len(data):
        parts.append(data)
    elif need:
        parts.append(memoryview(data)[:need])
    masker = decoder.masker
    if type(masker) is _FastMasker:
        payload = apply_mask_joined(parts, masker._masking_key, 0)
    else:
        payload = b"".join(parts)
    buffer._chunks = []
    buffer._start = buffer._size = buffer._cursor_chunk = buffer._cursor_offset = 0
    decoder.header = None
    decoder.effective_opcode = None
    decoder.masker = None
    decoder.payload_consumed = decoder.payload_required
    return payload


def _between_messages_known() -> bool:
    """Whether wsproto keeps its receive state where
    ``decoder_between_messages`` reads it, checked on a connection built
    for the purpose."""
    try:
        protocol = Connection(ConnectionType.SERVER)
        frame_protocol = protocol._proto
        return (
            type(frame_protocol) is FrameProtocol
            and protocol.state is ConnectionState.OPEN
            and protocol._state is ConnectionState.OPEN
            and protocol.client is False
            and type(Connection.__dict__.get("state")) is property
            and type(protocol._events) is deque
            and frame_protocol.extensions == []
            and type(frame_protocol._message_decoder) is MessageDecoder
            and frame_protocol._message_decoder.opcode is None
            and frame_protocol._parse_more.gi_frame is not None  # type: ignore[attr-defined]
            and type(frame_protocol._frame_decoder) is FrameDecoder
        )
    except Exception:  # pragma: no cover - depends on the wsproto installed
        return False


_BETWEEN_MESSAGES_KNOWN = _between_messages_known()


def stop_holding(protocol: Connection) -> None:
    """Stop holding the data frame being received until it is whole (a
    streamed receive now wants it in pieces): the bytes of it received so
    far come with the next read, then the rest read by read."""
    decoder = getattr(getattr(protocol, "_proto", None), "_frame_decoder", None)
    if type(decoder) is _FastReceiveDecoder:
        header = decoder.header
        if header is not None and not header.opcode.iscontrol():
            decoder.payload_required = 0


#: The methods of wsproto's receive ``Buffer`` that ``_ChunkBuffer`` stands
#: in for; a wsproto whose ``Buffer`` has others keeps its own.
_BUFFER_METHODS = {"feed", "consume_at_most", "consume_exactly", "commit", "rollback"}
_KNOWN_LAYOUT = (
    {name for name in vars(Buffer) if not name.startswith("__")} == _BUFFER_METHODS
    and all(hasattr(FrameDecoder, name) for name in ("process_buffer", "parse_header"))
    and getattr(XorMaskerSimple(b"\x01\x02\x03\x04"), "_masking_key", None) == b"\x01\x02\x03\x04"
)


#: The attributes of wsproto's ``FrameDecoder`` (all set in its __init__).
_DECODER_STATE = {
    "client",
    "extensions",
    "buffer",
    "header",
    "effective_opcode",
    "masker",
    "payload_required",
    "payload_consumed",
}


def use_fast_receive(protocol: Connection, room: Callable[[], int] | None = None) -> bool:
    """Make ``protocol`` read frames through a ``_ChunkBuffer`` with the
    fast decoder: fast unmasking and fewer payload copies (see the module
    rules). ``room`` is asked, once per data frame, how many payload bytes
    a frame may have and still be held until whole (0: deliver it piece by
    piece as it arrives); None never holds one. Bytes already received
    are kept. Returns whether it could (False: wsproto's layout is not the
    known one, and nothing was changed)."""
    frame_protocol = getattr(protocol, "_proto", None)
    decoder = getattr(frame_protocol, "_frame_decoder", None)
    if type(decoder) is not FrameDecoder or not _KNOWN_LAYOUT:
        return False
    old = getattr(decoder, "buffer", None)
    if (
        type(old) is not Buffer
        or type(getattr(old, "buffer", None)) is not bytearray
        or getattr(old, "bytes_used", None) != 0
    ):
        return False
    # A new decoder, not the old one with its class swapped: CPython only
    # specializes attribute reads for objects laid out by their own class,
    # so a swapped class would slow every attribute wsproto reads. (For the
    # same reason ``vars()`` is never called on it: that would give it a
    # dict of its own.)
    state = vars(decoder)
    if state.keys() != _DECODER_STATE:
        return False  # state we do not know: leave it alone
    fast = _FastReceiveDecoder(decoder.client, decoder.extensions)
    for name in _DECODER_STATE - {"buffer", "extensions"}:
        if getattr(fast, name) != state[name]:
            return False  # not at rest between frames
    buffer = _ChunkBuffer(room)
    buffer.feed(bytes(old.buffer))
    fast.buffer = buffer
    frame_protocol._frame_decoder = fast  # type: ignore[union-attr]
    return True


def forget_room(protocol: Connection) -> None:
    """Drop the callback a fast decoder asks how much of a data frame it may
    hold (see ``use_fast_receive``): for a connection whose reading is over.
    It is a bound method of the connection, which holds ``protocol``: a
    reference cycle that only the cyclic collector would free."""
    decoder = getattr(getattr(protocol, "_proto", None), "_frame_decoder", None)
    if type(decoder) is _FastReceiveDecoder and type(decoder.buffer) is _ChunkBuffer:
        decoder.buffer.room = None
