"""``CloseReason``: the close code, its name and the reason text."""

from __future__ import annotations

import copy
import pickle

import pytest

from trio_websocket import CloseReason

REGISTERED = [
    (1000, "NORMAL_CLOSURE"),
    (1001, "GOING_AWAY"),
    (1002, "PROTOCOL_ERROR"),
    (1003, "UNSUPPORTED_DATA"),
    (1005, "NO_STATUS_RCVD"),
    (1006, "ABNORMAL_CLOSURE"),
    (1007, "INVALID_FRAME_PAYLOAD_DATA"),
    (1008, "POLICY_VIOLATION"),
    (1009, "MESSAGE_TOO_BIG"),
    (1010, "MANDATORY_EXT"),
    (1011, "INTERNAL_ERROR"),
    (1012, "SERVICE_RESTART"),
    (1013, "TRY_AGAIN_LATER"),
    (1015, "TLS_HANDSHAKE_FAILED"),
]


@pytest.mark.parametrize(("code", "name"), REGISTERED)
def test_registered_code_has_its_rfc_name(code: int, name: str) -> None:
    reason = CloseReason(code, "why")
    assert reason.code == code
    assert reason.name == name
    assert reason.reason == "why"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1004, "RFC_RESERVED"),
        (1014, "RFC_RESERVED"),
        (1016, "RFC_RESERVED"),
        (2999, "RFC_RESERVED"),
        (3000, "IANA_RESERVED"),
        (3500, "IANA_RESERVED"),
        (3999, "IANA_RESERVED"),
        (4000, "PRIVATE_RESERVED"),
        (4321, "PRIVATE_RESERVED"),
        (4999, "PRIVATE_RESERVED"),
        (999, "INVALID_CODE"),
        (0, "INVALID_CODE"),
        (-1, "INVALID_CODE"),
        (5000, "INVALID_CODE"),
        (65535, "INVALID_CODE"),
    ],
)
def test_unregistered_code_is_named_by_its_range(code: int, name: str) -> None:
    assert CloseReason(code, None).name == name


def test_reason_may_be_none() -> None:
    reason = CloseReason(1000, None)
    assert reason.reason is None
    assert reason.name == "NORMAL_CLOSURE"


def test_empty_reason_is_kept_as_given() -> None:
    assert CloseReason(1000, "").reason == ""


def test_repr_shows_code_name_and_reason() -> None:
    text = repr(CloseReason(4001, "custom text"))
    assert "CloseReason" in text
    assert "4001" in text
    assert "PRIVATE_RESERVED" in text
    assert "custom text" in text


def test_repr_without_reason_shows_none() -> None:
    text = repr(CloseReason(1001, None))
    assert "1001" in text
    assert "GOING_AWAY" in text
    assert "None" in text


def test_equal_code_and_reason_are_equal_and_hash_alike() -> None:
    a = CloseReason(1000, "bye")
    b = CloseReason(1000, "bye")
    assert a == b
    assert not a != b  # noqa: SIM202 - checks __ne__ too
    assert hash(a) == hash(b)
    assert {a, b} == {a}
    assert CloseReason(1006, None) == CloseReason(1006, None)


@pytest.mark.parametrize(
    "other",
    [CloseReason(1001, "bye"), CloseReason(1000, "later"), CloseReason(1000, None)],
)
def test_different_code_or_reason_are_unequal(other: CloseReason) -> None:
    assert CloseReason(1000, "bye") != other


def test_not_equal_to_other_types() -> None:
    reason = CloseReason(1000, None)
    assert reason != 1000
    assert reason != (1000, None)
    assert reason != "NORMAL_CLOSURE"


def test_usable_as_dict_key() -> None:
    counts = {CloseReason(1000, None): 1}
    counts[CloseReason(1000, None)] += 1
    assert counts == {CloseReason(1000, None): 2}


@pytest.mark.parametrize("attribute", ["code", "name", "reason"])
def test_attributes_are_read_only(attribute: str) -> None:
    # A hashable value must not change under a dict or set.
    reason = CloseReason(1000, "bye")
    with pytest.raises(AttributeError):
        setattr(reason, attribute, 1001)
    assert (reason.code, reason.name, reason.reason) == (1000, "NORMAL_CLOSURE", "bye")


def test_copy_and_pickle_keep_code_name_and_reason() -> None:
    reason = CloseReason(4002, "later")
    for clone in [copy.copy(reason), copy.deepcopy(reason)] + [
        pickle.loads(pickle.dumps(reason, protocol=p))
        for p in range(2, pickle.HIGHEST_PROTOCOL + 1)
    ]:
        assert clone == reason
        assert (clone.code, clone.name, clone.reason) == (4002, "PRIVATE_RESERVED", "later")
