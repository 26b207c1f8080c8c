"""Turning the ExceptionGroups of our internal nurseries into one exception.

Rules:
- Public calls that own a nursery raise one exception, never a group (trio's
  nurseries group every error under ``strict_exception_groups=True``).
- ``KeyboardInterrupt`` and ``SystemExit`` (Ctrl-C, ``sys.exit``) leave
  as themselves even from calls that otherwise let a group out (a server's
  handler errors): a program stopping must not print an ExceptionGroup.
- The exception raised keeps its own ``__cause__``, ``__context__`` and
  traceback; a real error wins over the ``Cancelled`` that unwinding it
  caused in sibling tasks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import trio

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def main_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception that stands for ``group``: its first error that is
    not a cancellation, else its first cancellation."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return leaves[0]


def interruption(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first ``KeyboardInterrupt`` or ``SystemExit`` in ``group``, if
    any: a request to stop the program, which must leave every public call
    as itself (never in a group), whatever else went wrong meanwhile."""
    for exc in _leaves(group):
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
    return None


def only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is a ``kind``, or a group (nested or not) of nothing
    else: what a nursery makes of it when tasks inside let it escape."""
    if isinstance(exc, BaseExceptionGroup):
        return all(isinstance(leaf, kind) for leaf in _leaves(exc))
    return isinstance(exc, kind)


def reraise_as_is(exc: BaseException) -> None:
    """Raise ``exc`` from inside an ``except`` block without letting Python
    overwrite its ``__context__`` with the exception being handled."""
    context, suppress = exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__context__, exc.__suppress_context__ = context, suppress


@contextmanager
def collapse_exception_groups() -> Iterator[None]:
    """Let any group leaving the block out as its :func:`main_exception`."""
    try:
        yield
    except BaseExceptionGroup as group:
        reraise_as_is(main_exception(group))


def combine(user: BaseException | None, internal: BaseException | None) -> BaseException | None:
    """The one exception to raise when the user's block raised ``user`` and
    our own clean-up raised ``internal``.

    The user's exception wins when ours is only the cancellation it caused,
    or when the user's is not an ``Exception`` (KeyboardInterrupt, a
    cancellation). Otherwise ours is raised with the user's as its context,
    as Python itself would chain them.
    """
    if internal is None:
        return user
    if user is None or user is internal:
        return internal
    if isinstance(internal, trio.Cancelled) or not isinstance(user, Exception):
        return user
    internal.__context__ = user
    internal.__suppress_context__ = False
    return internal
