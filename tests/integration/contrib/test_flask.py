"""The Flask example: a request to a view publishes, a worker thread handles it
inside the Flask application context."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
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


# -- the command line in the example's directory, as a newcomer runs it ----------


def taskorbit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskorbit", *args],
        cwd=EXAMPLE.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_taskorbit_worker_given_the_flask_application_runs_its_extensions_orbit() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskorbit", "worker", "app:app", "--status", "off"],
        cwd=EXAMPLE.parent,
        env={**os.environ, "TASKORBIT_TRANSPORT": "memory://"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "worker started" in line or "Traceback" in line:
                break
        assert "worker started: transport=memory topics=welcome.send concurrency=4" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_taskorbit_publish_given_the_flask_application_refuses_memory_and_warns_on_a_typo(
    redis_url: str,
) -> None:
    in_memory = taskorbit("publish", "app:app", "welcome.send", '{"email": "a@b.c"}')
    assert in_memory.returncode == 2
    assert in_memory.stderr.startswith("taskorbit: app:app uses the in-memory transport")

    typo = taskorbit(
        "publish", "app:app", "welcome.sned", '{"email": "a@b.c"}', TASKORBIT_TRANSPORT=redis_url
    )
    assert typo.returncode == 0, typo.stderr
    assert typo.stderr == (
        "taskorbit: topic 'welcome.sned' has no handler in app:app; did you mean "
        "'welcome.send'? Publishing it anyway, in case another service handles it.\n"
    )
    assert typo.stdout.strip()

    refused = taskorbit(
        "publish", "app:tasks", "welcome.send", '{"mail": "a@b.c"}', TASKORBIT_TRANSPORT=redis_url
    )
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line.startswith("taskorbit: payload for 'welcome.send'") and "email" in line
