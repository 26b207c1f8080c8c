"""The exceptions raised by the public API.

Rules:
- Every exception keeps all of its constructor arguments in ``args`` so that
  ``copy.copy`` and pickling rebuild it unchanged.
- Imports only ``_core.close``. Lower-level errors (OSError, trio, wsproto) are
  translated into these at the connection and handshake boundaries, with the
  original chained as ``__cause__``.
"""

from __future__ import annotations

from .close import CloseReason

Headers = list[tuple[bytes, bytes]]

#: The phases of opening a client connection, in order, as named by
#: :attr:`HandshakeError.phase`.
PHASE_DNS = "dns"
PHASE_CONNECT = "connect"
PHASE_TLS = "tls"
PHASE_HTTP = "http"


class HandshakeError(Exception):
    """The opening (or closing) handshake failed.

    :param phase: keyword-only: which phase of opening a client connection
        failed (see :attr:`phase`); ``None`` when not known.
    """

    #: Which phase of opening a client connection failed: ``"dns"`` (name
    #: lookup), ``"connect"`` (TCP or Unix socket connection), ``"tls"``
    #: (TLS handshake, certificate verification included), ``"http"`` (the
    #: HTTP upgrade: a rejection, a redirect that cannot be followed, an
    #: answer that is not a WebSocket handshake); ``None`` when not known.
    #: For :exc:`ConnectionTimeout` it is the phase that was in progress.
    phase: str | None = None

    def __init__(self, *args: object, phase: str | None = None) -> None:
        super().__init__(*args)
        # An instance attribute only when given: pickling and copy.copy
        # keep it through the instance ``__dict__``.
        if phase is not None:
            self.phase = phase


class ConnectionTimeout(HandshakeError):
    """The connection and opening handshake took longer than
    ``connect_timeout``."""


class DisconnectionTimeout(HandshakeError):
    """The closing handshake took longer than ``disconnect_timeout``."""


class ConnectionRejected(HandshakeError):
    """The server answered the opening handshake with something other than
    ``101 Switching Protocols``.

    :param status_code: the HTTP status code of the answer.
    :param headers: the answer's headers, as ``(name, value)`` byte pairs.
    :param body: the answer's body, or ``None`` when it had none.
    """

    phase: str | None = PHASE_HTTP

    def __init__(
        self, status_code: int, headers: Headers, body: bytes | None
    ) -> None:
        super().__init__(status_code, headers, body)
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}<status_code={self.status_code}>"

    def __str__(self) -> str:
        return f"server rejected the WebSocket handshake with HTTP {self.status_code}"


class ConnectionClosed(Exception):
    """The WebSocket connection is closed (by either side, or dropped).

    :param reason: the :class:`CloseReason` of the connection.
    """

    def __init__(self, reason: CloseReason | None) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}<{self.reason!r}>"
