"""Tasks parked until woken all at once: a ``trio.lowlevel.ParkingLot``
reduced to what the inbox needs, and sized for one task.

Rules:
- Only ``park()``, ``unpark_all()`` (which says how many woke: none,
  one, several) and truth (anyone parked?). Tasks wake
  in the order they parked; a cancelled task leaves without a trace.
- Built for an idle connection, which keeps one of these with its
  application task parked in it for hours: the usual single waiter takes a
  slot, not a dictionary entry, and parking allocates only a bound method
  (a ParkingLot costs about 900 bytes more: its ordered dict, the entry, a
  closure per park and one more coroutine frame; ``park`` adds no frame of
  its own either). A second waiter at the
  same time (rare: two tasks receiving from one connection) goes to a dict.
"""

from __future__ import annotations

from collections.abc import Awaitable

from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule, wait_task_rescheduled


class Waiters:
    """Parked tasks (see the module rules)."""

    __slots__ = ("_first", "_others")

    def __init__(self) -> None:
        self._first: Task | None = None
        self._others: dict[Task, None] | None = None

    def __bool__(self) -> bool:
        return self._first is not None or bool(self._others)

    def park(self) -> Awaitable[object]:
        """Park the calling task until :meth:`unpark_all` (or cancellation):
        ``await waiters.park()``. Not a coroutine function, to save the
        parked task a frame: the task is registered by the call itself, so
        the result must be awaited at once (as the expression above does)."""
        task = current_task()
        if self._first is None and not self._others:
            self._first = task
            return wait_task_rescheduled(self._abort_first)  # noqa: ASYNC105 (see above)
        if self._others is None:
            self._others = {}
        others = self._others
        others[task] = None

        def abort(_: RaiseCancelT) -> Abort:
            del others[task]
            return Abort.SUCCEEDED

        return wait_task_rescheduled(abort)  # noqa: ASYNC105 (see above)

    def _abort_first(self, _: RaiseCancelT) -> Abort:
        self._first = None
        return Abort.SUCCEEDED

    def unpark_all(self) -> int:
        """Wake every parked task; returns how many woke (2 for several)."""
        woken = 0
        first = self._first
        if first is not None:
            self._first = None
            reschedule(first)
            woken = 1
        others = self._others
        if others:
            self._others = None
            for task in others:
                reschedule(task)
            return 2
        return woken
