"""Broker → ring: long-poll the transport for no more than the ring has room for."""

from __future__ import annotations

import logging
import threading
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
        failures = 0
        while not self.stopping.is_set():
            try:
                self._poll_once()
                failures = 0
            except TransportError as exc:
                failures += 1
                pause = min(0.1 * 2**failures, 5.0)
                logger.warning("receive failed (%s); retrying in %.1f s", exc, pause)
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
