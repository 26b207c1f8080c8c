"""A lean socket stream: trio's ``SocketStream`` semantics at a lower price
per call, for every connection the library opens or accepts on a socket.

Why: ``trio.SocketStream.receive_some``/``send_all`` go through an error
translating context manager, a conflict detector, a memoryview, a trio
socket method and its ``_try_sync`` helper before the system call: about
5-7 us a call, and a WebSocket handshake makes about six such calls, an
echoed message two. :class:`LeanSocketStream` makes the same system calls
with the same scheduling and the same exceptions, in straight-line code.

Rules:
- Behaves as ``trio.SocketStream`` does: every operation checks for
  cancellation before it touches the socket; one that succeeds without
  waiting then makes a cancel-shielded schedule point (no data is lost to a
  cancel, and a peer that always has data ready cannot starve other
  tasks); one that would block waits with ``wait_readable`` /
  ``wait_writable`` and retries. ``send_all`` sends everything (partial
  sends loop); two tasks sending at once get ``BusyResourceError``;
  sending after ``aclose`` or ``send_eof`` raises ``ClosedResourceError``;
  ``EBADF``/``ENOTSOCK`` mean ``ClosedResourceError`` and any other
  ``OSError`` ``BrokenResourceError`` chained from it. ``send_now`` and
  ``receive_now`` (not in ``SocketStream``) are one non-blocking
  ``sendmsg`` / ``recv``, not checkpoints, with ``send_all``'s /
  ``receive_some``'s errors; ``wait_readable`` waits for them (and
  ``readable``, the same wait without a coroutine frame of its own, whose
  ``OSError`` its caller translates with ``raise_stream_error``). ``aclose`` tells
  trio before closing (a task waiting on the socket gets
  ``ClosedResourceError``) when anyone ever waited on it or it has a trio
  socket, is idempotent and is a checkpoint.
- With ``_wire.tls_stream`` (``trio.SSLStream``'s), the only module that
  reaches into trio's private attributes: a trio socket's stdlib socket
  (``_sock``) and an ``SSLListener``'s context and ``https_compatible``
  flag; and the stdlib socket's ``_accept`` (its ``accept`` without the
  enum reads of family and type). Every access is guarded (types, file
  descriptor, blocking mode); when anything is not as expected, trio's own
  ``SocketStream`` / ``listener.accept`` are used unchanged, so a trio
  upgrade can cost speed, never correctness. A test pins the fast path as
  active with the pinned trio.
- New TCP connections get ``TCP_NODELAY`` and ``TCP_NOTSENT_LOWAT`` as
  ``SocketStream`` gives them (see :data:`NOTSENT_LOWAT` for the value).
- One big write at a time may let the kernel hold more of it unsent
  (:meth:`LeanSocketStream.allow_unsent`, then ``restore_unsent`` before
  the write returns: a ``send_all`` of more than ``BULK_WRITE`` bytes that
  the socket did not take at once, and a TLS stream's direct ``send_all``
  of more than one slice, ``_wire.tls_stream``): its bytes are the stream's next bytes
  whatever happens (nothing can go between them), and whatever is written
  after it waits for all of them, in the kernel or in the program alike,
  so the order and the wait of what follows are the same; only the
  system calls and wake-ups are fewer. The socket's own value (ours,
  trio's or the user's) is read first and put back as it was.
- ``.socket`` is a trio socket over the same stdlib socket, as on
  ``SocketStream``; made on first use (most connections never ask: the
  endpoints are read with ``getsockname``/``getpeername``, which cost no
  trio socket and its ``setblocking`` system call). An accepted stream
  knows both addresses without a system call: the peer's from
  ``accept()``, its own from a listener bound to one address (on a
  wildcard listener it asks the kernel).
- A listener that is neither a ``trio.SocketListener`` nor an
  ``SSLListener`` over one (a user's own, a memory listener) is accepted
  from with its own ``accept()``.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, NoReturn, overload

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

from . import fast_paths
from .tls_stream import TRANSPORT_READ_SIZE, tls_stream

#: What ``setsockopt`` takes as a value (``socket.setsockopt``'s).
OptionValue = int | bytes | bytearray | memoryview

#: What ``receive_some()`` reads when not told: how much a TLS stream over
#: this one reads at once (``_wire.tls_stream``, which says why), as much as
#: a WebSocket's reader takes per read (``receive_buffer_size``).
DEFAULT_RECEIVE_SIZE = TRANSPORT_READ_SIZE

#: ``TCP_NOTSENT_LOWAT`` for new TCP connections: the most unsent bytes the
#: kernel keeps queued before the socket stops being writable. trio uses
#: 16 KiB so that a writer's data waits in the program, where it can still
#: be reordered or dropped, rather than in the kernel: a close frame or a
#: pong is not stuck behind megabytes in the socket buffer. It splits a
#: 1 MiB write into about seven system calls, each a wait for room and a
#: pass of trio's scheduler (about 12% of a pipelined 1 MiB echo's server
#: CPU over TCP, 15% over TLS): so one big write lifts it for its own
#: time (``allow_unsent``: see the module rules), and it stays for
#: everything else.
NOTSENT_LOWAT = 2**14

#: A ``send_all`` bigger than this that the socket does not take at once
#: lets the kernel hold all of its rest unsent (see the module rules).
BULK_WRITE = 256 * 1024

#: The option itself (absent on some systems).
_NOTSENT_LOWAT_OPTION: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)

#: The largest value ``setsockopt`` takes (a C int).
_MAX_SOCKOPT = 2**31 - 1


#: The most buffers one ``sendmsg`` takes (POSIX guarantees 16; Linux
#: and the BSDs take 1024).
def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
        return 16
    return min(1024, value) if value > 0 else 16


_IOV_MAX = _iov_max()

#: Whether sockets have ``sendmsg`` (not on Windows: there, buffers are joined).
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")

#: errno values that mean the socket was closed under us.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})

#: accept() errors that concern only the connection being accepted (reset
#: or refused before we got to it): skipped, as trio's listener does.
_SKIPPED_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)

_STREAM_FAMILIES = frozenset(
    getattr(socket, name) for name in ("AF_INET", "AF_INET6", "AF_UNIX") if hasattr(socket, name)
)


def raise_stream_error(exc: OSError) -> NoReturn:
    """Raise the stream's exception for a failed socket call, as
    ``SocketStream`` does: closed (EBADF) or broken (chained)."""
    if exc.errno in _CLOSED_ERRNOS:
        raise trio.ClosedResourceError("this socket was already closed") from None
    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


def _set_tcp_defaults(sock: socket.socket, family: int | None = None) -> None:
    """``TCP_NODELAY`` and ``TCP_NOTSENT_LOWAT``, as ``SocketStream`` sets
    them (not on a Unix socket, which has neither; a system that refuses
    one keeps its default, as with trio). ``family``: the socket's, when
    the caller knows it (reading ``sock.family`` makes an enum)."""
    if (sock.family if family is None else family) == socket.AF_UNIX:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if lowat is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT)
        except OSError:
            pass


async def _send_rest(sock: socket.socket, data: bytes | bytearray | memoryview, sent: int) -> None:
    """Send ``data`` from ``sent`` on, waiting for room (a checkpoint)
    each time the socket is full (``LeanSocketStream.send_all``)."""
    total = len(data)
    with memoryview(data) as view:
        while sent < total:
            await wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise_stream_error(exc)


class LeanSocketStream(trio.abc.HalfCloseableStream):
    """A :class:`trio.abc.HalfCloseableStream` over a connected,
    non-blocking stdlib ``SOCK_STREAM`` socket (TCP or Unix), with
    ``trio.SocketStream``'s behaviour (see the module rules).

    Build one with :func:`lean_stream` (from a ``trio.SocketStream``) or
    accept one with :func:`acceptor_for`; the constructor trusts that the
    socket is connected, non-blocking and of type ``SOCK_STREAM``.

    :param sock: the stdlib socket; the stream owns it from now on.
    :param trio_socket: the trio socket already wrapping ``sock``, if any
        (it becomes :attr:`socket`).
    """

    __slots__ = (
        "_eof_sent",
        "_peername",
        "_sending",
        "_sock",
        "_sockname",
        "_trio_socket",
        "_waited",
    )

    def __init__(
        self,
        sock: socket.socket,
        trio_socket: trio.socket.SocketType | None = None,
        *,
        sockname: Any = None,
        peername: Any = None,
    ) -> None:
        self._sock = sock
        self._trio_socket = trio_socket
        self._sending = False
        self._eof_sent = False
        # Whether a task ever waited on the socket through this stream (so
        # trio may hold a registration of it to drop on close).
        self._waited = False
        # The addresses when they are known without asking the kernel: the
        # peer's from accept(), ours from a listener bound to one address.
        self._sockname = sockname
        self._peername = peername

    @property
    def socket(self) -> trio.socket.SocketType:
        """The trio socket of this stream, as ``trio.SocketStream.socket``
        (made on first use)."""
        if self._trio_socket is None:
            sock = self._sock
            if sock.fileno() == -1:
                # trio cannot wrap a closed socket; a closed one of the
                # same kind behaves as the real one would now (its
                # addresses raise OSError, fileno() is -1).
                sock = socket.socket(sock.family, sock.type, sock.proto)
                sock.close()
            self._trio_socket = trio.socket.from_stdlib_socket(sock)
        return self._trio_socket

    def _eof_was_sent(self) -> bool:
        # Also through ``.socket.shutdown(SHUT_WR)``, as SocketStream sees it.
        return self._eof_sent or (
            self._trio_socket is not None and self._trio_socket.did_shutdown_SHUT_WR
        )

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        sock = self._sock
        await checkpoint_if_cancelled()
        try:
            data = sock.recv(max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            await cancel_shielded_checkpoint()
            raise_stream_error(exc)
        else:
            await cancel_shielded_checkpoint()
            return data
        # Nothing there yet: wait (a checkpoint itself) and read.
        self._waited = True
        while True:
            await wait_readable(sock)
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise_stream_error(exc)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_was_sent():
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this stream")
        self._sending = True
        view_of_data: memoryview | None = None
        try:
            if type(data) is not bytes and type(data) is not bytearray:
                # A view of any layout, counted in bytes (released below, so
                # the caller's buffer can be resized again at once).
                data = view_of_data = memoryview(data).cast("B")
            total = len(data)
            sock = self._sock
            if not total:
                if sock.fileno() == -1:
                    raise trio.ClosedResourceError("socket was already closed")
                await checkpoint()
                return
            await checkpoint_if_cancelled()
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                await cancel_shielded_checkpoint()
                raise_stream_error(exc)
            if sent == total:
                await cancel_shielded_checkpoint()
                return
            # The kernel took part of it: wait for room (a checkpoint) and
            # send the rest, from a view so that nothing is copied. A big
            # write may leave all of its rest unsent in the kernel for its
            # own time (see the module rules).
            self._waited = True
            old = None
            if total > BULK_WRITE:
                old = self.allow_unsent(total - sent + NOTSENT_LOWAT)
            try:
                await _send_rest(sock, data, sent)
            finally:
                self.restore_unsent(old)
        finally:
            self._sending = False
            if view_of_data is not None:
                view_of_data.release()

    def receive_now(self, max_bytes: int) -> bytes | None:
        """What the socket has now, up to ``max_bytes`` (``b""`` at the end
        of the stream), or None when it has nothing: not a checkpoint, for
        a caller that then waits with :meth:`wait_readable`. Raises as
        ``receive_some`` does."""
        try:
            return self._sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise_stream_error(exc)

    async def wait_readable(self) -> None:
        """Wait until the socket has something to read (or its end); a
        checkpoint."""
        self._waited = True
        try:
            await wait_readable(self._sock)
        except OSError as exc:
            raise_stream_error(exc)

    def readable(self) -> Coroutine[Any, Any, None]:
        """:meth:`wait_readable` without a coroutine of its own: trio's
        wait itself, to await at once (a TLS stream's direct read,
        ``_wire.tls_stream``, which waits in every idle connection: one
        frame less each). An ``OSError`` it raises is the caller's to
        pass to :func:`raise_stream_error`."""
        self._waited = True
        return wait_readable(self._sock)  # noqa: ASYNC105 (awaited by the caller)

    def send_now(self, buffers: Sequence[bytes | memoryview]) -> int:
        """Send what the socket takes of ``buffers`` (in order, as one
        stream of bytes) without waiting: how many bytes it took, 0 when it
        takes none now. Not a checkpoint, and not ``send_all``: the caller
        keeps what is left and sends it later (``_h2.connection``'s writer,
        which waits with :meth:`wait_send_all_might_not_block`; a TLS
        stream's direct write, ``_wire.tls_stream``, which sends the rest
        with ``send_all``). Several
        buffers go in one ``sendmsg`` (no join: no copy), at most
        ``IOV_MAX`` of them. Raises as ``send_all`` does (``BusyResourceError``
        while a ``send_all`` or a wait for room is under way)."""
        if self._eof_was_sent():
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this stream")
        try:
            if len(buffers) == 1:
                return self._sock.send(buffers[0])
            if len(buffers) > _IOV_MAX:
                buffers = buffers[:_IOV_MAX]
            if not _HAS_SENDMSG:  # pragma: no cover - Windows
                return self._sock.send(b"".join(buffers))
            return self._sock.sendmsg(buffers)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise_stream_error(exc)

    def allow_unsent(self, nbytes: int) -> int | None:
        """Let the kernel keep up to ``nbytes`` of this connection's bytes
        unsent (``TCP_NOTSENT_LOWAT``) for the one write under way (see
        the module rules); returns the value :meth:`restore_unsent` puts
        back, or None when nothing changed (a Unix socket, a system
        without the option, no value set on the socket, one already as
        high, an error)."""
        if _NOTSENT_LOWAT_OPTION is None:  # pragma: no cover - not Linux/BSD
            return None
        sock = self._sock
        nbytes = min(nbytes, _MAX_SOCKOPT)  # (a C int: setsockopt refuses a bigger one)
        try:
            if sock.family == socket.AF_UNIX:
                return None
            old = sock.getsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT_OPTION)
            if old <= 0 or old >= nbytes:  # (0: none set, the system's default)
                return None
            sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT_OPTION, nbytes)
        except OSError:
            return None
        return old

    def restore_unsent(self, old: int | None) -> None:
        """Put back the value :meth:`allow_unsent` returned (None: nothing
        to do); a socket closed meanwhile is left alone."""
        option = _NOTSENT_LOWAT_OPTION
        if old is None or option is None:
            return
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, option, old)
        except OSError:
            pass

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this stream")
        self._sending = True
        try:
            if self._sock.fileno() == -1:
                raise trio.ClosedResourceError
            self._waited = True
            try:
                await wait_writable(self._sock)
            except OSError as exc:
                raise_stream_error(exc)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this stream")
        self._sending = True
        try:
            await checkpoint()
            # Idempotent (a second shutdown() fails on some systems).
            if self._eof_was_sent():
                return
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise_stream_error(exc)
            self._eof_sent = True
        finally:
            self._sending = False

    async def aclose(self) -> None:
        sock = self._sock
        if sock.fileno() != -1:
            if self._waited or self._trio_socket is not None:
                # Wakes any task waiting on the socket (ClosedResourceError)
                # and drops trio's registration of it before its file
                # descriptor number can be reused. (A socket nobody waited
                # on has neither: telling trio would only cost a failing
                # epoll_ctl.)
                notify_closing(sock)
            sock.close()
        await checkpoint()

    @overload
    def setsockopt(self, level: int, option: int, value: OptionValue) -> None: ...

    @overload
    def setsockopt(self, level: int, option: int, value: None, length: int) -> None: ...

    def setsockopt(
        self, level: int, option: int, value: OptionValue | None, length: int | None = None
    ) -> None:
        """Set an option on the socket (see :meth:`socket.socket.setsockopt`)."""
        if length is None:
            if value is None:
                raise TypeError(
                    "invalid value for argument 'value', must not be None when specifying length"
                )
            self._sock.setsockopt(level, option, value)
            return
        if value is not None:
            raise TypeError(
                f"invalid value for argument 'value': {value!r}, "
                "must be None when specifying optlen"
            )
        self._sock.setsockopt(level, option, None, length)

    @overload
    def getsockopt(self, level: int, option: int) -> int: ...

    @overload
    def getsockopt(self, level: int, option: int, buffersize: int) -> bytes: ...

    def getsockopt(self, level: int, option: int, buffersize: int = 0) -> int | bytes:
        """Read an option of the socket (see :meth:`socket.socket.getsockopt`)."""
        if buffersize == 0:
            return self._sock.getsockopt(level, option)
        return self._sock.getsockopt(level, option, buffersize)

    def getsockname(self) -> Any:
        """The socket's own address (``socket.getsockname()``), read
        without making :attr:`socket` (nor a system call, when the
        acceptor knew it)."""
        name = self._sockname
        return self._sock.getsockname() if name is None else name

    def getpeername(self) -> Any:
        """The peer's address (``socket.getpeername()``), read without
        making :attr:`socket` (nor a system call, when accepted here)."""
        name = self._peername
        return self._sock.getpeername() if name is None else name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._sock!r}>"


# ---------------------------------------------------------------------------
# Getting at the stdlib socket (private trio API, guarded)


def _stdlib_socket_of(trio_socket: object) -> socket.socket | None:
    """The open, non-blocking stdlib ``SOCK_STREAM`` socket (TCP or Unix)
    inside a trio socket, or None when the trio socket is not laid out as
    expected (another trio version, a fake socket in tests...)."""
    if not isinstance(trio_socket, trio.socket.SocketType):
        return None
    sock = getattr(trio_socket, "_sock", None)
    if type(sock) is not socket.socket:
        return None
    try:
        fileno = sock.fileno()
        if fileno == -1 or fileno != trio_socket.fileno():
            return None
        if sock.gettimeout() != 0.0:
            return None
        if sock.family not in _STREAM_FAMILIES or sock.type != socket.SOCK_STREAM:
            return None
    except (OSError, AttributeError, TypeError):  # pragma: no cover - defensive
        return None
    return sock


def lean_stream(stream: trio.abc.Stream) -> trio.abc.Stream:
    """``stream`` as a :class:`LeanSocketStream` when it is a connected
    ``trio.SocketStream`` (over the same socket, with the same options),
    else ``stream`` itself."""
    if type(stream) is not trio.SocketStream or not fast_paths.ENABLED:
        return stream
    trio_socket = stream.socket
    sock = _stdlib_socket_of(trio_socket)
    if sock is None or trio_socket.did_shutdown_SHUT_WR:
        return stream
    return LeanSocketStream(sock, trio_socket)


# ---------------------------------------------------------------------------
# Accepting


def _accept_known(listening: socket.socket, family: int, proto: int) -> tuple[socket.socket, Any]:
    """``listening.accept()`` for a listener whose family and protocol the
    caller read once: ``socket.accept`` reads both again, as enums, for
    every connection. (``_accept`` is the stdlib socket's own first step;
    without it, the stdlib's ``accept``.)"""
    if not _HAS_RAW_ACCEPT:  # pragma: no cover - other Pythons
        return listening.accept()
    fd, address = listening._accept()  # type: ignore[attr-defined]
    return socket.socket(family, socket.SOCK_STREAM, proto, fileno=fd), address


_HAS_RAW_ACCEPT = hasattr(socket.socket, "_accept")


async def _accept_socket(
    listening: socket.socket,
    accept_now: Callable[[], tuple[socket.socket, Any]] | None = None,
) -> tuple[socket.socket, Any]:
    """One connection and the peer's address from a non-blocking listening
    socket (``accept_now``: how to accept without waiting; default
    ``listening.accept``), with the
    scheduling of trio's ``SocketListener.accept()``: a connection that
    reset before we got to it is skipped; EBADF means the listener closed
    (``ClosedResourceError``); other errors (EMFILE...) are raised."""
    if accept_now is None:
        accept_now = listening.accept
    while True:
        await checkpoint_if_cancelled()
        try:
            accepted = accept_now()
        except BlockingIOError:
            while True:
                await wait_readable(listening)
                try:
                    accepted = accept_now()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno in _CLOSED_ERRNOS:
                        raise trio.ClosedResourceError from None
                    if exc.errno in _SKIPPED_ACCEPT_ERRNOS:
                        break
                    raise
                return accepted
        except OSError as exc:
            await cancel_shielded_checkpoint()
            if exc.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError from None
            if exc.errno not in _SKIPPED_ACCEPT_ERRNOS:
                raise
        else:
            await cancel_shielded_checkpoint()
            return accepted


class _LeanAcceptor:
    """Accepts from a ``trio.SocketListener``'s socket, as lean streams
    (in TLS when the listener was an ``SSLListener`` over one)."""

    __slots__ = (
        "_accept_now",
        "_family",
        "_https_compatible",
        "_listening",
        "_local_name",
        "_ssl_context",
    )

    def __init__(
        self,
        listening: socket.socket,
        ssl_context: ssl.SSLContext | None = None,
        https_compatible: bool = False,
    ) -> None:
        self._listening = listening
        self._ssl_context = ssl_context
        self._https_compatible = https_compatible
        self._local_name = _own_name_of_accepted(listening)
        # Read once (as plain ints): the stdlib makes enums of them on every
        # read.
        self._family = family = int(listening.family)
        self._accept_now = partial(_accept_known, listening, family, listening.proto)

    async def __call__(self) -> trio.abc.Stream:
        family = self._family
        sock, peer = await _accept_socket(self._listening, self._accept_now)
        try:
            sock.setblocking(False)
            _set_tcp_defaults(sock, family)
        except BaseException:
            sock.close()
            raise
        if family in _IP_FAMILIES:
            stream = LeanSocketStream(sock, sockname=self._local_name, peername=peer)
        else:
            stream = LeanSocketStream(sock)
        if self._ssl_context is None:
            return stream
        return tls_stream(
            stream, self._ssl_context, server_side=True, https_compatible=self._https_compatible
        )


_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_WILDCARD_HOSTS = ("0.0.0.0", "::")


def _own_name_of_accepted(listening: socket.socket) -> Any:
    """The address every connection accepted on ``listening`` has as its
    own: the listener's, when it listens on one IP address; None when it
    listens on all of them (each connection then has the address it was
    made to) or is not an IP socket."""
    if listening.family not in _IP_FAMILIES:
        return None
    try:
        name = listening.getsockname()
    except OSError:
        return None
    return None if name[0] in _WILDCARD_HOSTS else name


def _listening_socket_of(listener: object) -> socket.socket | None:
    if type(listener) is not trio.SocketListener:
        return None
    return _stdlib_socket_of(listener.socket)


def acceptor_for(listener: trio.abc.Listener[Any]) -> Callable[[], Awaitable[trio.abc.Stream]]:
    """What accepts ``listener``'s next connection: a lean one for a
    ``trio.SocketListener`` (or a plain ``trio.SSLListener`` over one), else
    ``listener.accept`` itself. Raises what ``listener.accept()`` raises."""
    if not fast_paths.ENABLED:
        return listener.accept
    listening = _listening_socket_of(listener)
    if listening is not None:
        return _LeanAcceptor(listening)
    if type(listener) is trio.SSLListener:
        listening = _listening_socket_of(listener.transport_listener)
        context = getattr(listener, "_ssl_context", None)
        https_compatible = getattr(listener, "_https_compatible", None)
        if (
            listening is not None
            and isinstance(context, ssl.SSLContext)
            and isinstance(https_compatible, bool)
        ):
            return _LeanAcceptor(listening, context, https_compatible)
    return listener.accept


def drop_sent(buffers: list[Any], size: int) -> None:
    """Drop from the head of ``buffers`` the ``size`` bytes a
    :meth:`LeanSocketStream.send_now` of them took: the buffers sent whole,
    then the sent start of the next one (kept as a view of the rest, no
    copy)."""
    done = 0
    for piece in buffers:
        if size < len(piece):
            break
        size -= len(piece)
        done += 1
    del buffers[:done]
    if size:
        buffers[0] = memoryview(buffers[0])[size:]
