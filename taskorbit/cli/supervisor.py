"""``taskorbit worker --processes N``: N independent worker processes, supervised.

Each child is ``taskorbit worker APP --processes 1 ...`` with its own threads,
ring and broker connections. The supervisor

- restarts a child that exits on its own, and says so on its log, backing off
  (1 s doubling to 30 s) while a child keeps dying within seconds of its start;
- forwards SIGTERM/SIGINT to every child and waits for each to drain, up to the
  shutdown timeout plus a margin, then SIGKILLs what is left;
- on a second signal (a second or more after the first), SIGKILLs every child
  and exits with status 1.

Children run in their own session, so a Ctrl-C on the terminal reaches only the
supervisor (which forwards it once), not every child twice. They ask the kernel
for SIGTERM should the supervisor die (Linux PR_SET_PDEATHSIG), so none is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger("taskorbit.cli.supervisor")

SUPERVISOR_PID_ENV = "TASKORBIT_SUPERVISOR_PID"
WORKER_INDEX_ENV = "TASKORBIT_WORKER_INDEX"
# A child that dies sooner than this after its start is "crash-looping".
QUICK_DEATH_S = 5.0
MAX_BACKOFF_S = 30.0
# A second signal this soon after the first is a duplicate, not an impatient user.
DUPLICATE_SIGNAL_S = 1.0
# Time a child gets beyond its own shutdown timeout to flush and exit.
DRAIN_MARGIN_S = 10.0


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Runs ``argv_for(i)`` for i in range(processes) and keeps them running."""

    def __init__(
        self,
        argv_for: Callable[[int], list[str]],
        processes: int,
        *,
        shutdown_timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._argv_for = argv_for
        self._env = dict(os.environ if env is None else env)
        self._shutdown_timeout = shutdown_timeout
        self.children = [Child(i) for i in range(processes)]
        self._stop = threading.Event()
        self._signals_seen = itertools.count()
        # None until the first signal's handler has noted its time; a signal that
        # interrupts that handler before then is a duplicate too.
        self._first_signal_at: float | None = None

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._spawn(child)
            while not self._stop.wait(0.2):
                self._check_children()
            return self._drain()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # next() on a count is one C call, so a signal arriving while this handler
        # runs still sees that it is the second (as in the single-process worker).
        if next(self._signals_seen) > 0:
            first = self._first_signal_at
            if first is None or time.monotonic() - first < DUPLICATE_SIGNAL_S:
                return  # the same SIGTERM delivered twice (`timeout`, a group kill)
            logger.error("second signal: killing every worker process now")
            self._kill_all()
            os._exit(1)
        self._first_signal_at = time.monotonic()
        logger.info(
            "received %s: stopping %d workers", signal.Signals(signum).name, len(self.children)
        )
        self._stop.set()

    def _spawn(self, child: Child) -> None:
        env = {
            **self._env,
            SUPERVISOR_PID_ENV: str(os.getpid()),
            WORKER_INDEX_ENV: str(child.index),
        }
        child.proc = subprocess.Popen(self._argv_for(child.index), env=env, start_new_session=True)
        child.started_at = time.monotonic()
        logger.info("worker %d started (pid %d)", child.index, child.proc.pid)

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.exit_codes.append(code)
            lived = now - child.started_at
            # Back off only while it keeps dying quickly; a long life resets it.
            child.backoff_s = (
                min(MAX_BACKOFF_S, max(1.0, child.backoff_s * 2)) if lived < QUICK_DEATH_S else 0.0
            )
            logger.warning(
                "worker %d (pid %d) died with %s after %.1f s; restarting in %.0f s",
                child.index,
                child.proc.pid,
                describe_exit(code),
                lived,
                child.backoff_s,
            )
            child.proc = None
            child.restart_at = now + child.backoff_s

    def _drain(self) -> int:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in live:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._shutdown_timeout + DRAIN_MARGIN_S
        worst = 0
        for child in self.children:
            if child.proc is None:
                continue
            try:
                code = child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d (pid %d) did not stop in time; killing it",
                    child.index,
                    child.proc.pid,
                )
                child.proc.kill()
                code = child.proc.wait()
            logger.info(
                "worker %d (pid %d) stopped with %s",
                child.index,
                child.proc.pid,
                describe_exit(code),
            )
            if code != 0 and worst == 0:
                worst = code if code > 0 else 1
        return worst

    def _kill_all(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()


def die_with_supervisor() -> None:
    """In a supervised child: get SIGTERM if the supervisor dies (Linux only)."""
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not expected:
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # The supervisor may have died before prctl ran; then our parent changed.
    if str(os.getppid()) != expected:
        os.kill(os.getpid(), signal.SIGTERM)
