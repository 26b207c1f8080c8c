"""TLS streams with ``trio.SSLStream``'s semantics at fewer scheduler
passes per message: every record already received handed over in one
``receive_some``, and, over a lean socket, reads and writes without the
schedule points of trio's inner locks.

Why: ``trio.SSLStream.receive_some`` decrypts one TLS record (at most
16 KiB of data) per call, and every call ends with a schedule point, even
when the next records are already in its buffer: a 64 KiB WebSocket
message took five calls, a 1 MiB one about 65. And each time it sends
ciphertext or reads the transport, ``SSLStream`` first takes a lock of its
own (``Lock.acquire`` is a schedule point even when the lock is free), then
calls the transport (another one): two passes of trio's scheduler per write
and per read where a socket stream makes one. A pipelined 64 KiB echo made
about four passes per message (asyncio's TLS fewer than one), the largest
part of its Python time. Its handshake did the same for every read and
write, with more passes for its retries: about eight per handshake. The
streams :func:`tls_stream` makes are ``trio.SSLStream`` objects (it
cannot be subclassed) whose ``receive_some`` (and, over a lean socket,
``send_all`` and the handshake) are their own.

Rules:
- The read-ahead: ``receive_some`` returns the first record's data as
  ``SSLStream`` does, then decrypts the complete records already received,
  up to ``max_bytes``, synchronously (no schedule point, so no other task
  of this stream runs in between), and only on a stream whose state is OK.
  What it cannot decrypt is left as ``SSLStream`` would find it: a partial
  record stays in the buffer for the next call. A record that makes the
  TLS library answer (a TLS 1.3 KeyUpdate) ends the read-ahead; the answer
  waits in the outgoing buffer and goes out, ahead of anything encrypted
  later, with the next operation on the stream. The end of the peer's
  data (close_notify) ends the read-ahead too; the next call returns
  ``b""``, as ``SSLStream`` does. Any other error of the TLS library is
  kept and raised by the next ``receive_some``, as ``SSLStream`` raises it
  (after the data of the records before it, which it would have returned
  first).
- Direct reads and writes, only over a ``LeanSocketStream`` and only in the
  steady state (handshake done, state OK; otherwise ``SSLStream``'s own
  code runs): ``send_all`` encrypts its data with the TLS object (in
  slices of at most 256 KiB, ``_ENCRYPT_SLICE``) and hands each slice's
  ciphertext to the socket's non-blocking ``send_now``; a write of more
  than one slice first lets the kernel hold all of it unsent
  (``LeanSocketStream.allow_unsent``: trio's 16 KiB ``TCP_NOTSENT_LOWAT``
  made most of a 1 MiB write's sends partial, each a wait and a pass of
  the scheduler), and puts the socket's value back before it returns,
  cancelled or failed too (``_wire.socket_stream``'s rules say why
  nothing else changes); ``receive_some``
  decrypts, and when it needs ciphertext takes what the socket has with
  ``receive_now``. Each call makes one
  schedule point: a cancel-shielded one after an operation that did not
  wait, else the wait itself. Only to wait (the socket's buffer full,
  nothing to read) does a call take the stream's inner lock, the one
  trio's own code takes around the transport, without a schedule point
  (it is free: nothing ran since it was checked); trio's own operations
  on the stream (``wait_send_all_might_not_block``, ``aclose``, a
  renegotiation) queue behind the wait, and a direct call finding the
  lock held queues behind them, so ciphertext goes out in the order it
  was made. The session tickets a TLS 1.3 server's handshake holds back
  go out in front of the first ciphertext sent after it, whichever path
  sends it, as ``SSLStream`` sends them.
- A write right before closing (:func:`send_before_closing`: the close
  echo a connection sends just before it closes its stream) is a direct
  ``send_all`` without its schedule point after a write that did not
  wait: the ``aclose`` that follows makes the pair's one, as a lean
  socket's ``send_now`` then ``aclose`` do. Its cancellation check
  before the write stays. (About one pass of the scheduler less per
  connection that a WebSocket client closes.)
- The handshake, over a lean socket, is direct too (every way it starts:
  ``do_handshake``, the first ``receive_some`` or ``send_all``, ``aclose``):
  ``SSLObject.do_handshake`` driven with ``send_now`` / ``receive_now``,
  waiting only when the socket has nothing to read or no room (or, right
  after sending a flight the peer must answer, for its answer, without a
  read first that would find nothing), without
  trio's locks and retries (about eight passes of the scheduler per
  handshake down to one or two). Everything else is ``SSLStream``'s: it
  runs once (trio's ``_Once``: a second task waits for the first); it
  starts with a cancellation check and makes at least one schedule
  point; what the TLS object writes goes out before it reads again; any
  failure, a cancellation or a timeout included, breaks the stream (a
  failure of the TLS library as ``BrokenResourceError`` chained from it);
  a TLS 1.3 server holds its session tickets back for its first write.
  A first ``receive_some`` that runs the handshake counts it in its one
  schedule point, and on an ``https_compatible`` stream reads the peer's
  leaving in mid-handshake as the end of the data, as ``SSLStream``'s
  does.
- What a connection keeps while it waits: once the handshake is done the
  stream's ``_Once`` is swapped for one finished ``_Once`` that all
  streams share (on a finished one trio only reads; and the direct paths
  tell a finished handshake by it); a direct read waits
  on trio's ``wait_readable`` itself, with no coroutine of ours in
  between, and meets the TLS object's "want read" in a plain function
  (an exception through a coroutine gives it a frame object for the rest
  of its life): about 1.2 KiB less per idle connection.
- A direct read whose data so far was all buffered (the rest of a read
  that ``max_bytes`` cut short: the peer sends in bulk) reads the socket
  once more without waiting, after its schedule point, and decrypts what
  came up to ``max_bytes``, rather than return a few bytes and cost a
  whole call. An error of the socket there is kept and raised by the next
  ``receive_some``, as ``SSLStream``'s next read of the socket raises it.
  A read that ran the handshake has read the socket in this call (its
  data came with the peer's last flight): no top-up.
- Everything else is ``SSLStream``'s: the conflict checks
  (``BusyResourceError``), the state checks, the errors (a failed or
  cancelled send, or a failure of the TLS library, breaks the stream; an
  ``https_compatible`` stream reads the transport's end in mid-TLS as the
  end of the data), ``aclose``, ``unwrap``, and the handshake over any
  other transport.
- A read at once (:func:`receive_at_once`: a server reader's first read,
  ``_core.receiving``'s "The first read") is a direct read's first half,
  synchronous: the data the TLS object holds, or else what one read of the
  socket without waiting brings, read ahead as above; nothing (None) when
  that is not a whole record, the bytes kept for the next read. It makes
  no schedule point and no cancellation check (its caller does), and
  only runs in the steady state with no answer of the TLS library waiting
  to go out and no other task reading the transport.
- A closed stream can give its methods back (:func:`forget_own_methods`):
  they are bound to it and kept in its own ``__dict__``, a reference cycle
  the cyclic collector alone would free; once they are gone a finished
  connection is freed by reference counting. On a closed stream
  ``SSLStream``'s own methods do what ours do (they raise
  ``ClosedResourceError``).
- With ``_wire.socket_stream`` (trio sockets'), the only module that
  reaches into trio's private attributes: ``trio.SSLStream``'s
  attributes (its TLS object, buffers, state, locks, conflict detectors,
  the held-back tickets, its ``_Once``: the coroutine function it runs,
  its flag and event). The first stream made checks that they are as
  expected, and the answer is kept: every stream is made here, fresh, by
  the same trio, so each would find the same (the kind of transport, which
  decides on the direct paths, is looked at for each). When they are not
  (another trio), it is a plain ``trio.SSLStream``, slower, never wrong;
  so it is with the fast paths off (``fast_paths``).
  Tests pin the fast paths as active with the pinned trio.
"""

from __future__ import annotations

import operator
import ssl
from types import MethodType
from typing import Any, NoReturn, TypeGuard, TypeVar

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from . import fast_paths

_T = TypeVar("_T", bound=trio.abc.Stream)


def _trio_state(name: str) -> Any:
    """The member ``name`` of ``trio._ssl._State`` (None if trio has none)."""
    state_enum = getattr(getattr(trio, "_ssl", None), "_State", None)
    return getattr(state_enum, name, None)


_STATE_OK = _trio_state("OK")
_STATE_BROKEN = _trio_state("BROKEN")
_STATE_CLOSED = _trio_state("CLOSED")


#: The instance attribute that keeps an error the read-ahead met (see the
#: module rules); absent until there is one.
_KEPT_ERROR = "_trio_websocket_read_ahead_error"

#: How much a TLS stream reads from its socket at once (the lean socket's
#: ``receive_some()`` without a size reads as much): trio's ``SSLStream``
#: reads its transport without a size, and trio's sockets read 64 KiB;
#: with 128 KiB a 1 MiB message over TLS cost 30% less server CPU (reads
#: of 256 KiB cost more again).
TRANSPORT_READ_SIZE = 128 * 1024

_SSLSTREAM_RECEIVE_SOME = trio.SSLStream.receive_some
_SSLSTREAM_SEND_ALL = trio.SSLStream.send_all


# ---------------------------------------------------------------------------
# Reading ahead


def _decrypt_buffered(stream: trio.SSLStream[Any], pieces: list[bytes], room: int) -> int:
    """Append to ``pieces`` the data of the records already received, up to
    ``room`` bytes (see the module rules); returns the room left."""
    incoming = stream._incoming
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
    return room


def _read_ahead(stream: trio.SSLStream[Any], data: bytes, max_bytes: int | None) -> bytes:
    """``data`` (what a read returned) and the records already received
    after it, up to ``max_bytes`` in all (see the module rules)."""
    incoming = stream._incoming
    if not data or not incoming.pending or stream._state is not _STATE_OK:
        return data
    if max_bytes is None:
        max_bytes = max(stream._estimated_receive_size, incoming.pending)
    room = max_bytes - len(data)
    if room <= 0:
        return data
    pieces = [data]
    _decrypt_buffered(stream, pieces, room)
    if len(pieces) == 1:
        return data
    return b"".join(pieces)


async def _receive_some_reading_ahead(
    stream: trio.SSLStream[Any], max_bytes: int | None = None
) -> bytes | bytearray:
    """``stream.receive_some`` through ``SSLStream``'s own code, reading
    ahead (see the module rules)."""
    kept: BaseException | None = vars(stream).pop(_KEPT_ERROR, None)
    if kept is not None:
        await checkpoint()
        if not isinstance(kept, ssl.SSLError):
            raise kept  # the socket's, as SSLStream's next read of it raises it
        # What SSLStream's read would have raised at this record.
        stream._state = _STATE_BROKEN
        if stream._https_compatible and _is_eof(kept):
            return b""
        raise trio.BrokenResourceError from kept
    data = await _SSLSTREAM_RECEIVE_SOME(stream, max_bytes)
    return _read_ahead(stream, data, max_bytes)  # type: ignore[arg-type]


def _is_eof(error: BaseException) -> bool:
    """Whether ``error`` is the transport's end in the middle of TLS (what
    an ``https_compatible`` stream reads as the end of the data)."""
    return isinstance(error, ssl.SSLEOFError) or (
        "UNEXPECTED_EOF_WHILE_READING" in str(getattr(error, "strerror", "") or "")
    )


# ---------------------------------------------------------------------------
# Direct reads and writes over a lean socket


def _on_direct_paths(stream: trio.abc.Stream) -> TypeGuard[trio.SSLStream[Any]]:
    """Whether ``stream`` is a TLS stream that :func:`tls_stream` gave the
    direct read and write (over a lean socket; they come and go together)
    and that still has them (see :func:`forget_own_methods`)."""
    return (
        type(stream) is trio.SSLStream
        and getattr(vars(stream).get("send_all"), "__func__", None) is _send_all_direct
    )


def _is_steady(stream: trio.SSLStream[Any]) -> bool:
    """Whether the direct paths may run now (see the module rules): the
    handshake is done, the state is OK."""
    # (A stream on the direct paths has the shared finished ``_Once`` from
    # the end of its handshake on, and only then: see the module rules.
    # Its ``done`` is a property calling the event's ``is_set``: two
    # Python calls for every read and write.)
    return stream._state is _STATE_OK and stream._handshook is _finished_handshake


def _after_held_back(stream: trio.SSLStream[Any], ciphertext: bytes) -> bytes:
    """``ciphertext`` behind the session tickets the handshake held back
    (a TLS 1.3 server's), which go out with the first ciphertext after
    it, as ``SSLStream`` sends them; to call with the send lock free or
    held (so that it is this ciphertext's turn)."""
    held_back = stream._delayed_outgoing
    if held_back is None:
        return ciphertext
    stream._delayed_outgoing = None
    return held_back + ciphertext


#: The most plaintext a direct ``send_all`` encrypts at once. Encrypted
#: whole, a 1 MiB message made its ciphertext in one fresh buffer of its
#: size while the TLS library's own grew to match; glibc gave both back to
#: the system after each message and faulted them in again for the next
#: (about 2,500 ``brk`` calls in 3 s of a pipelined 1 MiB echo, and the
#: cost per message varying by half). Slices of 256 KiB stay below glibc's
#: trim threshold and cost nothing measurable in calls.
_ENCRYPT_SLICE = 256 * 1024


async def _put_ciphertext(stream: trio.SSLStream[Any], ciphertext: bytes) -> bool:
    """Send ``ciphertext`` (just taken from the outgoing buffer, so that
    nothing encrypted later can go first) on the lean socket under
    ``stream``; whether it waited (a schedule point), else it made none.
    Breaks the stream if the send fails or is cancelled (part of a record
    may be on the wire)."""
    transport = stream.transport_stream
    lock = stream._inner_send_lock
    try:
        if lock.locked():
            # Another task's ciphertext is on its way: ours follows it.
            async with lock:
                await transport.send_all(_after_held_back(stream, ciphertext))
            return True
        ciphertext = _after_held_back(stream, ciphertext)
        sent = transport.send_now((ciphertext,))
        if sent == len(ciphertext):
            return False
        # The socket's buffer is full: wait for room holding the lock, as
        # SSLStream's own sends do. (Free, and nothing ran since it was
        # checked: no schedule point to take it.)
        lock.acquire_nowait()
        try:
            await transport.send_all(memoryview(ciphertext)[sent:])
        finally:
            lock.release()
        return True
    except BaseException:
        stream._state = _STATE_BROKEN
        raise


async def _send_all_direct(
    stream: trio.SSLStream[Any],
    data: bytes | bytearray | memoryview,
    *,
    _then_closing: bool = False,
) -> None:
    """``stream.send_all`` over a lean socket (see the module rules);
    ``_then_closing``: :func:`send_before_closing`'s (no schedule point
    after a write that did not wait)."""
    if not _is_steady(stream) or stream._inner_send_lock.locked():
        await _SSLSTREAM_SEND_ALL(stream, data)
        return
    with stream._outer_send_conflict_detector:
        if not data:
            await checkpoint()  # (the TLS object reads an empty write as its end)
            return
        await checkpoint_if_cancelled()
        size = data.nbytes if type(data) is memoryview else len(data)
        if size > _ENCRYPT_SLICE:
            # A write of several slices: the kernel may hold all of it
            # unsent until it returns (see _wire.socket_stream's rules).
            transport = stream.transport_stream
            old = transport.allow_unsent(size + size // _BULK_OVERHEAD + _BULK_SLACK)
            try:
                waited = await _send_slices(stream, data)
            finally:
                transport.restore_unsent(old)
            if not waited and not _then_closing:
                await cancel_shielded_checkpoint()
            return
        # One slice (the common case, inline).
        write = stream._ssl_object.write
        try:
            write(data)
        except ssl.SSLWantReadError:
            # It needs the peer first (a renegotiation): SSLStream's own
            # loop, which writes the same data again, as the TLS library
            # requires.
            await stream._retry(write, data)
            return
        except ssl.SSLError as exc:
            stream._state = _STATE_BROKEN
            raise trio.BrokenResourceError from exc
        if not await _put_ciphertext(stream, stream._outgoing.read()) and not _then_closing:
            await cancel_shielded_checkpoint()


async def send_before_closing(
    stream: trio.abc.Stream, data: bytes | bytearray | memoryview
) -> None:
    """``stream.send_all(data)`` for a caller that closes ``stream`` right
    after, whose ``aclose`` makes the schedule point (see the module
    rules): over a stream on the direct paths, a write that did not wait
    makes none of its own. Any other stream: its ``send_all``."""
    if _on_direct_paths(stream):
        await _send_all_direct(stream, data, _then_closing=True)
        return
    await stream.send_all(data)


#: Room for the TLS records' own bytes when the kernel may hold a whole
#: write unsent: a 16 KiB record carries at most a few dozen bytes more
#: than its data (1/256 is plenty), and a little more for the records of
#: a small last slice.
_BULK_OVERHEAD = 256
_BULK_SLACK = 16 * 1024


async def _send_slices(stream: trio.SSLStream[Any], data: bytes | bytearray | memoryview) -> bool:
    """Encrypt and send ``data`` a slice at a time (see _ENCRYPT_SLICE);
    whether any send waited (a schedule point), else it made none (the
    caller makes the call's one)."""
    write = stream._ssl_object.write
    waited = False
    with memoryview(data) as view:
        for start in range(0, len(view), _ENCRYPT_SLICE):
            piece = view[start : start + _ENCRYPT_SLICE]
            try:
                write(piece)
            except ssl.SSLWantReadError:
                # It needs the peer first (a renegotiation): SSLStream's
                # own loop from here, which writes the same slice again,
                # as the TLS library requires, then the slices after it.
                for rest in range(start, len(view), _ENCRYPT_SLICE):
                    await stream._retry(write, view[rest : rest + _ENCRYPT_SLICE])
                return True
            except ssl.SSLError as exc:
                stream._state = _STATE_BROKEN
                raise trio.BrokenResourceError from exc
            if await _put_ciphertext(stream, stream._outgoing.read()):
                waited = True
    return waited


def _take_in(stream: trio.SSLStream[Any], ciphertext: bytes) -> None:
    """Give what the transport returned to the TLS object (``b""``: its
    end), as ``SSLStream``'s reads do."""
    # (Its counters written in its __dict__: SSLStream's __setattr__, a
    # Python method, costs 0.2 us a write, on every read.)
    attributes = stream.__dict__
    if ciphertext:
        if len(ciphertext) > attributes["_estimated_receive_size"]:
            attributes["_estimated_receive_size"] = len(ciphertext)
        stream._incoming.write(ciphertext)
    else:
        stream._incoming.write_eof()
    attributes["_inner_recv_count"] += 1


async def _receive_behind_lock(stream: trio.SSLStream[Any]) -> None:
    """Another task reads the transport for this stream (``SSLStream``'s
    own code, holding its receive lock): wait for it, and read only if it
    read nothing, as ``SSLStream`` does."""
    count = stream._inner_recv_count
    async with stream._inner_recv_lock:
        if count == stream._inner_recv_count:
            _take_in(stream, await stream.transport_stream.receive_some())


async def _receive_ciphertext(stream: trio.SSLStream[Any]) -> bool:
    """Put more of the peer's bytes into the incoming buffer: what the
    socket has now (no schedule point; returns False), else wait for it
    holding the stream's receive lock (returns True: a schedule point).
    Raises what the transport raises."""
    if stream._inner_recv_lock.locked():
        await _receive_behind_lock(stream)
        return True
    ciphertext = stream.transport_stream.receive_now(TRANSPORT_READ_SIZE)
    if ciphertext is None:
        await _wait_and_take_in(stream)
        return True
    _take_in(stream, ciphertext)
    return False


async def _wait_and_take_in(stream: trio.SSLStream[Any]) -> None:
    """Wait until the socket has something and put it into the incoming
    buffer, holding the stream's receive lock (free: see
    :func:`_put_ciphertext`). (:func:`_receive_some_direct` has it
    inline.)"""
    transport = stream.transport_stream
    lock = stream._inner_recv_lock
    lock.acquire_nowait()
    try:
        while True:
            try:
                await transport.readable()
            except OSError as exc:
                _raise_stream_error(exc)
            ciphertext = transport.receive_now(TRANSPORT_READ_SIZE)
            if ciphertext is not None:
                _take_in(stream, ciphertext)
                return
    finally:
        lock.release()


def _raise_stream_error(exc: OSError) -> NoReturn:
    """The lean socket's exception for ``exc`` (``_wire.socket_stream``
    imports this module: imported when needed)."""
    from .socket_stream import raise_stream_error

    raise_stream_error(exc)


def _read_now(stream: trio.SSLStream[Any], size: int) -> bytes | None:
    """The TLS object's read of up to ``size`` bytes; None when it needs
    more ciphertext. (Caught here, in a plain function: an exception that
    passes through a coroutine gives it a frame object, which it keeps as
    long as it lives: ~300 B for every connection waiting to read.)"""
    try:
        return stream._ssl_object.read(size)
    except ssl.SSLWantReadError:
        return None


async def _receive_some_direct(
    stream: trio.SSLStream[Any], max_bytes: int | None = None
) -> bytes | bytearray:
    """``stream.receive_some`` over a lean socket (see the module rules)."""
    if stream._state is not _STATE_OK or _KEPT_ERROR in vars(stream):
        return await _receive_some_reading_ahead(stream, max_bytes)
    handshook = stream._handshook
    shaking = handshook is not _finished_handshake  # (see _is_steady)
    if shaking and handshook.started:
        # Another task's handshake is under way: SSLStream waits for it.
        return await _receive_some_reading_ahead(stream, max_bytes)
    with stream._outer_recv_conflict_detector:
        waited = False
        if shaking:
            # The handshake first, in this call (as SSLStream's
            # receive_some starts it), counted in its one schedule point.
            handshook.started = True
            try:
                waited = await _shake_hands(stream)
            except trio.BrokenResourceError as exc:
                # An https_compatible stream reads the peer's leaving in
                # mid-handshake as the end of the data, as SSLStream does.
                cause = exc.__cause__
                if stream._https_compatible and (
                    isinstance(cause, ssl.SSLSyscallError) or (cause is not None and _is_eof(cause))
                ):
                    await checkpoint()
                    return b""
                raise
            handshook._done.set()  # (wakes the tasks waiting for it)
            stream._handshook = _finished_handshake
        # (The handshake has just read the socket: the peer's first data
        # came with its last flight. A top-up read would find nothing, at
        # the cost of a system call and an exception: a wss:// server's
        # first read, the opening request, is not topped up.)
        read_socket = shaking
        if max_bytes is None:
            size = max(stream._estimated_receive_size, stream._incoming.pending)
        else:
            size = operator.index(max_bytes)
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
        await checkpoint_if_cancelled()
        outgoing = stream._outgoing
        while True:
            try:
                data = _read_now(stream, size)
            except ssl.SSLError as exc:
                stream._state = _STATE_BROKEN
                if stream._https_compatible and _is_eof(exc):
                    await checkpoint()
                    return b""
                raise trio.BrokenResourceError from exc
            # The TLS library may answer the peer (a KeyUpdate...): that
            # goes first, as SSLStream sends it.
            if outgoing.pending and await _put_ciphertext(stream, outgoing.read()):
                waited = True
            if data is not None:
                break
            read_socket = True
            # (What _receive_ciphertext does, inline: every connection
            # waiting to read keeps two coroutine frames less, ~500 B.)
            lock = stream._inner_recv_lock
            if lock.locked():
                await _receive_behind_lock(stream)
                waited = True
                continue
            transport = stream.transport_stream
            ciphertext = transport.receive_now(TRANSPORT_READ_SIZE)
            if ciphertext is None:
                waited = True
                lock.acquire_nowait()  # (free: see _put_ciphertext)
                try:
                    while ciphertext is None:
                        try:
                            await transport.readable()
                        except OSError as exc:
                            _raise_stream_error(exc)
                        ciphertext = transport.receive_now(TRANSPORT_READ_SIZE)
                finally:
                    lock.release()
            _take_in(stream, ciphertext)
        if not waited:
            await cancel_shielded_checkpoint()
        if not data or stream._state is not _STATE_OK:
            return data
        pieces = [data]
        room = _decrypt_buffered(stream, pieces, size - len(data))
        if room > 0 and not read_socket and _may_top_up(stream):
            # What this call returns so far was all buffered (the rest of a
            # read cut short by max_bytes): the peer sends in bulk, and the
            # socket likely has more. One read without waiting fills the
            # room, rather than a whole call (a scheduler pass) for a
            # few bytes.
            try:
                ciphertext = stream.transport_stream.receive_now(TRANSPORT_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                vars(stream)[_KEPT_ERROR] = exc  # raised by the next call
            else:
                if ciphertext is not None:
                    _take_in(stream, ciphertext)
                    _decrypt_buffered(stream, pieces, room)
        if len(pieces) == 1:
            return data
        return b"".join(pieces)


def receive_at_once(stream: trio.abc.Stream, max_bytes: int | None) -> bytes | None:
    """What a stream on the direct paths has for a read now, up to
    ``max_bytes`` (``b""`` at the end of the data), decrypted from what the
    TLS object holds and, if that is nothing, from one read of the socket
    without waiting; None when it has nothing whole now, or when it is no
    such stream or not in the steady state (the caller then reads with
    ``receive_some``). No schedule point and no cancellation check: for a
    caller that makes them (see the module rules). Raises what a direct
    ``receive_some`` raises; what it read but could not decrypt stays in
    the incoming buffer for the next read."""
    if (
        not _on_direct_paths(stream)
        or not _is_steady(stream)
        or _KEPT_ERROR in vars(stream)
        or stream._inner_recv_lock.locked()
        or stream._outgoing.pending
    ):
        return None
    with stream._outer_recv_conflict_detector:
        if max_bytes is None:
            size = max(stream._estimated_receive_size, stream._incoming.pending)
        else:
            size = operator.index(max_bytes)
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
        try:
            data = _read_now(stream, size)
            if data is None:
                ciphertext = stream.transport_stream.receive_now(TRANSPORT_READ_SIZE)
                if ciphertext is None:
                    return None
                _take_in(stream, ciphertext)
                data = _read_now(stream, size)
                if data is None:
                    return None  # a partial record: the next read has the rest
        except ssl.SSLError as exc:
            stream._state = _STATE_BROKEN
            if stream._https_compatible and _is_eof(exc):
                return b""
            raise trio.BrokenResourceError from exc
        # (An answer the TLS library wrote, a KeyUpdate's, waits in the
        # outgoing buffer and goes out first with the next write or the
        # next direct read, as after the read-ahead.)
        if not data or stream._state is not _STATE_OK:
            return data
        pieces = [data]
        _decrypt_buffered(stream, pieces, size - len(data))
        return data if len(pieces) == 1 else b"".join(pieces)


def _may_top_up(stream: trio.SSLStream[Any]) -> bool:
    """Whether a direct read may read the socket once more, after its
    schedule point: nothing stopped the read-ahead but the end of what
    was buffered, and no other task reads the transport."""
    return (
        stream._state is _STATE_OK
        and not stream._outgoing.pending
        and _KEPT_ERROR not in vars(stream)
        and not stream._inner_recv_lock.locked()
    )


# ---------------------------------------------------------------------------
# The handshake over a lean socket


async def _shake_hands(stream: trio.SSLStream[Any]) -> bool:
    """``SSLStream``'s handshake over a lean socket (see the module rules);
    whether it waited (a schedule point), else it made none. As trio's,
    any failure breaks the stream, a failure of the TLS library (or of
    the peer's certificate) as ``BrokenResourceError`` chained from it."""
    try:
        await checkpoint_if_cancelled()
        ssl_object = stream._ssl_object
        outgoing = stream._outgoing
        waited = False
        if ssl_object.server_side and not stream._incoming.pending:
            # A server's first step can only be to read the client's hello
            # (asking the TLS object first costs it a "want read" error).
            waited = await _receive_ciphertext(stream)
        while True:
            want_read = False
            try:
                ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                want_read = True
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise trio.BrokenResourceError from exc
            to_send = outgoing.read()
            if not want_read and ssl_object.server_side and ssl_object.version() == "TLSv1.3":
                # The session tickets a TLS 1.3 server writes at the end
                # wait for its first write, as SSLStream holds them back
                # (a client that does not read yet must not get them).
                stream._delayed_outgoing = to_send
                to_send = b""
            if to_send and await _put_ciphertext(stream, to_send):
                waited = True
                if want_read:
                    continue  # (things may have moved while it waited: ask again)
            if not want_read:
                return waited
            if to_send and not stream._inner_recv_lock.locked():
                # Our flight just went out and the peer's next one answers
                # it: wait for it rather than first read a socket that has
                # nothing yet (a system call and an exception, almost
                # always for nothing).
                await _wait_and_take_in(stream)
                waited = True
            elif await _receive_ciphertext(stream):
                waited = True
    except BaseException:
        stream._state = _STATE_BROKEN
        raise


async def _handshake_for_trio(stream: trio.SSLStream[Any]) -> None:
    """The handshake ``SSLStream``'s own code runs (``do_handshake``, its
    ``send_all``...): :func:`_shake_hands`, a schedule point in any case.
    (trio's ``_Once`` then sets its own event, waking the tasks waiting
    for it, though the stream has the shared finished one already.)"""
    if not await _shake_hands(stream):
        await cancel_shielded_checkpoint()
    stream._handshook = _finished_handshake


async def _never_called() -> None:  # pragma: no cover - a finished _Once runs nothing
    raise AssertionError("the shared finished handshake ran")


#: trio's ``_Once`` (the stream's ``_handshook``) as it is once the
#: handshake is done (``started``, its event set), shared by every stream
#: past its handshake in place of its own (~400 B each: the ``_Once``, its
#: event, the event's parking lot, the bound method it would call): on a
#: finished one, ``ensure`` and ``done`` only read. Made with the first
#: stream whose ``_Once`` has the known layout.
_finished_handshake: Any = None


def _finish_handshakes_like(handshook: Any) -> bool:
    """Make :data:`_finished_handshake` of ``handshook``'s type (once);
    whether it could."""
    global _finished_handshake
    if type(_finished_handshake) is type(handshook):
        return True
    try:
        finished = type(handshook)(_never_called)
        finished.started = True
        finished._done.set()
    except (TypeError, AttributeError):  # pragma: no cover - another trio
        return False
    if finished.done is not True:  # pragma: no cover - another trio
        return False
    _finished_handshake = finished
    return True


# ---------------------------------------------------------------------------
# Making streams


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


def _has_direct_layout(stream: trio.SSLStream[Any]) -> bool:
    """Whether ``stream`` also has what the direct paths use, as trio 0.22
    to 0.35 lay it out."""
    handshook: Any = getattr(stream, "_handshook", None)
    return (
        type(getattr(stream, "_inner_send_lock", None)) is trio.StrictFIFOLock
        and type(getattr(stream, "_inner_recv_lock", None)) is trio.Lock
        and type(getattr(stream, "_inner_recv_count", None)) is int
        and all(
            name in vars(stream)
            for name in ("_delayed_outgoing", "_estimated_receive_size", "_inner_recv_count")
        )
        and stream._delayed_outgoing is None
        and isinstance(getattr(type(handshook), "done", None), property)
        and handshook.done is False
        and _has_known_handshake(stream, handshook)
        and callable(getattr(stream, "_retry", None))
        and all(
            callable(getattr(getattr(stream, name, None), "__enter__", None))
            for name in ("_outer_send_conflict_detector", "_outer_recv_conflict_detector")
        )
    )


def _has_known_handshake(stream: trio.SSLStream[Any], handshook: Any) -> bool:
    """Whether ``handshook`` (the stream's ``_Once``) runs the stream's
    handshake as trio 0.22 to 0.35 lay it out: the coroutine function it
    calls once (``_afn``, replaceable), its arguments, ``started`` and the
    event ``_done``."""
    slots = getattr(type(handshook), "__slots__", ())
    return (
        all(name in slots for name in ("_afn", "_args", "_done", "started"))
        and handshook.started is False
        and type(handshook._done) is trio.Event
        and handshook._args == ()
        and handshook._afn == getattr(stream, "_do_handshake", None)
        and _finish_handshakes_like(handshook)
    )


def forget_own_methods(stream: trio.abc.Stream) -> None:
    """Give a closed stream made by :func:`tls_stream` ``SSLStream``'s own
    methods back (see the module rules); anything else is left alone."""
    if type(stream) is not trio.SSLStream or stream._state is not _STATE_CLOSED:
        return
    attributes = vars(stream)
    for name in ("receive_some", "send_all", _KEPT_ERROR):
        attributes.pop(name, None)


#: Whether trio's ``SSLStream`` has the layout the read-ahead needs, and the
#: one the direct paths need (None: not checked yet; see the module rules).
_known_layout: bool | None = None
_direct_layout: bool | None = None


def tls_stream(
    transport_stream: _T, ssl_context: ssl.SSLContext, **kwargs: Any
) -> trio.SSLStream[_T]:
    """A ``trio.SSLStream`` over ``transport_stream`` (its arguments), whose
    ``receive_some`` reads ahead and, over a lean socket, which reads and
    writes directly (see the module rules): for every TLS connection the
    library opens or accepts."""
    global _known_layout, _direct_layout
    stream = trio.SSLStream(transport_stream, ssl_context, **kwargs)
    if not fast_paths.ENABLED:
        return stream
    if _known_layout is None:
        _known_layout = _has_known_layout(stream)
    if not _known_layout:
        return stream
    # (trio.SSLStream cannot be subclassed: the instance gets its own
    # methods, set in its __dict__ past SSLStream's __setattr__, which
    # forwards some names to the TLS object.)
    from .socket_stream import LeanSocketStream  # (that module imports this one)

    if type(transport_stream) is LeanSocketStream:
        if _direct_layout is None:
            _direct_layout = _has_direct_layout(stream)
        direct = _direct_layout
    else:
        direct = False
    if direct:
        vars(stream)["receive_some"] = MethodType(_receive_some_direct, stream)
        vars(stream)["send_all"] = MethodType(_send_all_direct, stream)
        handshook: Any = stream._handshook
        handshook._afn = MethodType(_handshake_for_trio, stream)
    else:
        vars(stream)["receive_some"] = MethodType(_receive_some_reading_ahead, stream)
    return stream
