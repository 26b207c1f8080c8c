"""Whole messages taken from a read before wsproto sees it.

Rules:
- ``take_whole_messages(protocol, data, max_size, max_count)`` returns the
  messages at the start of ``data`` that are each one whole frame, and the
  rest of ``data``, which the caller feeds to wsproto as before. It takes
  a frame only when that is provably what wsproto would make of it:

  * the connection: plainly between messages, as
    ``frame_decoder.decoder_between_messages`` tells (open, parser alive,
    no extension such as permessage-deflate, the fast decoder installed,
    which it is only while the fast paths are on, holding no byte, no
    frame and no fragmented message), or so but for a binary frame it
    holds until whole (below), and the fast paths on (``fast_paths``,
    read once per call). Otherwise nothing is taken.
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
  * a binary frame held until whole (``frame_decoder``'s "Held frames";
    the checks are as above, the frame's own were made on its header):
    a read that completes it gives its message first, then the whole
    frames after it as above; a read short of its end goes to the frame's
    buffer, and ``rest`` is then empty with no message: wsproto, fed
    nothing, would have nothing to say, so the caller need not ask it.
- ``hold_frame_start(protocol, rest, max_size)``: when ``rest`` (what
  ``take_whole_messages`` left, or a read it took nothing from) is the
  start of a binary frame cut short by its end (FIN, no reserved bit,
  masked as the role wants, its length in the shortest form and at most
  ``max_size``, its header and key whole), and the connection is plainly
  between messages (as above), the decoder holds it until whole as
  wsproto's parse of ``rest`` would (``frame_decoder.hold_frame``: only
  if its ``room`` says so), keeping ``rest`` uncopied; wsproto, fed
  nothing, would have nothing to say. The caller calls it only after it
  has delivered the messages taken (a caller that stops part-way feeds
  wsproto their bytes and ``rest`` behind them, in order).
- Messages: ``bytes`` for binary frames, ``str`` for text, unmasked with
  the compiled masker (``_wire.masking.apply_mask_bytes``): one copy for
  a binary payload; wsproto's payload copies, ``Frame`` and event objects
  are skipped (about 4 us a message). A held frame's message is joined
  and unmasked in one pass from the reads it spans. ``rest`` is ``data``
  itself when nothing was taken (empty when the read went wholly to a
  held frame), else a ``memoryview`` of the read's tail, uncopied: the
  frame decoder's buffer copies it once when wsproto is fed it, and
  ``hold_frame_start`` keeps the read itself.
- wsproto's state ends as if it had parsed the taken frames itself
  (``frame_decoder.note_whole_frames_taken``). No wsproto internal is
  touched here: ``frame_decoder`` remains the only module that does.
- A hostile peer gains nothing: the work is one pass over ``data`` (no
  length is trusted before it is checked against what ``data`` holds and
  ``max_size``), and the messages are at most ``data``'s bytes in at most
  ``max_count`` objects. A held frame's payload is at most what the
  decoder's ``room`` allowed when it started holding it, and at most
  ``max_size`` (else it is left to wsproto).
- ``frames_size`` gives the bytes a list of taken messages occupied on the
  wire (their headers are in the shortest form, so their size follows from
  the payload), for a caller that delivers only some of them and must feed
  wsproto the bytes of the others again: counted back from where the
  taking ended (``len(data) - len(rest)``), since the first message may be
  a held frame's, only its last bytes in ``data``. (It is never one of
  those not delivered: a caller delivers at least one.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from wsproto.connection import Connection

from . import fast_paths
from .frame_decoder import (
    add_to_held_frame,
    decoder_between_messages,
    decoder_holding_frame,
    held_frame_missing,
    hold_frame,
    note_whole_frames_taken,
    take_held_frame,
)
from .masking import apply_mask_bytes

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder

Message = bytes | str

#: The first byte of a frame that may be taken: FIN, no reserved bit, and
#: the opcode binary or text.
_WHOLE_BINARY = 0x82
_WHOLE_TEXT = 0x81

_NOTHING: tuple[Message, ...] = ()


def take_whole_messages(
    protocol: Connection,
    data: bytes | bytearray,
    max_size: int,
    max_count: int,
) -> tuple[Sequence[Message], bytes | bytearray | memoryview]:
    """The whole-frame messages at the start of ``data`` and the rest of
    ``data`` (see the module rules)."""
    if not fast_paths.ENABLED:
        return _NOTHING, data
    decoder: FrameDecoder | None = decoder_between_messages(protocol)
    messages: list[Message] = []
    position = 0
    if decoder is None:
        held = decoder_holding_frame(protocol, max_size)
        if held is None:
            return _NOTHING, data
        need = held_frame_missing(held)
        if len(data) < need:
            add_to_held_frame(held, data)
            return _NOTHING, b""
        if max_count < 1:
            return _NOTHING, data
        source = data if type(data) is bytes else bytes(data)
        messages.append(take_held_frame(held, source, need))
        position = need
        decoder = held
    else:
        source = data if type(data) is bytes else bytes(data)
    completed = len(messages)
    masked = 0 if decoder.client else 1
    size = len(source)
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
    if len(messages) > completed:
        last = messages[-1]
        note_whole_frames_taken(
            decoder, last, len(last) if type(last) is bytes else _utf8_size(last)
        )
    if not messages:
        return _NOTHING, data
    return messages, (memoryview(source) if view is None else view)[position:]


def hold_frame_start(
    protocol: Connection, rest: bytes | bytearray | memoryview, max_size: int
) -> bool:
    """Hold until whole the binary frame that ``rest`` starts and cuts
    short, as wsproto's parse of ``rest`` would, if the decoder would hold
    it; returns whether it did (see the module rules)."""
    if not fast_paths.ENABLED or len(rest) < 2 or rest[0] != _WHOLE_BINARY:
        return False
    decoder = decoder_between_messages(protocol)
    if decoder is None:
        return False
    masked = 0 if decoder.client else 1
    if type(rest) is memoryview:
        # The tail of a read, as take_whole_messages gives it: the read
        # itself is kept, not a copy.
        source = cast("bytes", rest.obj)
        position = len(source) - len(rest)
    else:
        source = rest if type(rest) is bytes else bytes(rest)
        position = 0
    size = len(source)
    second = source[position + 1]
    if second >> 7 != masked:
        return False
    length = second & 0x7F
    start = position + 2
    if length == 126:
        start += 2
        if size < start:
            return False
        length = source[start - 2] << 8 | source[start - 1]
        if length < 126:
            return False
    elif length == 127:
        start += 8
        if size < start:
            return False
        length = int.from_bytes(source[start - 8 : start], "big")
        if length <= 0xFFFF or length >> 63:
            return False
    payload_start = start + 4 * masked
    if length > max_size or payload_start > size or payload_start + length <= size:
        return False
    key = source[start:payload_start] if masked else None
    return hold_frame(decoder, source, payload_start, length, key)


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
