"""Opening a stream to a server through a proxy: HTTP ``CONNECT`` (over TCP
or TLS to the proxy) and SOCKS5 (RFC 1928, with RFC 1929 credentials).

Rules:
- The result is a plain ``trio.abc.Stream`` to the server; for ``wss://``
  TLS to the server runs inside the tunnel, checked against the server's
  name, never the proxy's.
- Every failure up to an open tunnel is a :exc:`ProxyError` that names the
  proxy, with the low-level cause chained; a TLS failure with the server
  itself, once the tunnel is up, is a plain :exc:`HandshakeError` that says
  it went through the proxy.
- Reading the proxy's answer is bounded: an HTTP answer head may be at most
  ``MAX_ANSWER_HEAD`` bytes, and SOCKS5 replies are read field by field,
  never a byte past them. Bytes that arrive after an HTTP proxy's ``2xx``
  answer belong to the server and are handed on, not lost.
- The stream is closed on every failure, cancellation included.
- Builds on trio and the pure modules only; ``_client.client`` calls
  :func:`open_tunnel`.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
import struct

import trio

from .._core.errors import HandshakeError, Headers
from .._core.url import bracket_host
from .._wire.socket_stream import lean_stream
from .._wire.tls_stream import tls_stream
from .proxy_config import Proxy
from .proxy_errors import ProxyAuthenticationError, ProxyError, ProxyRejected

#: The largest HTTP answer head (status line and headers) accepted from an
#: HTTP proxy, interim ``1xx`` answers included.
MAX_ANSWER_HEAD = 16 * 1024
#: The most headers accepted in one answer head.
MAX_ANSWER_HEADERS = 100

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEAD_END = re.compile(rb"\r?\n\r?\n")

# SOCKS5 (RFC 1928) and its username/password method (RFC 1929).
_SOCKS_VERSION = 5
_METHOD_NONE = 0x00
_METHOD_USERNAME = 0x02
_METHOD_REFUSED = 0xFF
_COMMAND_CONNECT = 0x01
_ADDRESS_IPV4 = 0x01
_ADDRESS_NAME = 0x03
_ADDRESS_IPV6 = 0x04
_SOCKS_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _describe(proxy: Proxy) -> str:
    """How error messages name a proxy: ``HTTP proxy host:port`` (never with
    its credentials)."""
    kind = "SOCKS5" if proxy.is_socks else proxy.scheme.upper()
    return f"{kind} proxy {proxy.address}"


def _basic_authorization(proxy: Proxy) -> bytes | None:
    """The ``Proxy-Authorization`` value for the URL's credentials, if it
    had any."""
    if proxy.username is None:
        return None
    credentials = f"{proxy.username}:{proxy.password or ''}".encode()
    return b"Basic " + base64.b64encode(credentials)


def _ascii_host(proxy: Proxy, host: str) -> str:
    """``host`` as it goes on the wire to the proxy: IDNA for a name that is
    not ASCII; ProxyError for one that cannot be sent at all."""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ProxyError(
                f"cannot ask the {_describe(proxy)} for the host {host!r}: {exc}"
            ) from exc
    if not re.fullmatch(r"[^\x00-\x20\x7f/?#@]+", host):
        raise ProxyError(f"cannot ask the {_describe(proxy)} for the host {host!r}")
    return host


class _PrefixedStream(trio.abc.Stream):
    """A stream that first hands out ``prefix``: the bytes read past the
    proxy's answer, which are the server's."""

    def __init__(self, prefix: bytes, stream: trio.abc.Stream) -> None:
        self._prefix = prefix
        self.transport_stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._prefix = b""
        await self.transport_stream.aclose()


async def _connect_to_proxy(proxy: Proxy) -> trio.abc.Stream:
    """A TCP stream to the proxy, in TLS for an ``https://`` proxy."""
    try:
        tcp = lean_stream(await trio.open_tcp_stream(proxy.host, proxy.port))
    except OSError as exc:
        raise ProxyError(f"could not connect to the {_describe(proxy)}: {exc}") from exc
    if proxy.scheme != "https":
        return tcp
    context = proxy.ssl_context or ssl.create_default_context()
    stream = tls_stream(tcp, context, server_hostname=proxy.host, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException as exc:
        await trio.aclose_forcefully(stream)
        if isinstance(exc, (*_STREAM_ERRORS, ssl.SSLError)):
            detail = exc.__cause__ or exc
            raise ProxyError(f"TLS with the {_describe(proxy)} failed: {detail}") from exc
        raise
    return stream


# ---------------------------------------------------------------------------
# HTTP CONNECT


def _connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    authority = f"{bracket_host(host)}:{port}".encode("ascii")
    lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
    own_names = {name.lower() for name, _ in proxy.headers}
    authorization = _basic_authorization(proxy)
    if authorization is not None and b"proxy-authorization" not in own_names:
        lines.append(b"Proxy-Authorization: " + authorization)
    lines.extend(name + b": " + value for name, value in proxy.headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _parse_answer_head(proxy: Proxy, head: bytes) -> tuple[int, str, Headers]:
    """Status code, reason phrase and headers of one answer head."""
    status_line, *header_lines = head.split(b"\n")
    match = _STATUS_LINE.fullmatch(status_line.rstrip(b"\r"))
    if match is None:
        shown = status_line[:80].decode("ascii", "replace")
        raise ProxyError(f"the {_describe(proxy)} did not answer in HTTP/1.x: {shown!r}")
    headers: Headers = []
    for line in header_lines:
        line = line.rstrip(b"\r")
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            shown = line[:80].decode("ascii", "replace")
            raise ProxyError(f"the {_describe(proxy)} sent a malformed header line: {shown!r}")
        headers.append((name, value.strip(b" \t")))
    if len(headers) > MAX_ANSWER_HEADERS:
        raise ProxyError(f"the {_describe(proxy)} sent more than {MAX_ANSWER_HEADERS} headers")
    reason = (match.group(2) or b"").decode("latin-1").strip()
    return int(match.group(1)), reason, headers


async def _http_connect(
    stream: trio.abc.Stream, proxy: Proxy, host: str, port: int
) -> trio.abc.Stream:
    host = _ascii_host(proxy, host)
    target = f"{bracket_host(host)}:{port}"
    await stream.send_all(_connect_request(proxy, host, port))
    buffer = b""
    interim_bytes = 0  # the heads of 1xx answers count towards the limit
    while True:
        end = _HEAD_END.search(buffer)
        head_bytes = interim_bytes + (len(buffer) if end is None else end.end())
        if head_bytes > MAX_ANSWER_HEAD:
            raise ProxyError(
                f"the {_describe(proxy)} sent an answer head over {MAX_ANSWER_HEAD} bytes"
            )
        if end is None:
            data = await stream.receive_some(MAX_ANSWER_HEAD)
            if not data:
                state = "before answering" if not buffer else "in the middle of its answer"
                raise ProxyError(
                    f"the {_describe(proxy)} closed the connection {state} (CONNECT {target})"
                )
            buffer += data
            continue
        status, reason, headers = _parse_answer_head(proxy, buffer[: end.start()])
        buffer = buffer[end.end() :]
        if 100 <= status < 200 and status != 101:
            interim_bytes += end.end()
            continue  # an interim answer; the real one follows
        if 200 <= status < 300:
            # The tunnel is open from the blank line on (RFC 9110 9.3.6).
            return _PrefixedStream(buffer, stream) if buffer else stream
        message = f"the {_describe(proxy)} refused CONNECT {target}: {status} {reason}".rstrip()
        # An answer to CONNECT comes from the proxy, so a 401 is the proxy's
        # too (tinyproxy answers wrong credentials with one).
        error = ProxyAuthenticationError if status in (401, 407) else ProxyRejected
        raise error(message, status, None, headers)


# ---------------------------------------------------------------------------
# SOCKS5


async def _receive_exactly(stream: trio.abc.Stream, size: int, proxy: Proxy, step: str) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise ProxyError(f"the {_describe(proxy)} closed the connection during {step}")
        data += chunk
    return data


async def _socks_address(proxy: Proxy, host: str, port: int) -> bytes:
    """DST.ADDR with its type byte: an IP literal as such; a name as a name
    for ``socks5h``, else resolved here."""
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and not proxy.remote_dns:
        try:
            found = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise ProxyError(
                f"could not resolve {host} for the {_describe(proxy)} "
                f"(socks5h:// lets the proxy resolve it): {exc}"
            ) from exc
        if not found:
            raise ProxyError(f"could not resolve {host} for the {_describe(proxy)}")
        literal = ipaddress.ip_address(str(found[0][4][0]).partition("%")[0])
    if isinstance(literal, ipaddress.IPv4Address):
        return bytes([_ADDRESS_IPV4]) + literal.packed
    if isinstance(literal, ipaddress.IPv6Address):
        return bytes([_ADDRESS_IPV6]) + literal.packed
    name = _ascii_host(proxy, host).encode("ascii")
    if not 1 <= len(name) <= 255:
        raise ProxyError(f"the host name {host!r} is too long for the {_describe(proxy)}")
    return bytes([_ADDRESS_NAME, len(name)]) + name


async def _socks_authenticate(stream: trio.abc.Stream, proxy: Proxy) -> None:
    methods = [_METHOD_NONE]
    if proxy.username is not None:
        methods.append(_METHOD_USERNAME)
    await stream.send_all(bytes([_SOCKS_VERSION, len(methods), *methods]))
    version, method = await _receive_exactly(stream, 2, proxy, "method selection")
    if version != _SOCKS_VERSION:
        raise ProxyError(f"the {_describe(proxy)} did not answer in SOCKS5 (version {version})")
    if method == _METHOD_REFUSED:
        wanted = "no authentication or username/password" if len(methods) > 1 else "none"
        raise ProxyAuthenticationError(
            f"the {_describe(proxy)} accepts none of the authentication methods offered "
            f"({wanted}); does it need a user name and password?"
        )
    if method not in methods:
        raise ProxyError(f"the {_describe(proxy)} chose method {method}, which was not offered")
    if method == _METHOD_USERNAME:
        username = (proxy.username or "").encode()
        password = (proxy.password or "").encode()
        await stream.send_all(
            bytes([1, len(username)]) + username + bytes([len(password)]) + password
        )
        # RFC 1929 says the version here is 1; some servers echo 5. Only the
        # status matters.
        _, status = await _receive_exactly(stream, 2, proxy, "authentication")
        if status != 0:
            raise ProxyAuthenticationError(
                f"the {_describe(proxy)} rejected the user name and password "
                f"of user {proxy.username!r}"
            )


async def _socks_connect(
    stream: trio.abc.Stream, proxy: Proxy, host: str, port: int
) -> trio.abc.Stream:
    target = f"{bracket_host(host)}:{port}"
    address = await _socks_address(proxy, host, port)
    await _socks_authenticate(stream, proxy)
    request = bytes([_SOCKS_VERSION, _COMMAND_CONNECT, 0]) + address + struct.pack("!H", port)
    await stream.send_all(request)
    version, reply, _, address_type = await _receive_exactly(stream, 4, proxy, "the reply")
    if version != _SOCKS_VERSION:
        raise ProxyError(f"the {_describe(proxy)} did not answer in SOCKS5 (version {version})")
    if reply != 0:
        meaning = _SOCKS_REPLIES.get(reply, "unknown reply code")
        raise ProxyRejected(
            f"the {_describe(proxy)} refused to connect to {target}: {meaning} ({reply})",
            None,
            reply,
        )
    # BND.ADDR and BND.PORT: read (so the server's bytes start clean) and
    # ignored, as every client does.
    if address_type == _ADDRESS_IPV4:
        await _receive_exactly(stream, 4 + 2, proxy, "the reply")
    elif address_type == _ADDRESS_IPV6:
        await _receive_exactly(stream, 16 + 2, proxy, "the reply")
    elif address_type == _ADDRESS_NAME:
        (length,) = await _receive_exactly(stream, 1, proxy, "the reply")
        await _receive_exactly(stream, length + 2, proxy, "the reply")
    else:
        raise ProxyError(f"the {_describe(proxy)} replied with address type {address_type}")
    return stream


# ---------------------------------------------------------------------------


async def open_tunnel(
    proxy: Proxy, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    """A stream to ``host:port`` through ``proxy``, wrapped in TLS with
    ``ssl_context`` (checked for ``host``) when it is not None."""
    stream = await _connect_to_proxy(proxy)
    try:
        try:
            if proxy.is_socks:
                stream = await _socks_connect(stream, proxy, host, port)
            else:
                stream = await _http_connect(stream, proxy, host, port)
        except _STREAM_ERRORS as exc:
            raise ProxyError(
                f"connection to the {_describe(proxy)} lost while asking for "
                f"{bracket_host(host)}:{port}: {exc}"
            ) from exc
        if ssl_context is None:
            return stream
        tls = tls_stream(stream, ssl_context, server_hostname=host, https_compatible=True)
        stream = tls
        try:
            # Finish TLS now so that a certificate failure is reported as such.
            await tls.do_handshake()
        except (*_STREAM_ERRORS, ssl.SSLError) as exc:
            detail = exc.__cause__ or exc
            raise HandshakeError(
                f"TLS with {bracket_host(host)}:{port} (through the "
                f"{_describe(proxy)}) failed: {detail}"
            ) from exc
        return tls
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
