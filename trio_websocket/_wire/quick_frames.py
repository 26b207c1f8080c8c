"""Whole messages taken from a read before wsproto sees it.

Rules:
- The second module (after ``frame_decoder``) that touches wsproto
  internals, and only to read them, but for the bookkeeping of the frame
  decoder it sets after taking frames (below). Every access is guarded:
  the layout is checked once, at import (``_KNOWN_LAYOUT``), on a wsproto
  ``Connection`` built for the purpose; if it is not the one expected,
  ``take_whole_messages`` takes nothing, so a wsproto upgrade can cost
  speed but never correctness.
- ``take_whole_messages(protocol, data, max_size, max_count)`` returns the
  messages at the start of ``data`` that are each one whole frame, and the
  rest of ``data``, which the caller feeds to wsproto as before. It takes
  a frame only when that is provably what wsproto would make of it:

  * the connection: wsproto's state is ``OPEN``, no event waits in its
    queue, its parser is alive (a parse error ends wsproto's parsing
    generator, after which wsproto yields nothing more), no extension is
    in use (no permessage-deflate), and its frame decoder is
    ``frame_decoder._FastReceiveDecoder`` (installed only while the fast
    paths are on) with no unparsed byte, no frame and no fragmented
    message under way. Otherwise nothing is taken.
  * each frame: FIN set, no reserved bit, opcode text or binary, masked as
    the role wants (a server receives masked frames, a client unmasked
    ones), its length in the shortest form (and no 64-bit length with the
    top bit set), at most ``max_size`` payload bytes, wholly inside
    ``data``, and for text valid UTF-8 (a strict decode, which is what
    wsproto's incremental decoder does with the last piece of a message).
    The first frame that is anything else (a control frame, a fragment,
    a frame cut short by the end of the read, a frame too big, invalid
    UTF-8, any header wsproto would refuse) stops the taking: it and all
    after it are the rest, for wsproto to parse, deliver or refuse (with
    its close codes: 1002, 1007) as before. At most ``max_count`` are
    taken, so the caller can keep its per-turn bound on events.
- Messages: ``bytes`` for binary frames, ``str`` for text, unmasked with
  the compiled masker (``_wire.masking.apply_mask_bytes``): one copy for
  a binary payload, wsproto's payload copies, ``Frame`` and event objects
  skipped (about 5 us a message saved). ``rest`` is ``data`` itself when
  nothing was taken, else a ``bytes`` slice of it (the one copy the
  frame decoder's buffer would make of a view anyway).
- wsproto's state ends as if it had parsed the taken frames itself. For
  whole, unfragmented data frames with no extension wsproto keeps nothing
  per frame that outlives it: the connection's state and event queue,
  the message decoder (back to no message), the parser generator (back at
  its one ``yield``) and the frame decoder's header, opcode and masker
  (back to None) are what they were. The frame decoder's leftovers of
  the last frame (``payload_consumed``, ``payload_required``, and
  ``_FastReceiveDecoder``'s ``in_text_message``) are set to what wsproto
  would have left; they are rewritten by the next header before any use.
- A hostile peer gains nothing: the work is one pass over ``data`` (no
  length is trusted before it is checked against what ``data`` holds and
  ``max_size``), and the messages are at most ``data``'s bytes in at most
  ``max_count`` objects.
- ``frames_size`` gives the bytes a list of taken messages occupied on the
  wire (their headers are in the shortest form, so their size follows from
  the payload), for a caller that delivers only some of them and must feed
  wsproto the bytes of the others again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.frame_protocol import FrameProtocol, MessageDecoder

from . import fast_paths
from .frame_decoder import _ChunkBuffer, _FastReceiveDecoder
from .masking import apply_mask_bytes

Message = bytes | str

#: The first byte of a frame that may be taken: FIN, no reserved bit, and
#: the opcode binary or text.
_WHOLE_BINARY = 0x82
_WHOLE_TEXT = 0x81

_OPEN = ConnectionState.OPEN
_NOTHING: tuple[Message, ...] = ()


def _known_layout() -> bool:
    """Whether wsproto keeps its receive state where this module reads it
    (checked on a connection built for the purpose)."""
    try:
        probe = Connection(ConnectionType.SERVER)
        frame_protocol = probe._proto
        generator = frame_protocol._parse_more
        return (
            type(frame_protocol) is FrameProtocol
            and type(probe._state) is ConnectionState
            and type(probe._events) is deque
            and frame_protocol.extensions == []
            and type(frame_protocol._message_decoder) is MessageDecoder
            and frame_protocol._message_decoder.opcode is None
            and generator.gi_frame is not None  # type: ignore[attr-defined]
            and hasattr(frame_protocol._frame_decoder, "header")
        )
    except Exception:  # pragma: no cover - depends on the wsproto installed
        return False


_KNOWN_LAYOUT = _known_layout()


def take_whole_messages(
    protocol: Connection,
    data: bytes | bytearray,
    max_size: int,
    max_count: int,
) -> tuple[Sequence[Message], bytes | bytearray]:
    """The whole-frame messages at the start of ``data`` and the rest of
    ``data`` (see the module rules)."""
    if not fast_paths.ENABLED or not _KNOWN_LAYOUT:
        return _NOTHING, data
    if protocol._state is not _OPEN or protocol._events:
        return _NOTHING, data
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
        return _NOTHING, data
    buffer = decoder.buffer
    if type(buffer) is not _ChunkBuffer or buffer._size:
        return _NOTHING, data
    source = data if type(data) is bytes else bytes(data)
    masked = 0 if decoder.client else 1
    size = len(source)
    position = 0
    messages: list[Message] = []
    view: memoryview | None = None
    while size - position >= 2 and len(messages) < max_count:
        first = source[position]
        if first != _WHOLE_BINARY and first != _WHOLE_TEXT:
            break
        second = source[position + 1]
        if second >> 7 != masked:
            break
        length = second & 0x7F
        start = position + 2
        if length >= 126:
            if length == 126:
                start += 2
                if start > size:
                    break
                length = source[start - 2] << 8 | source[start - 1]
                if length < 126:
                    break
            else:
                start += 8
                if start > size:
                    break
                length = int.from_bytes(source[start - 8 : start], "big")
                if length <= 0xFFFF or length >> 63:
                    break
        if length > max_size:
            break
        if masked:
            end = start + 4 + length
            if end > size:
                break
            if view is None:
                view = memoryview(source)
            payload = apply_mask_bytes(view[start + 4 : end], view[start : start + 4])
        else:
            end = start + length
            if end > size:
                break
            payload = source[start:end]
        if first == _WHOLE_TEXT:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                break  # wsproto refuses it (1007)
        else:
            messages.append(payload)
        position = end
    if not messages:
        return _NOTHING, data
    # What wsproto's decoder would have left of the last frame taken (not
    # of the frame that stopped the taking, which ``first`` and ``length``
    # may describe now).
    last = messages[-1]
    if type(last) is bytes:
        decoder.payload_consumed = len(last)
        decoder.in_text_message = False
    else:
        decoder.payload_consumed = _utf8_size(last)
        decoder.in_text_message = True
    decoder.payload_required = 0
    return messages, source[position:]


def _utf8_size(message: Message) -> int:
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode("utf-8"))


def frames_size(messages: Sequence[Message], masked: bool) -> int:
    """The bytes ``messages``, as taken by ``take_whole_messages``, occupied
    on the wire: masked (received by a server) or not."""
    total = 0
    per_frame = 6 if masked else 2
    for message in messages:
        length = _utf8_size(message)
        total += per_frame + length
        if length >= 126:
            total += 2 if length <= 0xFFFF else 8
    return total
