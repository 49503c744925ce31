"""examples/testing: its own tests pass, run by pytest in a subprocess the way a
reader runs them, and without waiting out the minute of countdown and backoff
each of them skips."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "testing"
PLUGIN = "taskorbit.testing.pytest_plugin"


def plugin_args() -> list[str]:
    """``-p`` for the plugin when no ``pytest11`` entry point loads it already: pytest
    refuses one plugin module registered under two names."""
    installed = any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", PLUGIN]


def test_the_testing_examples_tests_pass_in_a_subprocess(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin_args(), str(EXAMPLE)],
        cwd=tmp_path,  # whatever a plugin writes to the current directory lands here
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed" in result.stdout, result.stdout
    # A real worker would wait at least 60 s for one receipt's countdown alone.
    assert elapsed < 30, f"the example's tests took {elapsed:.1f} s"
