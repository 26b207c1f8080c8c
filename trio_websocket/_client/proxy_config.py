"""Which proxy a client connection goes through: the :class:`Proxy` value,
proxy URLs, and the proxy environment variables.

Rules:
- Pure: no trio, no I/O. The environment is read only when the caller asks
  for it (``proxy=True``), at each connection, so that a changed variable
  applies to the next one.
- A :class:`Proxy` is an immutable value: equal proxies hash alike.
- ``Proxy(url)`` raises ``ValueError`` for a URL it cannot use; at connect
  time (a URL string or an environment variable) that becomes
  :exc:`ProxyError`, naming where the URL came from.
- Passwords never appear in a repr or an error message.
- The environment is read as curl and Python's ``urllib`` read it:
  lower-case names first, then upper-case; an empty value is unset;
  ``HTTP_PROXY`` in upper case is ignored inside a CGI request (where any
  client could set it through a ``Proxy:`` header); a value without a scheme
  is an HTTP proxy.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .._core.errors import Headers
from .._core.url import bracket_host
from .proxy_errors import ProxyError

#: The schemes a proxy URL may have, with the port used when it gives none.
DEFAULT_PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")


def _check_proxy_headers(headers: object) -> Headers:
    if headers is None:
        return []
    if isinstance(headers, (str, bytes)):
        raise TypeError("proxy headers must be a list of (bytes, bytes) pairs")
    result: Headers = list(headers)  # type: ignore[call-overload]
    for item in result:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not all(isinstance(part, bytes) for part in item)
        ):
            raise TypeError("proxy headers must be a list of (bytes, bytes) pairs")
        name, value = item
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid proxy header name {name!r}")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise ValueError(f"proxy header {name!r} has a CR, LF or NUL in its value")
    return result


class Proxy:
    """A proxy server that client connections go through.

    Pass it (or just its URL) as ``proxy=`` to :func:`open_websocket_url`
    and the other client entry points. Build one yourself when the URL is
    not enough: to trust a private authority for an ``https://`` proxy, or to
    send your own headers with ``CONNECT``.

    :param url: where the proxy is and how to talk to it:

        - ``http://[user:password@]host[:port]``: an HTTP proxy, asked with
          ``CONNECT`` (port 80 by default); credentials go as
          ``Proxy-Authorization: Basic``.
        - ``https://...``: the same over TLS to the proxy (port 443 by
          default); the proxy's certificate is checked for ``host``.
        - ``socks5://[user:password@]host[:port]``: a SOCKS5 proxy (RFC 1928,
          port 1080 by default); the server's name is resolved here and the
          proxy is given its address. Credentials use RFC 1929.
        - ``socks5h://...``: the same, but the proxy resolves the name.

        User name and password are percent-decoded, as in any URL.
    :param ssl_context: for an ``https://`` proxy, the context for the TLS
        connection to the proxy (default: ``ssl.create_default_context()``).
        The connection to the WebSocket server inside the tunnel uses the
        entry point's own TLS settings.
    :param headers: more headers for an HTTP proxy's ``CONNECT`` request, as
        ``(bytes, bytes)`` pairs; a ``Proxy-Authorization`` header here
        replaces the one built from the URL's credentials.
    :raises ValueError: the URL or another argument cannot be used.
    """

    __slots__ = ("headers", "host", "password", "port", "scheme", "ssl_context", "username")

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    headers: Headers

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Headers | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"proxy URL must be a str, not {type(url).__name__}")
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PROXY_PORTS:
            raise ValueError(
                f"proxy URL scheme must be http, https, socks5 or socks5h, not {scheme!r}"
            )
        host = parts.hostname
        if not host:
            raise ValueError(f"{scheme} proxy URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{scheme} proxy URL for {host} has an invalid port") from None
        if port == 0:
            raise ValueError(f"{scheme} proxy URL for {host} has port 0")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # Most likely the WebSocket URL given by mistake.
            raise ValueError(
                f"{scheme} proxy URL for {host} must not have a path, query or fragment"
            )
        username = None if parts.username is None else unquote(parts.username)
        password = None if parts.username is None else unquote(parts.password or "")
        if username is not None and password is not None:
            _check_credentials(scheme, username, password)
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError("ssl_context must be an ssl.SSLContext")
            if scheme != "https":
                raise ValueError(f"ssl_context given for a {scheme} proxy; it is for https://")
        checked_headers = _check_proxy_headers(headers)
        if checked_headers and scheme not in ("http", "https"):
            raise ValueError("headers are sent to HTTP proxies only, not to SOCKS5")
        values = {
            "scheme": scheme,
            "host": host,
            "port": DEFAULT_PROXY_PORTS[scheme] if port is None else port,
            "username": username,
            "password": password,
            "ssl_context": ssl_context,
            "headers": checked_headers,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Proxy cannot be changed (setting {name}); build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Proxy cannot be changed (deleting {name})")

    def __copy__(self) -> Proxy:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> Proxy:
        return self  # immutable; an SSLContext cannot be copied anyway

    @property
    def is_socks(self) -> bool:
        """Whether this is a SOCKS5 proxy (else an HTTP one)."""
        return self.scheme in ("socks5", "socks5h")

    @property
    def remote_dns(self) -> bool:
        """Whether the proxy resolves the server's name (``socks5h`` and the
        HTTP proxies) rather than this client (``socks5``)."""
        return self.scheme != "socks5"

    @property
    def address(self) -> str:
        """``host:port`` of the proxy (an IPv6 host in brackets)."""
        return f"{bracket_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy's URL with its port and without credentials."""
        return f"{self.scheme}://{self.address}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Proxy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key()[:5])

    def _key(self) -> tuple[object, ...]:
        return (
            self.scheme,
            self.host,
            self.port,
            self.username,
            self.password,
            # Contexts have no value equality: the same object, or none.
            id(self.ssl_context) if self.ssl_context is not None else None,
            tuple(self.headers),
        )

    def __repr__(self) -> str:
        credentials = "" if self.username is None else f"{self.username}:***@"
        return f"Proxy('{self.scheme}://{credentials}{self.address}')"


def _check_credentials(scheme: str, username: str, password: str) -> None:
    if scheme in ("http", "https"):
        if ":" in username:
            # Basic credentials are "user:password": the user cannot hold one.
            raise ValueError("an HTTP proxy user name cannot contain ':'")
        return
    # RFC 1929: each is sent after a one-byte length.
    if not 1 <= len(username.encode()) <= 255:
        raise ValueError("a SOCKS5 user name must be 1 to 255 bytes in UTF-8")
    if len(password.encode()) > 255:
        raise ValueError("a SOCKS5 password must be at most 255 bytes in UTF-8")


# ---------------------------------------------------------------------------
# The environment


def _environment_value(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, value)`` for ``name`` (lower case) or its upper-case
    spelling, whichever is set and not empty, lower case first."""
    candidates = [name, name.upper()]
    if name == "http_proxy" and "REQUEST_METHOD" in environ:
        candidates = [name]  # CGI: HTTP_PROXY may come from the request ("httpoxy")
    for variable in candidates:
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _split_no_proxy_entry(entry: str) -> tuple[str, int | None] | None:
    """``(host or network, port)`` of one ``no_proxy`` entry, or None when
    the entry cannot be read."""
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            return None
        if not rest:
            return host, None
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return None
    if entry.count(":") == 1:  # name:port or IPv4:port (an IPv6 has more)
        host, _, port = entry.partition(":")
        if not port.isdigit():
            return None
        return host, int(port)
    return entry, None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if "/" in pattern:  # a network, as 10.0.0.0/8 or fd00::/8
        address = _ip(host)
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
        return address is not None and address.version == network.version and address in network
    pattern_address = _ip(pattern)
    if pattern_address is not None:
        return _ip(host) == pattern_address
    pattern = pattern.removeprefix("*").lstrip(".")
    if not pattern:
        return False
    return host == pattern or host.endswith("." + pattern)


def bypasses_proxy(host: str, port: int, no_proxy: str | None) -> bool:
    """Whether ``no_proxy`` says to connect to ``host:port`` directly.

    ``no_proxy`` is a comma (or space) separated list of entries: ``*``
    (every host); a domain name, which also covers its subdomains (a leading
    ``.`` or ``*.`` changes nothing); an IP address; a network in CIDR
    notation (``10.0.0.0/8``), which covers IP address hosts only (names are
    not resolved for this). An entry may end in ``:port`` (an IPv6 address
    then in brackets) to cover that port only. Names compare without case.
    """
    if not no_proxy:
        return False
    host = host.lower().rstrip(".").removeprefix("[").removesuffix("]")
    for entry in re.split(r"[,\s]+", no_proxy.strip()):
        if not entry:
            continue
        if entry == "*":
            return True
        split = _split_no_proxy_entry(entry)
        if split is None:
            continue
        pattern, entry_port = split
        if entry_port is not None and entry_port != port:
            continue
        if _host_matches(host, pattern):
            return True
    return False


def proxy_from_environment(
    host: str, port: int, secure: bool, environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """``(variable, URL)`` of the proxy the environment chooses for a
    connection to ``host:port`` (``wss://`` when ``secure``), or None to
    connect directly.

    ``wss://`` reads ``wss_proxy``, then ``https_proxy``; ``ws://`` reads
    ``ws_proxy``, then ``http_proxy``; both then ``all_proxy``. A host
    covered by ``no_proxy`` (see :func:`bypasses_proxy`) gets None.
    """
    no_proxy = _environment_value(environ, "no_proxy")
    if bypasses_proxy(host, port, no_proxy[1] if no_proxy else None):
        return None
    names = ("wss_proxy", "https_proxy") if secure else ("ws_proxy", "http_proxy")
    for name in (*names, "all_proxy"):
        found = _environment_value(environ, name)
        if found is not None:
            return found
    return None


def choose_proxy(
    setting: object,
    host: str,
    port: int,
    secure: bool,
    environ: Mapping[str, str] | None = None,
) -> Proxy | None:
    """The :class:`Proxy` a connection to ``host:port`` goes through, or
    None for a direct connection, from the ``proxy`` argument.

    :raises ProxyError: a URL (given, or from the environment) that cannot
        be used; the ``ValueError`` is chained.
    :raises TypeError: ``setting`` is not one of the accepted kinds.
    """
    if setting is None or setting is False:
        return None
    if isinstance(setting, Proxy):
        return setting
    if setting is True:
        found = proxy_from_environment(
            host, port, secure, os.environ if environ is None else environ
        )
        if found is None:
            return None
        variable, value = found
        if "://" not in value:
            value = f"http://{value}"  # as curl reads "proxy.example:3128"
        try:
            return Proxy(value)
        except ValueError as exc:
            raise ProxyError(f"the {variable} environment variable: {exc}") from exc
    if isinstance(setting, str):
        try:
            return Proxy(setting)
        except ValueError as exc:
            raise ProxyError(f"invalid proxy URL: {exc}") from exc
    raise TypeError(
        "proxy must be None, True (read the environment), a proxy URL or a Proxy, "
        f"not {type(setting).__name__}"
    )
