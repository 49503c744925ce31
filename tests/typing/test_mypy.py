"""A type checker sees a task's payload type: ``@app.task`` on
``def send(msg: Welcome, ctx: Context)`` gives a ``Task[Welcome]``, so that mypy
flags ``send.delay(123)`` and passes ``send.delay(Welcome(...))``.

Runs mypy (strict, with the project's configuration) on ``sample_delay.py``.
pytest does not collect the samples (they are not ``test_*.py``), nothing imports
them, and the project's own mypy run checks only the ``taskorbit`` package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "tests/typing/sample_delay.py"

# The only errors mypy may report: a line of the sample (found by its text) -> error.
EXPECTED = {
    "send.delay(123)": 'Argument 1 to "delay" of "Task" has incompatible type "int"; '
    'expected "Welcome"  [arg-type]',
    'send_plain.delay({"email"': 'Argument 1 to "delay" of "Task" has incompatible type '
    '"dict[str, str]"; expected "Welcome"  [arg-type]',
}


def line_of(text: str) -> int:
    lines = (ROOT / SAMPLE).read_text().splitlines()
    [number] = [i for i, line in enumerate(lines, 1) if line.startswith(text)]
    return number


def test_mypy_flags_a_payload_of_the_wrong_type_and_passes_the_right_one(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "pyproject.toml",
            "--strict",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            "--no-error-summary",
            "--no-pretty",
            "--no-color-output",
            "--hide-error-context",
            SAMPLE,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    expected = sorted(
        (line_of(text), f"{SAMPLE}:{line_of(text)}: error: {error}")
        for text, error in EXPECTED.items()
    )
    assert result.stdout.splitlines() == [line for _, line in expected], (
        result.stdout + result.stderr
    )
    assert result.returncode == 1
