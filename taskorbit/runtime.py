"""Owns the worker's threads: what starts in which order, and how it stops.

Threads (names as they appear in a stack dump):

- ``taskorbit-poller-N``   transport.receive → ring (N = transport.pollers)
- ``taskorbit-dispatcher`` ring → runners on the executor
- ``taskorbit-worker-K``   the fixed ThreadPoolExecutor; K < concurrency
- ``taskorbit-timer``      timer wheel: delayed retries and ETAs back into the ring
- ``taskorbit-acker``      batched acks
- ``taskorbit-lease``      lease extension (durable transports only)

Start order is consumers first: acker, lease keeper, timer, dispatcher, then the
pollers, so that nothing is received before there is someone to take it.
Stop order is the reverse with a drain (see :meth:`Runtime.stop`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from taskorbit.acker import Acker
from taskorbit.context import Context
from taskorbit.dispatcher import Dispatcher
from taskorbit.errors import RingClosed
from taskorbit.hooks import HookSet
from taskorbit.idempotency import ClaimState, IdempotencyStore
from taskorbit.lease import LeaseKeeper
from taskorbit.message import Message
from taskorbit.pipeline import process
from taskorbit.poller import PollerThread
from taskorbit.ring import Overflow, Ring
from taskorbit.settle import Settler
from taskorbit.stats import Stats
from taskorbit.task import Task
from taskorbit.timerwheel import TimerWheel
from taskorbit.transports.base import Transport

logger = logging.getLogger("taskorbit.runtime")

# Enum member lookups are slow on CPython 3.11; the hot path reads these.
_NEW = ClaimState.NEW
_IN_PROGRESS = ClaimState.IN_PROGRESS


class Runtime:
    """One running worker. Built by :meth:`Orbit.start`, used once."""

    def __init__(
        self,
        transport: Transport,
        tasks: Mapping[str, Task[Any]],
        hooks: HookSet,
        stats: Stats,
        *,
        concurrency: int,
        buffer_size: int,
        overflow: Overflow,
        store: IdempotencyStore | None,
        idempotency_attr: str,
        idempotency_ttl_s: float,
        claim_ttl_s: float,
        duplicate_delay_s: float,
        poll_timeout: float,
        local_delay_max: float,
        max_lease_s: float,
        ack_interval_s: float,
    ) -> None:
        self.transport = transport
        self._tasks = tasks
        self._hooks = hooks
        self._stats = stats
        self._duplicate_delay_s = duplicate_delay_s
        # Hooks are looked up once per worker start: the hot path asks a bool.
        self._on_dispatch = hooks.wants("on_dispatch")
        self._stopping = threading.Event()
        self._deadline: list[float | None] = [None]
        self.ring: Ring[Message] = Ring(buffer_size, overflow=overflow)
        self.lease = (
            LeaseKeeper(transport, hooks, max_lease_s=max_lease_s)
            if transport.needs_lease
            else None
        )
        self.acker = (
            Acker(transport, hooks, stats, on_settled=self._forget, flush_interval_s=ack_interval_s)
            if transport.acknowledges
            else None
        )
        self.timer: TimerWheel[Message] = TimerWheel(self._timers_due)
        self.dispatcher = Dispatcher(
            self.ring,
            concurrency=concurrency,
            run_one=self._run_one,
            defer=self._defer,
            store=store,
            idempotency_attr=idempotency_attr,
            claim_ttl_s=claim_ttl_s,
            ordered=transport.ordered,
        )
        self.settler = Settler(
            transport,
            acker=self.acker,
            lease=self.lease,
            timer=self.timer,
            hooks=hooks,
            stats=stats,
            store=store,
            idempotency_attr=idempotency_attr,
            done_ttl_s=idempotency_ttl_s,
            local_delay_max=local_delay_max,
            max_lease_s=max_lease_s,
            finished=self.dispatcher.finished,
        )
        self.pollers = [
            PollerThread(
                i,
                transport,
                self.ring,
                hooks,
                stats,
                poll_timeout=poll_timeout,
                track=self._track,
                release=self._release,
                drop=self._drop,
            )
            for i in range(max(1, transport.pollers))
        ]

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self.acker is not None:
            self.acker.start()
        if self.lease is not None:
            self.lease.start()
        self.timer.start()
        self.dispatcher.start()
        for poller in self.pollers:
            poller.start()

    def stop(self, timeout: float) -> bool:
        """Drain and stop; return True when every started handler finished in time.

        1. Stop receiving and stop starting: pollers are told to stop (each hands
           back what it holds after its current long poll) and the dispatcher
           halts at once.
        2. Admitted-but-unstarted messages, the ring and the timer wheel go back to
           the broker at once (delayed ones with the delay they still owe), so
           another worker can take them now.
        3. Let running handlers finish until the deadline; the lease keeper keeps
           their leases alive meanwhile.
        4. Flush acks, then stop the lease keeper: a message is either acked or
           visible again, never both and never neither.
        """
        deadline = time.monotonic() + timeout
        self._deadline[0] = deadline
        self._stopping.set()
        for poller in self.pollers:
            poller.stopping.set()
        # Halt the dispatcher before waiting for the pollers' last long poll, so
        # nothing more starts meanwhile and all of it goes back at once.
        unstarted = self.dispatcher.halt()
        for poller in self.pollers:
            poller.join(max(0.0, deadline - time.monotonic()))
        self.ring.close()
        unstarted.extend(self.ring.drain())
        self._release(unstarted)
        self._return_timers(self.timer.stop())
        finished = self.dispatcher.wait_idle(max(0.0, deadline - time.monotonic()))
        if not finished:
            logger.warning(
                "shutdown deadline passed with %d handlers still running; their messages "
                "return to the broker when their lease runs out",
                self.dispatcher.active_runners,
            )
        self.dispatcher.shutdown_executor()
        if self.acker is not None:
            self.acker.stop()
        if self.lease is not None:
            self.lease.stop()
        return finished

    # -- the work ------------------------------------------------------------------

    def _run_one(self, message: Message, claim: ClaimState | None) -> None:
        if claim is not None and claim is not _NEW:
            self.settler.duplicate(
                message, in_progress=claim is _IN_PROGRESS, retry_delay_s=self._duplicate_delay_s
            )
            return
        if self._on_dispatch:
            self._hooks.fire("on_dispatch", message)
        outcome = process(message, self._tasks, make_context=self._context)
        self.settler.settle(outcome, claimed=claim is _NEW)

    def _context(self, message: Message) -> Context:
        return Context(message, self._stopping, self._deadline)

    def _defer(self, message: Message, delay_s: float) -> None:
        self._stats.add("deferred")
        self.settler.delay(message, delay_s, next_attempt=False)

    def _timers_due(self, messages: list[Message]) -> None:
        # Called on the timer thread: never block it for long, never drop. What does
        # not fit into the ring now waits in the wheel a little longer.
        for m in messages:
            if self.settler.take_local(m)[1]:
                m.attempt += 1
        try:
            left = self.ring.put_many(messages, timeout=0.05, overflow=Overflow.BLOCK)
        except RingClosed:
            left = messages
        if left:
            retry_at = time.monotonic() + 0.05
            for m in left:
                try:
                    self.timer.schedule(retry_at, m)
                except Exception:
                    self._release([m])

    def _return_timers(self, messages: list[Message]) -> None:
        # Items still in the wheel at shutdown go back to the broker owing the rest
        # of their delay, so a backoff is not cut short by a restart.
        now = time.monotonic()
        for m in messages:
            due, _ = self.settler.take_local(m)
            self.settler.nack([m], max(0.0, due - now))

    # -- broker bookkeeping ----------------------------------------------------------

    def _track(self, messages: list[Message]) -> None:
        if self.lease is not None:
            self.lease.track(messages)

    def _forget(self, messages: list[Message]) -> None:
        if self.lease is not None:
            self.lease.forget(messages)

    def _release(self, messages: list[Message]) -> None:
        if messages:
            self._stats.add("released", len(messages))
            self.settler.nack(messages, 0.0)

    def _drop(self, message: Message, reason: str) -> None:
        self._stats.add("dropped")
        self._hooks.fire("on_drop", message, reason)
        # A durable broker keeps it: give it back instead of losing it.
        if self.transport.acknowledges:
            self.settler.nack([message], 0.0)

    def snapshot(self) -> dict[str, int]:
        stats = self._stats.snapshot()
        stats["ring_length"] = len(self.ring)
        stats["waiting"] = self.dispatcher.waiting
        stats["active_runners"] = self.dispatcher.active_runners
        stats["timers"] = len(self.timer)
        stats["held"] = len(self.lease) if self.lease is not None else 0
        return stats
