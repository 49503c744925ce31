"""Private servers for the test session: each binds 127.0.0.1 on a free port, logs
to a file, and is stopped by its own pid. Never the shared services on default ports.

When a server cannot be started: in CI (CI=true) the run fails with the command that
would install it; locally the test is skipped with that command in the reason. The
same holds for anything else a test needs from the machine (Google's Pub/Sub emulator
rather than pstest, a sanitizer runtime): call ``skip_unless_ci`` instead of
``pytest.skip``, so that a CI run never passes with a test silently left out.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

PR_SET_PDEATHSIG = 1
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A port nobody listens on now: bind to port 0, read it, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip locally; in CI fail with the same reason, since CI must run every test.

    The reason should say what would let the test run (a package, a setting).
    """
    if IN_CI:
        pytest.fail(
            f"{reason} (CI must run this test, so it fails instead of skipping)", pytrace=False
        )
    pytest.skip(reason)


def unavailable(what: str, install: str) -> NoReturn:
    """Fail in CI, skip locally, always naming the command that fixes it."""
    skip_unless_ci(f"{what} is not available; install it with: {install}")


def wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready within {timeout} s\n{tail}")


def _die_with_parent() -> None:
    # A test run killed by a timeout must not leave its servers behind: the kernel
    # sends SIGTERM to the server when the thread that started it dies (servers are
    # started from fixtures on the main thread).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group with its output going to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server (and its children) by its own process group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
