"""Close codes and the :class:`CloseReason` value.

Rules:
- Pure values, no I/O; imports nothing from this package.
- Known codes are named after RFC 6455 section 7.4.1 and the IANA registry
  (the names wsproto uses, so they match trio-websocket 0.12.2); unknown codes
  are named by the range they fall in.
"""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason as _WsprotoCode

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
NO_STATUS_RCVD = 1005
ABNORMAL_CLOSURE = 1006
INVALID_FRAME_PAYLOAD_DATA = 1007
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011


#: The registered codes and their names (a dict lookup: a close reason is
#: made for every connection, and an enum lookup by value costs more).
_REGISTERED_NAMES = {member.value: member.name for member in _WsprotoCode}


def close_code_name(code: int) -> str:
    """The registered name of ``code``, else the name of its range."""
    name = _REGISTERED_NAMES.get(code)
    if name is not None:
        return name
    if 1000 <= code <= 2999:
        return "RFC_RESERVED"
    if 3000 <= code <= 3999:
        return "IANA_RESERVED"
    if 4000 <= code <= 4999:
        return "PRIVATE_RESERVED"
    return "INVALID_CODE"


class CloseReason:
    """Why a WebSocket connection closed: a close code and an optional text.

    :param code: the close code (see RFC 6455 section 7.4).
    :param reason: the text sent with the code, or ``None``.
    """

    __slots__ = ("_code", "_reason")

    def __init__(self, code: int, reason: str | None) -> None:
        self._code = code
        self._reason = reason

    @property
    def code(self) -> int:
        """The numeric close code."""
        return self._code

    @property
    def name(self) -> str:
        """The code's RFC name, or RFC_RESERVED / IANA_RESERVED /
        PRIVATE_RESERVED / INVALID_CODE for codes without one."""
        return close_code_name(self._code)

    @property
    def reason(self) -> str | None:
        """The close reason text, or ``None`` when none was given."""
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloseReason):
            return NotImplemented
        return (self._code, self._reason) == (other._code, other._reason)

    def __hash__(self) -> int:
        return hash((self._code, self._reason))

    def __reduce__(self) -> tuple[type[CloseReason], tuple[int, str | None]]:
        return (CloseReason, (self._code, self._reason))

    def __repr__(self) -> str:
        # The format of trio-websocket 0.12.2, which logs may be parsed for.
        return f"CloseReason<code={self._code}, name={self.name}, reason={self._reason}>"
