"""Waiting in tests for what another thread, process or server does.

A test that sleeps a fixed time and then asserts is slow where the machine is fast
and flaky where it is loaded. ``wait_for`` polls the condition instead, returns as
soon as it holds, and fails the test, naming what it waited for, at the deadline.

A fixed sleep stays only where letting time pass is the point of the test (showing
that something does *not* happen within a time, or that a delay is honoured); each
such sleep carries a comment saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, *, poll_s: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy, and return that value.

    Fails the test with "timed out after ``timeout`` s waiting for ``what``" if it
    has not within ``timeout`` seconds. An exception (a failed assert) raised by
    ``condition`` is not caught: it fails the test at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)
