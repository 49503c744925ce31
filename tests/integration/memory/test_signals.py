"""SIGTERM drains: handlers already running finish, the rest is handed back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

WORKER = Path(__file__).with_name("sigterm_worker.py")
ROOT = Path(__file__).resolve().parents[3]


def start_worker() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def read_until(proc: subprocess.Popen[str], done: Callable[[list[str]], bool]) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    while not done(lines):
        line = proc.stdout.readline()
        assert line, f"worker exited early: {lines}"
        lines.append(line.strip())
    return lines


def test_sigterm_lets_running_handlers_finish_and_hands_back_the_rest() -> None:
    proc = start_worker()
    lines = read_until(proc, lambda lines: sum(x.startswith("start") for x in lines) == 4)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    lines += out.split("\n")
    started = {line.split()[1] for line in lines if line.startswith("start")}
    finished = {line.split()[1] for line in lines if line.startswith("finish")}
    assert proc.returncode == 0, lines
    assert started and started == finished, lines
    summary = [line for line in lines if line.startswith("stopped")]
    assert summary == [f"stopped ready={12 - len(finished)} in_flight=0"], lines


def test_a_second_signal_exits_at_once() -> None:
    proc = start_worker()
    read_until(proc, lambda lines: sum(x.startswith("start") for x in lines) == 4)
    proc.send_signal(signal.SIGTERM)
    # Python runs one handler for signals that arrive together: wait for the first.
    read_until(proc, lambda lines: any("draining" in x for x in lines))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 1
