"""The exceptions raised when a connection through a proxy cannot be opened.

Rules:
- All are :exc:`HandshakeError` subclasses, so code that catches failed
  connections needs no change when a proxy is added.
- The message always names the proxy (scheme, host and port, never the
  password), so that a log line says it was the proxy and not the server.
- Every constructor argument is kept in ``args`` (positional), so that
  ``copy.copy`` and pickling rebuild the exception unchanged.
- Pure: no trio, no I/O.
"""

from __future__ import annotations

from .._core.errors import HandshakeError, Headers


class ProxyError(HandshakeError):
    """The proxy could not open a tunnel to the server: it could not be
    reached, broke off, answered in something other than its protocol, or
    refused (:exc:`ProxyRejected`). A proxy URL that cannot be used (from the
    ``proxy`` argument or from the environment) raises it too. The low-level
    cause, if any, is chained as ``__cause__``.

    :param message: what went wrong, naming the proxy.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProxyRejected(ProxyError):
    """The proxy answered, and refused to open the tunnel.

    :param message: what went wrong, naming the proxy and the target.
    :param status_code: the HTTP status of an HTTP proxy's answer to
        ``CONNECT`` (for example 403, or 502 when the proxy could not reach
        the server); ``None`` for a SOCKS5 proxy.
    :param reply_code: the reply code of a SOCKS5 proxy (RFC 1928 section
        6: 2 not allowed by its rules, 3 network unreachable, 4 host
        unreachable, 5 connection refused...); ``None`` for an HTTP proxy,
        and for a SOCKS5 proxy that refused at authentication.
    :param headers: the headers of an HTTP proxy's answer, as ``(name,
        value)`` byte pairs; empty for a SOCKS5 proxy.
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        reply_code: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        HandshakeError.__init__(self, message, status_code, reply_code, headers)
        self.message = message
        self.status_code = status_code
        self.reply_code = reply_code
        self.headers: Headers = list(headers or [])

    def __repr__(self) -> str:
        code = (
            f"status_code={self.status_code}"
            if self.status_code is not None
            else f"reply_code={self.reply_code}"
        )
        return f"{type(self).__name__}<{code}>"


class ProxyAuthenticationError(ProxyRejected):
    """The proxy wants credentials, or refused the ones given: an HTTP proxy
    answered ``CONNECT`` with ``407 Proxy Authentication Required`` (its
    ``Proxy-Authenticate`` header is in :attr:`~ProxyRejected.headers`) or
    ``401 Unauthorized`` (which some proxies send for wrong credentials), or a
    SOCKS5 proxy accepted none of the offered methods or rejected the
    username and password (RFC 1929)."""
