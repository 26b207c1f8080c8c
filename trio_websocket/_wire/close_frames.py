"""Close frames, received and sent, without wsproto's per-frame cost, by
wsproto's rules.

Why: every connection ends with two close frames, and wsproto's path for
them (its parsing generator, a ``Frame`` and its payload tuple, the
event, its frame serializer with an extension pass and ``bytearray``
copies) was a tenth of a whole open-and-close on the server.

Rules:
- ``take_close_frame(protocol, data)`` returns the ``CloseConnection``
  event wsproto would give for ``data`` when ``data`` is exactly one whole
  close frame that wsproto would accept, and leaves wsproto as if it had
  parsed it (``frame_decoder.note_close_frame_taken``). Otherwise it
  returns None and changes nothing: the caller feeds ``data`` to wsproto
  as before, which delivers or refuses it with its own close codes.
  It takes a frame only:

  * on a connection at a frame boundary (``frame_decoder
    .decoder_at_frame_boundary``: open or waiting for the answer to its
    own close frame, parser alive, no extension, the fast decoder holding
    no byte, no frame and no message under way), with the fast paths on;
  * when the frame has FIN, no reserved bit, the close opcode, the mask
    bit the role wants and a 7-bit length (a control frame's payload is
    at most 125 bytes: anything else is wsproto's to refuse);
  * when the payload is what wsproto accepts: empty (code 1005, no
    reason), or a code from 1000 to 4999 that is neither one of the
    codes only an endpoint may report (1005, 1006, 1015) nor a code up
    to 2999 that RFC 6455 does not assign, then a reason in valid UTF-8.
    The code is wsproto's ``CloseReason`` member when it has one, else
    the number, as wsproto gives it.
- ``close_frame(protocol, code, reason)`` is the close frame wsproto's
  ``send(CloseConnection(code, reason))`` would make (an unmasked one for
  a server, a masked one with a fresh key for a client), and leaves
  wsproto as that call would (``frame_decoder.note_close_frame_sent``),
  or None when that cannot be done (wsproto's layout unknown, or a state
  in which wsproto would refuse): the caller then asks wsproto.
  Only for a connection whose extensions are this library's own (they
  leave control frames as they are); the caller checks that wsproto may
  still send a close frame, as it checks before calling wsproto.
- No wsproto internal is touched here: ``frame_decoder`` remains the only
  module that does.
"""

from __future__ import annotations

import struct

from wsproto.connection import Connection
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

from . import fast_paths
from .frame_decoder import (
    decoder_at_frame_boundary,
    note_close_frame_sent,
    note_close_frame_taken,
)
from .masking import apply_mask_bytes, next_mask_key

#: FIN and the close opcode, no reserved bit.
_CLOSE = 0x88
#: The mask bit of the second header byte.
_MASKED = 0x80
#: A control frame's payload is at most this long (RFC 6455 5.5).
_MAX_CONTROL_PAYLOAD = 125

_pack_code = struct.Struct("!H").pack

#: wsproto's members by number: it reports a known code as the member.
_MEMBERS = {int(member): member for member in CloseReason}
#: What only an endpoint may report, never send (RFC 6455 7.4.1).
_LOCAL_ONLY = {
    int(CloseReason.NO_STATUS_RCVD),
    int(CloseReason.ABNORMAL_CLOSURE),
    int(CloseReason.TLS_HANDSHAKE_FAILED),
}
#: Codes up to this one are the protocol's: only assigned ones may be sent.
_LAST_PROTOCOL_CODE = 2999


def take_close_frame(protocol: Connection, data: bytes | bytearray) -> CloseConnection | None:
    """The event for ``data`` if it is exactly one whole acceptable close
    frame (see the module rules), else None."""
    size = len(data)
    if size < 2 or data[0] != _CLOSE or not fast_paths.ENABLED:
        return None
    second = data[1]
    masked = second & _MASKED
    length = second & 0x7F
    if length > _MAX_CONTROL_PAYLOAD or size != length + (6 if masked else 2):
        return None
    decoder = decoder_at_frame_boundary(protocol)
    if decoder is None or bool(masked) == decoder.client:
        return None
    if masked:
        view = memoryview(data)
        payload = apply_mask_bytes(view[6:], view[2:6])
    else:
        payload = bytes(data[2:])
    event = _close_event(payload)
    if event is not None:
        note_close_frame_taken(protocol)
    return event


def _close_event(payload: bytes) -> CloseConnection | None:
    """wsproto's event for a received close frame's payload, or None if
    wsproto would refuse it."""
    if not payload:
        return CloseConnection(code=CloseReason.NO_STATUS_RCVD, reason="")
    if len(payload) == 1:
        return None
    number = payload[0] << 8 | payload[1]
    if number < 1000 or number > 4999 or number in _LOCAL_ONLY:
        return None
    code: int = _MEMBERS.get(number, number)
    if code is number and number <= _LAST_PROTOCOL_CODE:
        return None  # a protocol code RFC 6455 does not assign
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return CloseConnection(code=code, reason=reason)


def close_frame(protocol: Connection, code: int | None, reason: str | None) -> bytes | None:
    """The close frame wsproto would send for ``code`` and ``reason``, with
    wsproto's state moved on as sending it would (see the module rules);
    None, changing nothing, when it must be left to wsproto."""
    # wsproto's rules for the payload, in its order.
    if code is CloseReason.NO_STATUS_RCVD:
        code = None
    if code is None and reason:
        raise TypeError("cannot specify a reason without a code")
    if code in _LOCAL_ONLY:
        code = CloseReason.NORMAL_CLOSURE
    if code is None:
        payload = b""
    else:
        payload = _pack_code(code)  # (struct's errors for a code out of range, as wsproto's)
        if reason is not None:
            encoded = reason.encode("utf-8")
            if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
                # Cut to the limit, without half a character at the end.
                encoded = (
                    encoded[: _MAX_CONTROL_PAYLOAD - 2]
                    .decode("utf-8", errors="ignore")
                    .encode("utf-8")
                )
            payload += encoded
    client = note_close_frame_sent(protocol)
    if client is None:
        return None
    if client:
        key = next_mask_key()
        return bytes((_CLOSE, _MASKED | len(payload))) + key + apply_mask_bytes(payload, key)
    return bytes((_CLOSE, len(payload))) + payload
