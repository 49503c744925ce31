"""Broker → ring: long-poll the transport for no more than the ring has room for.

A receive that fails is retried with a backoff from 0.2 s to 5 s, and the outage
is logged the way :class:`Outage` says: where the poller cannot receive from, why,
and when it tries again; once at the start, then at growing intervals, and once
when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskorbit.errors import RingClosed, TransportError
from taskorbit.hooks import HookSet
from taskorbit.message import Message
from taskorbit.transports.base import Transport
from taskorbit.worker.ring import Overflow, Ring
from taskorbit.worker.stats import Stats

logger = logging.getLogger("taskorbit.worker.poller")


class PollerThread(threading.Thread):
    """One of ``transport.pollers`` threads named ``taskorbit-poller-N``."""

    def __init__(
        self,
        index: int,
        transport: Transport,
        ring: Ring[Message],
        hooks: HookSet,
        stats: Stats,
        *,
        poll_timeout: float,
        track: Callable[[list[Message]], None],
        release: Callable[[list[Message]], None],
        drop: Callable[[Message, str], None],
    ) -> None:
        super().__init__(name=f"taskorbit-poller-{index}", daemon=True)
        self._transport = transport
        self._ring = ring
        self._hooks = hooks
        self._stats = stats
        self._poll_timeout = poll_timeout
        self._track = track  # opened in the in-flight registry; leases start
        self._release = release  # back to the broker at once (shutdown)
        self._drop = drop  # the overflow policy refused it
        self.stopping = threading.Event()
        self._batch_floor = max(1, min(transport.max_batch, ring.capacity // 4))

    def run(self) -> None:
        outage = Outage(_where(self._transport))
        while not self.stopping.is_set():
            try:
                self._poll_once()
                outage.ended()
            except TransportError as exc:
                pause = outage.failed(exc)
                self._stats.add("errors")
                self._hooks.fire("on_error", None, exc)
                self.stopping.wait(pause)
            except Exception as exc:
                logger.exception("poller failed; retrying in 1 s")
                self._stats.add("errors")
                self._hooks.fire("on_error", None, exc)
                self.stopping.wait(1.0)

    def _poll_once(self) -> None:
        free = self._ring.free
        if not self._transport.push:
            if free == 0:
                # A pull broker keeps what we do not take: wait for room instead.
                self._ring.wait_not_full(0.25)
                return
            if free < self._batch_floor and len(self._ring) >= self._batch_floor:
                # The workers have plenty queued: wait for room for a real batch
                # rather than paying a broker round trip for a few messages.
                self.stopping.wait(0.01)
                return
        want = max(1, min(free, self._transport.max_batch))
        messages = self._transport.receive(want, timeout=self._poll_timeout)
        if not messages:
            return
        self._stats.add("received", len(messages))
        # Opened in the in-flight registry (and leased) before anything can settle them.
        self._track(messages)
        if self._hooks.wants("on_receive"):
            for m in messages:
                self._hooks.fire("on_receive", m)
        self._enqueue(messages)

    def _enqueue(self, messages: list[Message]) -> None:
        pending = messages
        while pending:
            if self.stopping.is_set():
                self._release(pending)
                return
            try:
                left = self._ring.put_many(pending, timeout=0.25)
            except RingClosed:
                self._release(pending)
                return
            if self._ring.overflow is not Overflow.BLOCK:
                for m in left:
                    self._drop(m, f"ring full (overflow={self._ring.overflow.value})")
                return
            pending = left  # BLOCK: the wait timed out; check for shutdown, wait again


class Outage:
    """The log of one poller's failed receives: backoff and what to say when.

    The first failure is a warning with the endpoint (``Transport.describe``), the
    cause and the pause; while it lasts, the warning comes again after 10 s, 20 s,
    40 s ... (then every 5 min); failures in between are at debug level. The end is
    an info line with how long it took. The pause doubles from 0.2 s up to 5 s::

        cannot receive from SQS queue https://.../jobs (...); retrying in 0.2 s
        still cannot receive from SQS queue https://.../jobs after 10 s (...); retrying every 5.0 s
        receiving from SQS queue https://.../jobs again after 42.3 s
    """

    BASE_S: float = 0.1
    CAP_S: float = 5.0
    FIRST_REMINDER_S: float = 10.0
    MAX_REMINDER_S: float = 300.0

    def __init__(self, where: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.where = where
        self._clock = clock
        self.failures = 0
        self._since = 0.0
        self._next_warning = 0.0

    def failed(self, exc: BaseException) -> float:
        """Log this failure as its place in the outage says; return the pause."""
        now = self._clock()
        self.failures += 1
        pause = min(self.BASE_S * 2.0**self.failures, self.CAP_S)
        if self.failures == 1:
            self._since = now
            self._next_warning = now + self.FIRST_REMINDER_S
            logger.warning(
                "cannot receive from %s (%s); retrying in %.1f s", self.where, exc, pause
            )
        elif now >= self._next_warning:
            lasted = now - self._since
            self._next_warning = now + min(self.MAX_REMINDER_S, lasted)
            logger.warning(
                "still cannot receive from %s after %.0f s (%s); retrying every %.1f s",
                self.where,
                lasted,
                exc,
                pause,
            )
        else:
            logger.debug("cannot receive from %s (%s); retrying in %.1f s", self.where, exc, pause)
        return pause

    def ended(self) -> None:
        if self.failures:
            logger.info(
                "receiving from %s again after %.1f s", self.where, self._clock() - self._since
            )
            self.failures = 0


def _where(transport: Transport) -> str:
    try:
        return transport.describe()
    except Exception:  # a log line's detail is never worth a dead poller
        logger.exception("%s.describe() failed", type(transport).__name__)
        return transport.name
