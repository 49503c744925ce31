"""Counters of what a worker did, safe to bump from any thread."""

from __future__ import annotations

import threading

COUNTERS = (
    "received",
    "completed",
    "retried",
    "dead_lettered",
    "duplicates",
    "dropped",
    "deferred",
    "released",
    "ack_failures",
    "errors",
)


class Stats:
    """Monotonic counters; ``snapshot`` reads them all at one instant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)  # guarded by self._lock

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
