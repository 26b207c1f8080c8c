"""Unit tests of ``trio_websocket._core.pings``: pings in flight and the pongs
that answer them."""

from __future__ import annotations

import pytest

from trio_websocket._core.pings import PingTracker, PingWaiter


def _woken(waiter: PingWaiter) -> bool:
    return waiter.event.is_set()


def test_new_payload_is_four_bytes() -> None:
    payload = PingTracker().new_payload()
    assert isinstance(payload, bytes)
    assert len(payload) == 4


def test_new_payloads_are_never_already_in_flight() -> None:
    tracker = PingTracker()
    in_flight = set()
    for _ in range(300):
        payload = tracker.new_payload()
        assert payload not in in_flight
        tracker.add(payload)  # would raise ValueError for a duplicate
        in_flight.add(payload)
    assert len(tracker) == 300


def test_adding_a_payload_already_in_flight_is_value_error() -> None:
    tracker = PingTracker()
    tracker.add(b"abc")
    with pytest.raises(ValueError):
        tracker.add(b"abc")
    assert len(tracker) == 1


def test_a_payload_can_be_reused_once_answered() -> None:
    tracker = PingTracker()
    tracker.add(b"abc")
    tracker.pong_received(b"abc")
    waiter = tracker.add(b"abc")
    assert not _woken(waiter)


def test_pong_wakes_its_ping_as_answered() -> None:
    tracker = PingTracker()
    waiter = tracker.add(b"p")
    assert not _woken(waiter)
    tracker.pong_received(b"p")
    assert _woken(waiter)
    assert waiter.answered
    assert len(tracker) == 0


def test_pong_wakes_earlier_pings_but_not_later_ones() -> None:
    tracker = PingTracker()
    first = tracker.add(b"1")
    second = tracker.add(b"2")
    third = tracker.add(b"3")
    fourth = tracker.add(b"4")
    tracker.pong_received(b"3")
    assert _woken(first) and first.answered
    assert _woken(second) and second.answered
    assert _woken(third) and third.answered
    assert not _woken(fourth)
    assert len(tracker) == 1
    tracker.pong_received(b"4")
    assert _woken(fourth) and fourth.answered


def test_unsolicited_pong_is_ignored() -> None:
    tracker = PingTracker()
    first = tracker.add(b"1")
    second = tracker.add(b"2")
    tracker.pong_received(b"unknown")
    tracker.pong_received(b"")
    assert not _woken(first)
    assert not _woken(second)
    assert len(tracker) == 2


def test_a_second_pong_for_an_answered_ping_is_ignored() -> None:
    tracker = PingTracker()
    tracker.add(b"1")
    tracker.pong_received(b"1")
    later = tracker.add(b"2")
    tracker.pong_received(b"1")
    assert not _woken(later)


def test_discarded_ping_is_forgotten() -> None:
    tracker = PingTracker()
    first = tracker.add(b"1")
    second = tracker.add(b"2")
    third = tracker.add(b"3")
    tracker.discard(b"2", second)
    assert len(tracker) == 2
    # A pong for the discarded payload is now unsolicited.
    tracker.pong_received(b"2")
    assert not _woken(first)
    assert not _woken(third)
    tracker.pong_received(b"3")
    assert _woken(first) and _woken(third)
    assert not _woken(second)


def test_discard_ignores_a_waiter_that_is_not_the_one_in_flight() -> None:
    tracker = PingTracker()
    old = tracker.add(b"p")
    tracker.pong_received(b"p")
    current = tracker.add(b"p")
    tracker.discard(b"p", old)  # the old caller gives up late
    assert len(tracker) == 1
    tracker.pong_received(b"p")
    assert _woken(current) and current.answered


def test_close_wakes_every_unanswered_ping() -> None:
    tracker = PingTracker()
    waiters = [tracker.add(bytes([i])) for i in range(5)]
    tracker.close()
    for waiter in waiters:
        assert _woken(waiter)
        assert not waiter.answered
    assert len(tracker) == 0


def test_close_does_not_change_answered_pings() -> None:
    tracker = PingTracker()
    answered = tracker.add(b"1")
    pending = tracker.add(b"2")
    tracker.pong_received(b"1")
    tracker.close()
    assert answered.answered
    assert _woken(pending) and not pending.answered


def test_ping_added_after_close_is_woken_at_once_unanswered() -> None:
    tracker = PingTracker()
    tracker.close()
    waiter = tracker.add(b"late")
    assert _woken(waiter)
    assert not waiter.answered
    assert len(tracker) == 0
    # A pong arriving afterwards changes nothing.
    tracker.pong_received(b"late")
    assert not waiter.answered


def test_a_user_ping_may_join_a_shared_ping_in_flight() -> None:
    tracker = PingTracker()
    keepalive = tracker.add(b"k", shared=True)
    user = tracker.add(b"k")
    assert user is keepalive
    with pytest.raises(ValueError):
        tracker.add(b"k")  # a second user ping with a payload in flight
    with pytest.raises(ValueError):
        tracker.add(b"k", shared=True)  # the keepalive never doubles up


def test_a_caller_giving_up_on_a_shared_ping_leaves_the_other_waiting() -> None:
    tracker = PingTracker()
    keepalive = tracker.add(b"k", shared=True)
    tracker.add(b"k")
    tracker.discard(b"k", keepalive)  # the user's ping was cancelled
    assert len(tracker) == 1
    tracker.pong_received(b"k")
    assert _woken(keepalive)
    assert keepalive.answered


def test_latency_is_measured_from_the_ping_the_pong_names() -> None:
    tracker = PingTracker()
    assert tracker.latency is None
    tracker.add(b"1", sent_at=10.0)
    tracker.add(b"2", sent_at=11.0)
    tracker.pong_received(b"2", now=11.25)
    assert tracker.latency == 0.25
    tracker.pong_received(b"unsolicited", now=99.0)
    assert tracker.latency == 0.25
