"""TLS streams that hand over every record already received in one
``receive_some``: ``trio.SSLStream``'s semantics, fewer scheduler passes
per large message.

Why: ``trio.SSLStream.receive_some`` decrypts one TLS record (at most
16 KiB of data) per call, and every call ends with a schedule point, even
when the next records are already in its buffer. A 64 KiB WebSocket
message took five calls, a 1 MiB one about 65, each a full pass of
trio's scheduler and of the WebSocket reader's loop. asyncio's TLS
decrypts everything available per callback. The streams
:func:`tls_stream` makes return the first record as ``SSLStream`` does,
then decrypt the complete records already received, up to
``max_bytes``, before they return. They are ``trio.SSLStream`` objects
(it cannot be subclassed) whose ``receive_some`` is their own.

Rules:
- Everything but what ``receive_some`` returns is ``trio.SSLStream``'s
  own: the handshake, sending, closing, the errors, the conflict checks.
  The read-ahead runs after ``SSLStream.receive_some`` has returned data,
  synchronously (no schedule point, so no other task of this stream runs
  in between), and only on a stream whose state is OK. It decrypts only
  what is already in the incoming buffer: it never reads the transport.
- What it cannot decrypt is left as ``SSLStream`` would find it: a
  partial record stays in the buffer for the next call. A record that
  makes the TLS library answer (a TLS 1.3 KeyUpdate) ends the read-ahead;
  the answer waits in the outgoing buffer, and ``SSLStream`` sends it with
  its next operation on the stream. The end of the peer's data
  (close_notify) ends the read-ahead too; the next call returns ``b""``,
  as ``SSLStream`` does. Any other error of the TLS library is kept and
  raised by the next ``receive_some``, as ``SSLStream`` raises it (after
  the data of the records before it, which it would have returned first).
- With ``_wire.socket_stream`` (trio sockets'), the only module that
  reaches into trio's private attributes: ``trio.SSLStream``'s
  attributes (its TLS object, buffers and state). Each instance checks
  that they are as expected; when they are not (another trio), it is a
  plain ``trio.SSLStream``, slower, never wrong; so it is with the fast
  paths off (``fast_paths``). A test pins the read-ahead as active with
  the pinned trio.
"""

from __future__ import annotations

import ssl
from types import MethodType
from typing import Any, TypeVar

import trio

from . import fast_paths

_T = TypeVar("_T", bound=trio.abc.Stream)


def _trio_state(name: str) -> Any:
    """The member ``name`` of ``trio._ssl._State`` (None if trio has none)."""
    state_enum = getattr(getattr(trio, "_ssl", None), "_State", None)
    return getattr(state_enum, name, None)


_STATE_OK = _trio_state("OK")
_STATE_BROKEN = _trio_state("BROKEN")


#: The instance attribute that keeps an error the read-ahead met (see the
#: module rules); absent until there is one.
_KEPT_ERROR = "_trio_websocket_read_ahead_error"


async def _receive_some_reading_ahead(
    stream: trio.SSLStream[Any], max_bytes: int | None = None
) -> bytes | bytearray:
    """``stream.receive_some`` (see the module rules)."""
    kept: ssl.SSLError | None = vars(stream).pop(_KEPT_ERROR, None)
    if kept is not None:
        # What SSLStream's read would have raised at this record.
        stream._state = _STATE_BROKEN
        await trio.lowlevel.checkpoint()
        if stream._https_compatible and _is_eof(kept):
            return b""
        raise trio.BrokenResourceError from kept
    data = await _SSLSTREAM_RECEIVE_SOME(stream, max_bytes)
    incoming = stream._incoming
    if not data or not incoming.pending or stream._state is not _STATE_OK:
        return data
    if max_bytes is None:
        max_bytes = max(stream._estimated_receive_size, incoming.pending)
    room = max_bytes - len(data)
    if room <= 0:
        return data
    pieces = [data]
    outgoing = stream._outgoing
    read = stream._ssl_object.read
    while room > 0 and incoming.pending and not outgoing.pending:
        try:
            more = read(room)
        except ssl.SSLWantReadError:
            break  # a partial record: the next call has the rest
        except ssl.SSLError as exc:
            vars(stream)[_KEPT_ERROR] = exc
            break
        if not more:
            break  # close_notify: the next call returns b""
        pieces.append(more)
        room -= len(more)
    if len(pieces) == 1:
        return data
    return b"".join(pieces)


_SSLSTREAM_RECEIVE_SOME = trio.SSLStream.receive_some


def _is_eof(error: BaseException) -> bool:
    """Whether ``error`` is the transport's end in the middle of TLS (what
    an ``https_compatible`` stream reads as the end of the data)."""
    return isinstance(error, ssl.SSLEOFError) or (
        "UNEXPECTED_EOF_WHILE_READING" in str(getattr(error, "strerror", "") or "")
    )


def _has_known_layout(stream: trio.SSLStream[Any]) -> bool:
    """Whether ``stream`` has the private attributes the read-ahead uses,
    as trio 0.22 to 0.35 lay them out."""
    return (
        _STATE_OK is not None
        and _STATE_BROKEN is not None
        and type(getattr(stream, "_incoming", None)) is ssl.MemoryBIO
        and type(getattr(stream, "_outgoing", None)) is ssl.MemoryBIO
        and isinstance(getattr(stream, "_ssl_object", None), ssl.SSLObject)
        and getattr(stream, "_state", None) is _STATE_OK
        and isinstance(getattr(stream, "_estimated_receive_size", None), int)
        and isinstance(getattr(stream, "_https_compatible", None), bool)
    )


def tls_stream(
    transport_stream: _T, ssl_context: ssl.SSLContext, **kwargs: Any
) -> trio.SSLStream[_T]:
    """A ``trio.SSLStream`` over ``transport_stream`` (its arguments), whose
    ``receive_some`` reads ahead (see the module rules): for every TLS
    connection the library opens or accepts."""
    stream = trio.SSLStream(transport_stream, ssl_context, **kwargs)
    if fast_paths.ENABLED and _has_known_layout(stream):
        # (trio.SSLStream cannot be subclassed: the instance gets its own
        # receive_some, set in its __dict__ past SSLStream's __setattr__,
        # which forwards some names to the TLS object.)
        vars(stream)["receive_some"] = MethodType(_receive_some_reading_ahead, stream)
    return stream
