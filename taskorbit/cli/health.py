"""A liveness file for Kubernetes (or any supervisor that can check a file's age).

While the worker consumes, the file's mtime is refreshed every ``interval``
seconds. It goes stale when the worker is alive but stuck: the dispatcher thread
has died, the worker stopped, or messages sit in the ring while no handler has
finished one since the last check. A probe such as::

    livenessProbe:
      exec:
        command: ["sh", "-c", "test $(( $(date +%s) - $(stat -c %Y /tmp/taskorbit-alive) )) -lt 60"]

then restarts the pod. Pick the threshold longer than your slowest handler: a
full ring behind handlers that all run longer than it looks the same as a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("taskorbit.cli.health")

PROGRESS = ("completed", "retried", "dead_lettered", "duplicates", "released")
DISPATCHER_THREAD = "taskorbit-dispatcher"


def is_consuming(previous: dict[str, int] | None, current: dict[str, int]) -> bool:
    """Whether the worker made progress between two stats snapshots.

    An idle worker (nothing waiting in the ring or for a free handler) counts as
    consuming: it is waiting for the broker, not stuck.
    """
    backlog = current.get("ring_length", 0) + current.get("waiting", 0)
    if backlog == 0 or previous is None:
        return True
    return any(current.get(k, 0) != previous.get(k, 0) for k in PROGRESS)


def dispatcher_alive() -> bool:
    return any(t.name == DISPATCHER_THREAD and t.is_alive() for t in threading.enumerate())


class HealthFileThread(threading.Thread):
    """Touches ``path`` every ``interval`` seconds while the worker consumes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        read_stats: Callable[[], dict[str, int]],
        *,
        running: Callable[[], bool],
        interval: float = 5.0,
    ) -> None:
        super().__init__(name="taskorbit-health", daemon=True)
        self.path = Path(path)
        self._read = read_stats
        self._running = running
        self._interval = max(0.05, interval)
        self._stopped = threading.Event()

    def run(self) -> None:
        previous: dict[str, int] | None = None
        try:
            self.touch()
        except OSError:
            logger.exception("cannot write the liveness file %s; trying again", self.path)
        while not self._stopped.wait(self._interval):
            try:
                current = self._read()
                healthy = self._running() and dispatcher_alive() and is_consuming(previous, current)
                previous = current
                if healthy:
                    self.touch()
                else:
                    logger.warning("worker is not consuming; leaving %s stale", self.path)
            except Exception:
                logger.exception("health check failed; trying again next interval")

    def touch(self) -> None:
        """Replace the file with a fresh one holding our pid.

        The file often lives in a shared directory such as /tmp, where another
        local user can plant a symlink at any name they can predict. So the new
        file gets an unpredictable name from mkstemp (created with O_EXCL, which
        never follows a link) and is renamed over ``path``; rename replaces a
        symlink at ``path`` itself rather than writing through it. A probe never
        sees half a file.
        """
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o644)  # as open() makes it; mkstemp's is 0600
                out.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def stop(self) -> None:
        self._stopped.set()
        self.join(2.0)
        # A stopped worker is not alive: remove the file rather than let it age.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
