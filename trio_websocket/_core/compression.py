"""permessage-deflate (RFC 7692): the settings a user gives, the parameters
two endpoints agree on, and the negotiation that turns one into the other.

Rules:
- Pure: strings in, values out. No zlib, no trio, no wsproto; the codec
  that uses the result lives in ``_core.deflate``.
- The negotiation follows RFC 7692 section 7 to the letter. A server
  declines (returns None for) an offer with an unknown parameter, a
  parameter given twice, or a bad value, and then tries the client's next
  offer; declining every offer just means no compression. A client that
  gets such a response, or one that ignores a limit it asked for, raises
  ``ValueError``, which fails the opening handshake.
- Window sizes are powers of two given as bits, 8..15 on the wire. zlib
  cannot compress with an 8-bit window, so an endpoint that agreed to one
  (because the peer asked for it) sends its messages uncompressed, which
  the RFC allows; it still inflates everything the peer compresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The extension's registered name (RFC 7692 section 7).
EXTENSION_NAME = "permessage-deflate"

#: LZ77 window sizes RFC 7692 allows, in bits.
MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15
#: The smallest window zlib can compress with.
ZLIB_MIN_COMPRESS_WINDOW_BITS = 9

#: Our own compressor's defaults. A zlib compressor costs about
#: ``2**(window_bits + 2) + 2**(memory_level + 9)`` bytes: 256 KiB with
#: zlib's defaults (15, 8), 32 KiB with ours (12, 5); an inflater about
#: ``2**window_bits`` plus 7 KiB. On text and JSON a 4 KiB window loses
#: only a few percent of the ratio of a 32 KiB one, and a server with
#: thousands of connections keeps most of its memory. A server also asks
#: the client for 12 bits (when it can take a limit), which keeps the
#: server's inflater small.
DEFAULT_COMPRESS_WINDOW_BITS = 12
DEFAULT_MEMORY_LEVEL = 5
DEFAULT_COMPRESSION_LEVEL = 6
#: Messages shorter than this many bytes go uncompressed by default: below
#: about a hundred bytes the deflate block and flush overhead usually eats
#: the saving, and compressing costs CPU on both sides.
DEFAULT_THRESHOLD = 128

_WINDOW_VALUE = re.compile(r"[1-9][0-9]?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"
_KNOWN_PARAMETERS = frozenset(
    {
        _SERVER_NO_CONTEXT_TAKEOVER,
        _CLIENT_NO_CONTEXT_TAKEOVER,
        _SERVER_MAX_WINDOW_BITS,
        _CLIENT_MAX_WINDOW_BITS,
    }
)


def _check_bits(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}")
    if not ZLIB_MIN_COMPRESS_WINDOW_BITS <= value <= MAX_WINDOW_BITS:
        raise ValueError(
            f"{name} must be in {ZLIB_MIN_COMPRESS_WINDOW_BITS}..{MAX_WINDOW_BITS}, got {value}"
        )


def _check_int_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeflateConfig:
    """Settings for permessage-deflate (RFC 7692), given as
    ``compression=DeflateConfig(...)`` to any entry point
    (``compression="deflate"`` means ``DeflateConfig()``).

    The same object serves both sides; each field says what it does on a
    client and on a server. Window sizes are in bits (a window of
    ``2**bits`` bytes), 9..15.

    :param client_max_window_bits: the largest window the client
        compresses with. A client offers it as a promise (and compresses
        with at most that); a server requires it of the client (and
        declines an offer from a client that cannot take the limit).
        ``None``: a client offers to take any limit and compresses with a
        12-bit window; a server asks for 12 bits when the client can take
        a limit (browsers, Node's ws, websockets and this library can) and
        sets none otherwise.
    :param server_max_window_bits: the largest window the server
        compresses with. A client asks the server for it (a server that
        does not comply fails the handshake); a server compresses with at
        most that and says so. ``None``: a client asks nothing; a server
        uses 12 bits.
    :param client_no_context_takeover: the client starts every message
        with an empty window (each message compressed on its own, so the
        client keeps no compressor between messages). A client promises
        it; a server requires it.
    :param server_no_context_takeover: the same for the server's
        messages. A client requires it of the server; a server does it.
    :param memory_level: zlib's ``memLevel`` (1..9) for our compressor:
        more memory, a little better and faster compression.
    :param compression_level: zlib's level (0..9): more CPU per message
        for smaller messages.
    :param threshold: messages shorter than this many bytes (UTF-8 bytes
        for text) are sent uncompressed unless ``send_message`` is told
        otherwise. 0 compresses every message.
    """

    client_max_window_bits: int | None = None
    server_max_window_bits: int | None = None
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    memory_level: int = DEFAULT_MEMORY_LEVEL
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    threshold: int = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        _check_bits("client_max_window_bits", self.client_max_window_bits, optional=True)
        _check_bits("server_max_window_bits", self.server_max_window_bits, optional=True)
        for name in ("client_no_context_takeover", "server_no_context_takeover"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool")
        _check_int_range("memory_level", self.memory_level, 1, 9)
        _check_int_range("compression_level", self.compression_level, 0, 9)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise TypeError("threshold must be an int")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeflateParameters:
    """The permessage-deflate parameters both sides agreed on, as
    :attr:`WebSocketConnection.compression` reports them.

    :param client_max_window_bits: the largest window the client may
        compress with (15 when the response set no limit).
    :param server_max_window_bits: the largest window the server may
        compress with (15 when the response set no limit).
    :param client_no_context_takeover: whether the client compresses each
        message on its own.
    :param server_no_context_takeover: whether the server compresses each
        message on its own.
    """

    client_max_window_bits: int = MAX_WINDOW_BITS
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False

    def response(self, *, state_client_window: bool) -> str:
        """The parameters as a server's response says them (everything
        but the name). ``state_client_window``: whether to include
        ``client_max_window_bits`` (only allowed when the offer had it)."""
        parts = []
        if self.server_no_context_takeover:
            parts.append(_SERVER_NO_CONTEXT_TAKEOVER)
        if self.client_no_context_takeover:
            parts.append(_CLIENT_NO_CONTEXT_TAKEOVER)
        if self.server_max_window_bits < MAX_WINDOW_BITS:
            parts.append(f"{_SERVER_MAX_WINDOW_BITS}={self.server_max_window_bits}")
        if state_client_window and self.client_max_window_bits < MAX_WINDOW_BITS:
            parts.append(f"{_CLIENT_MAX_WINDOW_BITS}={self.client_max_window_bits}")
        return "; ".join(parts)


def compression_config(value: object) -> DeflateConfig | None:
    """The ``compression`` argument of an entry point as a config (None:
    no compression). Raises ``TypeError``/``ValueError`` for anything but
    None, ``"deflate"`` or a :class:`DeflateConfig`."""
    if value is None or isinstance(value, DeflateConfig):
        return value
    if isinstance(value, str):
        if value == "deflate":
            return DeflateConfig()
        raise ValueError(f'compression must be None, "deflate" or a DeflateConfig, not {value!r}')
    raise TypeError(
        f'compression must be None, "deflate" or a DeflateConfig, not {type(value).__name__}'
    )


def parse_element(element: str) -> tuple[str, dict[str, str | None]]:
    """Split one ``Sec-WebSocket-Extensions`` element into its name and
    parameters (a value of None for a parameter without ``=``). Quoted
    values are unquoted (RFC 6455 section 9.1 allows them).

    :raises ValueError: bad syntax, or a parameter given twice.
    """
    name, *raw_parameters = (part.strip() for part in element.split(";"))
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad extension name {name!r}")
    parameters: dict[str, str | None] = {}
    for raw in raw_parameters:
        key, equals, value = (piece.strip() for piece in raw.partition("="))
        if not _TOKEN.fullmatch(key):
            raise ValueError(f"bad extension parameter {raw!r}")
        if key in parameters:
            raise ValueError(f"extension parameter {key} given twice")
        if not equals:
            parameters[key] = None
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"bad value for extension parameter {key}: {value!r}")
        parameters[key] = value
    return name, parameters


def _window_bits(name: str, value: str | None) -> int:
    if value is None or not _WINDOW_VALUE.fullmatch(value):
        raise ValueError(f"{name} needs a value in {MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}")
    bits = int(value)
    if not MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS:
        raise ValueError(f"{name}={value} is outside {MIN_WINDOW_BITS}..{MAX_WINDOW_BITS}")
    return bits


def _flag(name: str, parameters: dict[str, str | None]) -> bool:
    if name not in parameters:
        return False
    if parameters[name] is not None:
        raise ValueError(f"{name} takes no value")
    return True


def _check_known(parameters: dict[str, str | None]) -> None:
    unknown = set(parameters) - _KNOWN_PARAMETERS
    if unknown:
        raise ValueError(f"unknown permessage-deflate parameter {sorted(unknown)[0]}")


def client_offer(config: DeflateConfig) -> str:
    """The parameters of the client's one offer (everything but the name)."""
    parts = []
    if config.server_no_context_takeover:
        parts.append(_SERVER_NO_CONTEXT_TAKEOVER)
    if config.client_no_context_takeover:
        parts.append(_CLIENT_NO_CONTEXT_TAKEOVER)
    if config.server_max_window_bits is not None:
        parts.append(f"{_SERVER_MAX_WINDOW_BITS}={config.server_max_window_bits}")
    if config.client_max_window_bits is not None:
        parts.append(f"{_CLIENT_MAX_WINDOW_BITS}={config.client_max_window_bits}")
    else:
        # Without a value: we can take whatever limit the server sets.
        parts.append(_CLIENT_MAX_WINDOW_BITS)
    return "; ".join(parts)


def server_accept(
    parameters: dict[str, str | None], config: DeflateConfig
) -> tuple[DeflateParameters, str] | None:
    """A server's answer to one offer: the agreed parameters and the
    response's parameter string, or None to decline the offer."""
    try:
        _check_known(parameters)
        server_no_context = _flag(_SERVER_NO_CONTEXT_TAKEOVER, parameters)
        client_no_context = _flag(_CLIENT_NO_CONTEXT_TAKEOVER, parameters)
        server_bits = MAX_WINDOW_BITS
        if _SERVER_MAX_WINDOW_BITS in parameters:
            server_bits = _window_bits(_SERVER_MAX_WINDOW_BITS, parameters[_SERVER_MAX_WINDOW_BITS])
        client_supports_limit = _CLIENT_MAX_WINDOW_BITS in parameters
        client_bits = MAX_WINDOW_BITS
        if client_supports_limit and parameters[_CLIENT_MAX_WINDOW_BITS] is not None:
            # A promise from the client: it will not use a bigger window.
            client_bits = _window_bits(_CLIENT_MAX_WINDOW_BITS, parameters[_CLIENT_MAX_WINDOW_BITS])
    except ValueError:
        return None
    wanted_server_bits = config.server_max_window_bits or DEFAULT_COMPRESS_WINDOW_BITS
    server_bits = min(server_bits, wanted_server_bits)
    if config.client_max_window_bits is not None:
        if not client_supports_limit:
            return None  # we need a limit this client cannot take
        client_bits = min(client_bits, config.client_max_window_bits)
    elif client_supports_limit:
        # Our inflater's window is the client's: keep it small by default.
        client_bits = min(client_bits, DEFAULT_COMPRESS_WINDOW_BITS)
    agreed = DeflateParameters(
        client_max_window_bits=client_bits,
        server_max_window_bits=server_bits,
        client_no_context_takeover=client_no_context or config.client_no_context_takeover,
        server_no_context_takeover=server_no_context or config.server_no_context_takeover,
    )
    return agreed, agreed.response(state_client_window=client_supports_limit)


def client_accept(parameters: dict[str, str | None], config: DeflateConfig) -> DeflateParameters:
    """Check a server's response against our offer; return what was agreed.

    :raises ValueError: the response breaks RFC 7692 or ignores a
        requirement of the offer (the handshake must fail).
    """
    _check_known(parameters)
    server_no_context = _flag(_SERVER_NO_CONTEXT_TAKEOVER, parameters)
    client_no_context = _flag(_CLIENT_NO_CONTEXT_TAKEOVER, parameters)
    server_bits = MAX_WINDOW_BITS
    if _SERVER_MAX_WINDOW_BITS in parameters:
        server_bits = _window_bits(_SERVER_MAX_WINDOW_BITS, parameters[_SERVER_MAX_WINDOW_BITS])
    client_bits = MAX_WINDOW_BITS
    if _CLIENT_MAX_WINDOW_BITS in parameters:
        # We always offer client_max_window_bits, so the server may set it;
        # in a response it must have a value.
        client_bits = _window_bits(_CLIENT_MAX_WINDOW_BITS, parameters[_CLIENT_MAX_WINDOW_BITS])
    if config.server_no_context_takeover and not server_no_context:
        raise ValueError("the server ignored server_no_context_takeover")
    if config.server_max_window_bits is not None and server_bits > config.server_max_window_bits:
        raise ValueError(
            f"the server ignored server_max_window_bits={config.server_max_window_bits}"
        )
    if config.client_max_window_bits is not None:
        client_bits = min(client_bits, config.client_max_window_bits)
    return DeflateParameters(
        client_max_window_bits=client_bits,
        server_max_window_bits=server_bits,
        client_no_context_takeover=client_no_context or config.client_no_context_takeover,
        server_no_context_takeover=server_no_context,
    )
