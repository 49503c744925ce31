"""The Flask example: a request to a view publishes, a worker thread handles it
inside the Flask application context."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.waiting import wait_for

EXAMPLE = Path(__file__).parents[3] / "examples" / "flask" / "app.py"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("TASKORBIT_TRANSPORT", "memory://")
    spec = importlib.util.spec_from_file_location("flask_example_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_request_publishes_and_the_worker_handles_it_in_the_app_context(
    example: ModuleType,
) -> None:
    orbit = example.tasks.orbit
    orbit.start()
    try:
        response = example.app.test_client().post("/signup", json={"email": "ada@example.com"})
        assert response.status_code == 202
        assert response.get_json()["queued"]
        wait_for(lambda: example.sent, 10.0, "the worker to handle the signup")
    finally:
        orbit.stop(5)
    # SITE_NAME comes from current_app.config: only there with the app context pushed.
    assert example.sent == ["Example Shop welcomes ada@example.com"]


def test_settings_come_from_app_config(example: ModuleType) -> None:
    assert example.tasks.orbit.concurrency == 4
    assert example.tasks.orbit.transport.name == "memory"
    assert example.app.extensions["taskorbit"] is example.tasks
