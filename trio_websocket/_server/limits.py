"""Size limits on an opening request's head (request line and headers).

Rules:
- Pure: no trio, no I/O. The server hands in the bytes received so far; a
  violation raises :exc:`RequestTooLarge` carrying the HTTP status to answer
  with: 414 for the request line, 431 for the headers.
- Checks run on partial heads too, so a client cannot make the server buffer
  more than the limits allow by never finishing a line.
- The whole head can never exceed ``MAX_HEAD_BYTES``: wsproto's HTTP parser
  (h11) buffers no more than that, so larger limits could not work.
"""

from __future__ import annotations

from dataclasses import dataclass

#: h11's receive buffer bound (its ``max_incomplete_event_size`` default),
#: which wsproto's handshake uses.
MAX_HEAD_BYTES = 16 * 1024


class RequestTooLarge(Exception):
    """A request head broke a limit; ``status_code`` is the answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def _check_limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= MAX_HEAD_BYTES:
        raise ValueError(f"{name} must be in 1..{MAX_HEAD_BYTES}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Limits on the opening request a server accepts; a request over them
    is answered (414 or 431) and never reaches the handler.

    :param max_request_line: the most bytes in the request line
        (``GET /path HTTP/1.1``); a longer one gets ``414 URI Too Long``.
    :param max_headers: the most header lines; more get ``431 Request
        Header Fields Too Large``.
    :param max_header_size: the most bytes in one header line (name and
        value); a longer one gets 431.

    Whatever the limits, the whole head is at most 16 KiB (431 beyond).
    """

    max_request_line: int = 8192
    max_headers: int = 128
    max_header_size: int = 8192

    def __post_init__(self) -> None:
        _check_limit("max_request_line", self.max_request_line)
        _check_limit("max_header_size", self.max_header_size)
        _check_limit("max_headers", self.max_headers)

    @property
    def _shortest_line_limit(self) -> int:
        """Below this many bytes, no line of a head can be too long."""
        return min(self.max_request_line, self.max_header_size)

    def head_length(self, received: bytes | bytearray) -> int | None:
        """The length of the complete head at the start of ``received``
        (its final blank line included), or None while it is incomplete.

        :raises RequestTooLarge: if what was received breaks a limit.
        """
        return HeadScanner(self).feed(received)


class HeadScanner:
    """Checks a request head against :class:`RequestLimits` as it arrives.

    Feed it the whole buffer received so far, each time; it looks only at
    the bytes it has not seen, so a client sending one byte at a time costs
    linear time, not quadratic.
    """

    __slots__ = ("_limits", "_line_start", "_lines", "_search_from")

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits
        self._lines = 0  # complete lines so far, the request line included
        self._line_start = 0  # where the current (incomplete) line starts
        self._search_from = 0  # where to look for the next CRLF

    def _check_line(self, index: int, length: int) -> None:
        limits = self._limits
        if index == 0:
            if length > limits.max_request_line:
                raise RequestTooLarge(414, f"request line exceeds {limits.max_request_line} bytes")
        elif index > limits.max_headers and length > 0:  # (empty: maybe the end)
            raise RequestTooLarge(431, f"more than {limits.max_headers} headers")
        elif length > limits.max_header_size:
            raise RequestTooLarge(431, f"a header line exceeds {limits.max_header_size} bytes")

    def feed(self, received: bytes | bytearray) -> int | None:
        """The head's length once ``received`` holds all of it, else None.

        :raises RequestTooLarge: if what was received breaks a limit.
        """
        if self._search_from == 0:
            # The usual case, a whole head in the first read, short enough
            # that no line can be too long: only the count needs checking.
            end = received.find(b"\r\n\r\n")
            if (
                0 < end <= self._limits._shortest_line_limit
                and end + 4 <= MAX_HEAD_BYTES  # (line limits may be as long)
                and received.count(b"\r\n", 0, end) <= self._limits.max_headers
            ):
                return end + 4
        while True:
            end = received.find(b"\r\n", self._search_from)
            if end < 0:
                break
            length = end - self._line_start
            if length == 0 and self._lines > 0:  # the blank line that ends the head
                if end + 2 > MAX_HEAD_BYTES:
                    raise RequestTooLarge(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
                return end + 2
            self._check_line(self._lines, length)
            self._lines += 1
            self._line_start = self._search_from = end + 2
        # A CR at the very end may start the next CRLF.
        size = len(received)
        self._search_from = max(self._line_start, size - 1)
        pending_cr = received.endswith(b"\r")
        self._check_line(self._lines, size - self._line_start - pending_cr)
        if len(received) > MAX_HEAD_BYTES:
            raise RequestTooLarge(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
        return None


DEFAULT_REQUEST_LIMITS = RequestLimits()
