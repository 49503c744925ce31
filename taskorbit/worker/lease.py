"""Keeps every message the worker holds invisible to other consumers.

A message received from a durable broker is leased for ``transport.lease_s``. While
it waits in the ring, sits in the timer wheel or runs in a handler, the lease keeper
(thread ``taskorbit-lease``) extends it about a third of a lease before it runs out,
in batches, until it is settled or has been held for ``max_lease_s``. Without this,
a handler longer than the visibility timeout would run twice (the fault users of
Celery's and Dramatiq's SQS support report most).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from taskorbit.errors import TransportError
from taskorbit.hooks import HookSet
from taskorbit.message import Message
from taskorbit.transports.base import Transport
from taskorbit.worker.stats import Stats

logger = logging.getLogger("taskorbit.worker.lease")


class _Lease:
    __slots__ = ("expires", "message", "received")

    def __init__(self, message: Message, expires: float, received: float) -> None:
        self.message = message
        self.expires = expires
        self.received = received


class LeaseKeeper:
    def __init__(
        self, transport: Transport, hooks: HookSet, stats: Stats, *, max_lease_s: float
    ) -> None:
        self._transport = transport
        self._hooks = hooks
        self._stats = stats
        self._lease_s = transport.lease_s
        self._max_lease_s = max_lease_s
        self._lock = threading.Lock()
        self._held: dict[int, _Lease] = {}  # by id(message); guarded by self._lock
        # Wake a few times per lease so no lease is within a third of its end unseen.
        self._period = max(0.05, min(self._lease_s / 6, 5.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taskorbit-lease", daemon=True)

    def __len__(self) -> int:
        return len(self._held)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def track(self, messages: Iterable[Message]) -> None:
        now = time.monotonic()
        with self._lock:
            for m in messages:
                received = m.received_at or now
                self._held[id(m)] = _Lease(m, received + self._lease_s, received)

    def forget(self, messages: Iterable[Message]) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(id(m), None)

    def extend_due(self, now: float) -> None:
        """Extend every lease that runs out within a third of a lease from ``now``,
        plus those that would fall due before the next wake-up: taking them a little
        early fills the broker's batches (SQS takes 10 per call) instead of sending a
        few messages each period."""
        margin = self._lease_s / 3 + self._period
        due: list[Message] = []
        with self._lock:
            for lease in self._held.values():
                if lease.expires - now <= margin and now - lease.received < self._max_lease_s:
                    due.append(lease.message)
        if not due:
            return
        try:
            self._transport.extend(due, self._lease_s)
        except TransportError as exc:
            logger.warning("extending %d leases failed: %s", len(due), exc)
            self._stats.add("errors")
            self._hooks.fire("on_error", None, exc)
            return
        expires = time.monotonic() + self._lease_s
        with self._lock:
            for m in due:
                held = self._held.get(id(m))
                if held is not None:
                    held.expires = expires

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.extend_due(time.monotonic())
            except Exception:
                logger.exception("lease keeper failed; continuing")
