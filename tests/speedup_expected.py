"""Whether the compiled speedup (``trio_websocket._wire._speedups``) must be in use.

Either answer is a correct install: the speedup is optional, built by
``pip install`` when a C compiler is there, left out without one or with
``TRIO_WEBSOCKET_NO_EXTENSIONS=1``. So the tests that check the build skip
when it is absent, unless ``TRIO_WEBSOCKET_EXPECT_SPEEDUP`` says what to
expect: ``1`` (CI's compiled runs, where a build that failed quietly must
fail them) or ``0`` (CI's pure-Python run, where it must be absent).
"""

from __future__ import annotations

import os

import pytest

VARIABLE = "TRIO_WEBSOCKET_EXPECT_SPEEDUP"

NOT_BUILT = (
    "the compiled speedup is not built (installed without a C compiler, or with "
    "TRIO_WEBSOCKET_NO_EXTENSIONS=1): pure Python masking is in use, which is correct. "
    f"Set {VARIABLE}=1 to make its absence a failure"
)


def speedup_expected() -> bool | None:
    """What :data:`VARIABLE` asks for: True (built), False (absent) or None
    (either is fine)."""
    value = os.environ.get(VARIABLE, "").strip()
    if value not in {"", "0", "1"}:
        raise ValueError(f"{VARIABLE} must be 1, 0 or unset, not {value!r}")
    return None if value == "" else value == "1"


def speedup_should_be_in_use(compiled: bool) -> bool:
    """Whether the calling test must find the compiled speedup in use, given
    whether it was found (``compiled``); skips the test when it is absent
    and nothing asks for it."""
    expected = speedup_expected()
    if expected is None:
        if not compiled:
            pytest.skip(NOT_BUILT)
        return True
    return expected
