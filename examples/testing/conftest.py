"""Fixtures for test_tasks.py.

The taskorbit pytest plugin (loaded by itself once taskorbit is installed) gives
every test a ``taskorbit_run`` fixture; it runs the app this fixture returns.
"""

from __future__ import annotations

import pytest
import tasks

import taskorbit as orbit


@pytest.fixture
def taskorbit_app() -> orbit.Orbit:
    return tasks.app


@pytest.fixture(autouse=True)
def mailer(monkeypatch: pytest.MonkeyPatch) -> tasks.Mailer:
    """A fresh stand-in mail server for each test."""
    fresh = tasks.Mailer()
    monkeypatch.setattr(tasks, "mailer", fresh)
    return fresh
