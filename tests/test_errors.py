"""The public exceptions: their hierarchy, and that they copy, pickle and
print with their data intact."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)

HEADERS = [(b"content-type", b"text/plain"), (b"x-why", b"no entry")]

# Each factory builds a fresh instance; ``fields`` are the attributes that
# must survive a copy or a pickle round-trip.
EXAMPLES: list[tuple[str, Callable[[], BaseException], tuple[str, ...]]] = [
    ("handshake", lambda: HandshakeError("could not connect"), ()),
    ("handshake-no-args", lambda: HandshakeError(), ()),
    ("connect-timeout", lambda: ConnectionTimeout("too slow"), ()),
    ("disconnect-timeout", lambda: DisconnectionTimeout("closing took too long"), ()),
    (
        "rejected-with-body",
        lambda: ConnectionRejected(403, list(HEADERS), b"go away"),
        ("status_code", "headers", "body"),
    ),
    (
        "rejected-no-body",
        lambda: ConnectionRejected(500, [], None),
        ("status_code", "headers", "body"),
    ),
    ("closed", lambda: ConnectionClosed(CloseReason(1001, "server restart")), ("reason",)),
    ("closed-no-reason-text", lambda: ConnectionClosed(CloseReason(1006, None)), ("reason",)),
    ("closed-none", lambda: ConnectionClosed(None), ("reason",)),
]

IDS = [name for name, _, _ in EXAMPLES]
CASES = [(factory, fields) for _, factory, fields in EXAMPLES]
NO_CLOSE_REASON_IDS = [name for name in IDS if not name.startswith("closed")] + ["closed-none"]
NO_CLOSE_REASON = [CASES[IDS.index(name)] for name in NO_CLOSE_REASON_IDS]


def assert_same(original: BaseException, clone: BaseException, fields: tuple[str, ...]) -> None:
    assert clone is not original
    assert type(clone) is type(original)
    assert clone.args == original.args
    assert str(clone) == str(original)
    assert repr(clone) == repr(original)
    for field in fields:
        assert getattr(clone, field) == getattr(original, field), field


@pytest.mark.parametrize(("factory", "fields"), CASES, ids=IDS)
def test_copy_keeps_type_and_attributes(
    factory: Callable[[], BaseException], fields: tuple[str, ...]
) -> None:
    original = factory()
    assert_same(original, copy.copy(original), fields)
    assert_same(original, copy.deepcopy(original), fields)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(("factory", "fields"), CASES, ids=IDS)
def test_pickle_round_trip_keeps_type_and_attributes(
    factory: Callable[[], BaseException], fields: tuple[str, ...], protocol: int
) -> None:
    original = factory()
    assert_same(original, pickle.loads(pickle.dumps(original, protocol=protocol)), fields)


@pytest.mark.parametrize("protocol", [0, 1])
def test_closed_pickles_with_legacy_protocols(protocol: int) -> None:
    original = ConnectionClosed(CloseReason(1001, "server restart"))
    assert_same(original, pickle.loads(pickle.dumps(original, protocol=protocol)), ("reason",))


@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize(("factory", "fields"), NO_CLOSE_REASON, ids=NO_CLOSE_REASON_IDS)
def test_errors_without_close_reason_pickle_with_legacy_protocols(
    factory: Callable[[], BaseException], fields: tuple[str, ...], protocol: int
) -> None:
    original = factory()
    assert_same(original, pickle.loads(pickle.dumps(original, protocol=protocol)), fields)


def test_rejected_attributes_are_the_constructor_arguments() -> None:
    exc = ConnectionRejected(404, list(HEADERS), b"not here")
    assert exc.status_code == 404
    assert exc.headers == HEADERS
    assert exc.body == b"not here"
    clone = pickle.loads(pickle.dumps(exc))
    assert (clone.status_code, clone.headers, clone.body) == (404, HEADERS, b"not here")


def test_closed_reason_survives_pickle_as_an_equal_close_reason() -> None:
    clone = pickle.loads(pickle.dumps(ConnectionClosed(CloseReason(4000, "app said no"))))
    assert isinstance(clone.reason, CloseReason)
    assert clone.reason.code == 4000
    assert clone.reason.name == "PRIVATE_RESERVED"
    assert clone.reason.reason == "app said no"


def test_pickles_name_the_public_module() -> None:
    # Pickles made with one version must load with the next even if the
    # private modules are reorganised.
    for _, factory, _fields in EXAMPLES:
        data = pickle.dumps(factory())
        assert b"trio_websocket._" not in data


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (HandshakeError, Exception),
        (ConnectionTimeout, HandshakeError),
        (DisconnectionTimeout, HandshakeError),
        (ConnectionRejected, HandshakeError),
        (ConnectionClosed, Exception),
    ],
)
def test_documented_base_class(cls: type[BaseException], base: type[BaseException]) -> None:
    assert issubclass(cls, base)


@pytest.mark.parametrize(
    "cls", [ConnectionClosed, ConnectionTimeout, DisconnectionTimeout, ConnectionRejected]
)
def test_distinct_failures_are_not_confused(cls: type[BaseException]) -> None:
    others = {ConnectionClosed, ConnectionTimeout, DisconnectionTimeout, ConnectionRejected} - {cls}
    for other in others:
        assert not issubclass(cls, other)


def test_connection_closed_is_not_a_handshake_error() -> None:
    # ``except HandshakeError`` around a connect must not swallow a closed
    # connection met later on.
    assert not issubclass(ConnectionClosed, HandshakeError)


def test_except_handshake_error_catches_every_handshake_failure() -> None:
    for exc in (
        ConnectionTimeout("t"),
        DisconnectionTimeout("d"),
        ConnectionRejected(401, [], None),
    ):
        with pytest.raises(HandshakeError):
            raise exc


def test_rejected_repr_and_str_show_the_status() -> None:
    exc = ConnectionRejected(418, list(HEADERS), b"teapot")
    assert "ConnectionRejected" in repr(exc)
    assert "418" in repr(exc)
    assert "418" in str(exc)


def test_closed_repr_and_str_show_the_close_reason() -> None:
    exc = ConnectionClosed(CloseReason(1001, "server restart"))
    for text in (repr(exc), str(exc)):
        assert "1001" in text
        assert "GOING_AWAY" in text
        assert "server restart" in text
    assert "ConnectionClosed" in repr(exc)


def test_closed_without_reason_still_prints() -> None:
    exc = ConnectionClosed(None)
    assert "ConnectionClosed" in repr(exc)
    assert "None" in repr(exc)


@pytest.mark.parametrize("cls", [HandshakeError, ConnectionTimeout, DisconnectionTimeout])
def test_handshake_errors_show_their_message(cls: type[HandshakeError]) -> None:
    exc = cls("no WebSocket connection to example.com:443 within 5 s")
    assert str(exc) == "no WebSocket connection to example.com:443 within 5 s"
    assert cls.__name__ in repr(exc)
    assert "example.com:443" in repr(exc)
