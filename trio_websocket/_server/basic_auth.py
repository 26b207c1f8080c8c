"""HTTP Basic authentication (RFC 7617) for the server's opening handshake.

:class:`BasicAuth` is a ``process_request`` hook: it lets a request with
valid credentials go on to the upgrade and answers any other with
``401 Unauthorized`` and a ``WWW-Authenticate`` challenge.
:func:`basic_auth_credentials` reads the credentials back in a handler.

Rules:
- Pure: no trio, no I/O (a checker may be async; it is awaited by the
  server's task calling the hook).
- Credentials are UTF-8 (the ``charset="UTF-8"`` of RFC 7617 is
  advertised); a header that is not valid Basic credentials counts as none.
- Passwords from a mapping are compared in constant time.
"""

from __future__ import annotations

import binascii
import hmac
import inspect
from base64 import b64decode
from collections.abc import Awaitable, Callable, Mapping

from .._core.errors import Headers
from .http import HTTPRequest, HTTPResponse

CredentialsChecker = Callable[[str, str], "bool | Awaitable[bool]"]


def basic_auth_credentials(headers: Headers) -> tuple[str, str] | None:
    """The ``(username, password)`` of a request's ``Authorization: Basic``
    header, or None when there is no valid one.

    :param headers: request headers, e.g. :attr:`WebSocketRequest.headers`.
    """
    values = [value for name, value in headers if name == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return username, password


class BasicAuth:
    """A ``process_request`` hook that demands HTTP Basic credentials::

        await nursery.start(partial(
            serve_websocket, handler, "127.0.0.1", 8000, None,
            process_request=BasicAuth({"alice": "secret"}),
        ))

    :param credentials: a mapping of user names to passwords, or a function
        ``check(username, password)`` returning (or awaiting to) a bool.
    :param realm: the protection space named in the challenge.
    """

    __slots__ = ("_challenge", "_check", "_passwords")

    def __init__(
        self, credentials: Mapping[str, str] | CredentialsChecker, *, realm: str = "trio_websocket"
    ) -> None:
        if not isinstance(realm, str):
            raise TypeError("realm must be a str")
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must be a str without quotes or backslashes")
        self._passwords: dict[str, bytes] | None = None
        self._check: CredentialsChecker | None = None
        if isinstance(credentials, Mapping):
            self._passwords = {
                str(user): str(password).encode("utf-8") for user, password in credentials.items()
            }
        elif callable(credentials):
            self._check = credentials
        else:
            raise TypeError("credentials must be a mapping or a function")
        self._challenge = HTTPResponse(
            401,
            [("www-authenticate", f'Basic realm="{realm}", charset="UTF-8"')],
            "401 Unauthorized\n",
        )

    async def __call__(self, request: HTTPRequest) -> HTTPResponse | None:
        """Let the request go on when its credentials are valid, else
        answer it with the 401 challenge."""
        credentials = basic_auth_credentials(request.headers)
        if credentials is not None and await self._valid(*credentials):
            return None
        return self._challenge

    async def _valid(self, username: str, password: str) -> bool:
        if self._passwords is not None:
            expected = self._passwords.get(username)
            # Compare even for an unknown user, so timing does not tell.
            given = password.encode("utf-8")
            matches = hmac.compare_digest(given, expected if expected is not None else given + b"x")
            return expected is not None and matches
        assert self._check is not None
        result = self._check(username, password)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)
