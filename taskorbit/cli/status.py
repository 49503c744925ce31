"""The worker's live status: one line redrawn on a terminal, a log line otherwise.

::

    received 1,204 | done 1,180 | retried 12 | dead 3 | in flight 9 | ring 2% | 412.5 msg/s

The numbers come from :meth:`Orbit.stats`, read by this module's own thread, so
the worker's threads do no extra work for it. msg/s counts messages settled
(done + retried + dead-lettered) over the last interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

logger = logging.getLogger("taskorbit.cli.status")

SETTLED = ("completed", "retried", "dead_lettered")


def status_line(stats: dict[str, int], *, buffer_size: int, rate: float) -> str:
    """Format one status line from a stats snapshot.

    >>> status_line({"received": 5, "completed": 4, "retried": 1, "dead_lettered": 0,
    ...              "active_runners": 1, "ring_length": 2}, buffer_size=8, rate=2.0)
    'received 5 | done 4 | retried 1 | dead 0 | in flight 1 | ring 25% | 2.0 msg/s'
    """
    fill = 100 * stats.get("ring_length", 0) / max(1, buffer_size)
    return (
        f"received {stats.get('received', 0):,} | done {stats.get('completed', 0):,} | "
        f"retried {stats.get('retried', 0):,} | dead {stats.get('dead_lettered', 0):,} | "
        f"in flight {stats.get('active_runners', 0):,} | ring {fill:.0f}% | {rate:.1f} msg/s"
    )


class StatusThread(threading.Thread):
    """Every ``interval`` seconds, reads the stats and shows them.

    ``tty=True`` redraws one line in place on ``stream``; otherwise each report is
    an INFO record on the ``taskorbit.cli.status`` logger, which suits log collectors.
    """

    def __init__(
        self,
        read_stats: Callable[[], dict[str, int]],
        *,
        buffer_size: int,
        stream: TextIO,
        tty: bool,
        interval: float,
    ) -> None:
        super().__init__(name="taskorbit-status", daemon=True)
        self._read = read_stats
        self._buffer_size = buffer_size
        self._stream = stream
        self._tty = tty
        self._interval = max(0.05, interval)
        self._stopped = threading.Event()

    def run(self) -> None:
        last_settled, last_time = 0, time.monotonic()
        while not self._stopped.wait(self._interval):
            try:
                stats = self._read()
                now = time.monotonic()
                settled = sum(stats.get(name, 0) for name in SETTLED)
                rate = (settled - last_settled) / max(1e-9, now - last_time)
                last_settled, last_time = settled, now
                self._show(status_line(stats, buffer_size=self._buffer_size, rate=rate))
            except Exception:
                # A status line is never worth stopping a worker for.
                logger.exception("status line failed; trying again next interval")

    def _show(self, line: str) -> None:
        if self._tty:
            # \r plus "erase to end of line" redraws in place without scrolling.
            self._stream.write("\r\x1b[K" + line)
            self._stream.flush()
        else:
            logger.info("%s", line)

    def stop(self) -> None:
        self._stopped.set()
        self.join(2.0)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
