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
_END_OF_HEAD = b"\r\n\r\n"


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
    max_headers: int = 100
    max_header_size: int = 8192

    def __post_init__(self) -> None:
        _check_limit("max_request_line", self.max_request_line)
        _check_limit("max_header_size", self.max_header_size)
        _check_limit("max_headers", self.max_headers)

    @property
    def _shortest_line_limit(self) -> int:
        return min(self.max_request_line, self.max_header_size)

    def head_length(self, received: bytes | bytearray) -> int | None:
        """The length of the complete head at the start of ``received``
        (its final blank line included), or None while it is incomplete.

        :raises RequestTooLarge: if what was received breaks a limit.
        """
        end = received.find(_END_OF_HEAD)
        head_end = len(received) if end < 0 else end
        if head_end + 4 > MAX_HEAD_BYTES:
            raise RequestTooLarge(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
        if head_end <= self._shortest_line_limit:
            # No line can be too long: only the count needs checking.
            if received.count(b"\r\n", 0, head_end) > self.max_headers:
                raise RequestTooLarge(431, f"more than {self.max_headers} headers")
            return None if end < 0 else end + 4
        lines = bytes(received[:head_end]).split(b"\r\n")
        if len(lines[0]) > self.max_request_line:
            raise RequestTooLarge(414, f"request line exceeds {self.max_request_line} bytes")
        if len(lines) - 1 > self.max_headers:
            raise RequestTooLarge(431, f"more than {self.max_headers} headers")
        for line in lines[1:]:
            if len(line) > self.max_header_size:
                raise RequestTooLarge(431, f"a header line exceeds {self.max_header_size} bytes")
        return None if end < 0 else end + 4


DEFAULT_REQUEST_LIMITS = RequestLimits()
