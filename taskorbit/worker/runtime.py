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

Every message a poller receives is opened in :class:`~taskorbit.worker.inflight.InFlight`
and closed by exactly one settlement in :class:`~taskorbit.worker.settle.Settler`. No
per-message failure may end a thread: a runner that meets an exception outside
the pipeline (a bug, a hook, a retry policy) settles the message anyway
(:meth:`Runtime._rescue`), and the dispatcher dead-letters a message it cannot
even admit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from taskorbit.context import Context
from taskorbit.errors import RingClosed
from taskorbit.hooks import HookSet
from taskorbit.idempotency import ClaimState, IdempotencyStore
from taskorbit.message import Message
from taskorbit.task import Task
from taskorbit.transports.base import Transport
from taskorbit.worker.acker import Acker
from taskorbit.worker.dispatcher import Dispatcher
from taskorbit.worker.inflight import InFlight
from taskorbit.worker.lease import LeaseKeeper
from taskorbit.worker.pipeline import process
from taskorbit.worker.poller import PollerThread
from taskorbit.worker.ring import Overflow, Ring
from taskorbit.worker.settle import RETRY_LATER_S, Settler
from taskorbit.worker.stats import Stats
from taskorbit.worker.timerwheel import TimerWheel

logger = logging.getLogger("taskorbit.worker.runtime")

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
        self.inflight = InFlight()
        self.ring: Ring[Message] = Ring(buffer_size, overflow=overflow)
        self.lease = (
            LeaseKeeper(transport, hooks, stats, max_lease_s=max_lease_s)
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
            hand_back=self._release,
            reject=self._reject,
            unsettled=self._unsettled,
            inflight=self.inflight,
            store=store,
            idempotency_attr=idempotency_attr,
            claim_ttl_s=claim_ttl_s,
            ordered=transport.ordered,
            owns=transport.owns,
        )
        self.settler = Settler(
            transport,
            inflight=self.inflight,
            acker=self.acker,
            lease=self.lease,
            timer=self.timer,
            hooks=hooks,
            stats=stats,
            store=store,
            done_ttl_s=idempotency_ttl_s,
            local_delay_max=local_delay_max,
            max_lease_s=max_lease_s,
            release_order=self.dispatcher.release_order,
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
                drop=self.settler.drop,
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
           halts at once (a runner admitting a batch meanwhile hands it back).
        2. Admitted-but-unstarted messages, the ring and the timer wheel go back to
           the broker at once (delayed ones with the delay they still owe), so
           another worker can take them now. None of them uses up an attempt.
        3. Let running handlers finish until the deadline; the lease keeper keeps
           their leases alive meanwhile.
        4. Flush acks, then stop the lease keeper: a message is either acked or
           visible again, never both and never neither. A handler that finishes
           after the deadline still settles (the acker sends its ack directly).
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
        self.settler.return_local(self.timer.stop())
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
        try:
            if claim is not None and claim is not _NEW:
                self.settler.duplicate(
                    message,
                    in_progress=claim is _IN_PROGRESS,
                    retry_delay_s=self._duplicate_delay_s,
                )
                return
            if self._on_dispatch:
                self._hooks.fire("on_dispatch", message)
            outcome = process(message, self._tasks, make_context=self._context)
            self.settler.settle(outcome)
        except BaseException as exc:
            self._rescue(message, exc)

    def _rescue(self, message: Message, exc: BaseException) -> None:
        """Settle a message whose run failed outside the pipeline's own handling."""
        logger.error(
            "unexpected failure while running %s (%s): %s: %s",
            message.id,
            message.topic,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        self.settler.error(message, exc)
        if self._unsettled(message):
            # The handler may have run: count it, so the attempt limit still holds.
            message.attempt += 1
            self.settler.nack([message], RETRY_LATER_S)

    def _unsettled(self, message: Message) -> bool:
        """Held by the worker, and not waiting in the timer wheel."""
        return self.inflight.holds(message) and not self.settler.is_local(message)

    def _context(self, message: Message) -> Context:
        return Context(message, self._stopping, self._deadline)

    def _defer(self, message: Message, delay_s: float) -> None:
        self._stats.add("deferred")
        self.settler.delay(message, delay_s, next_attempt=False)

    def _reject(self, message: Message, reason: str) -> None:
        self.settler.dead_letter(message, f"cannot admit the message: {reason}")

    def _timers_due(self, messages: list[Message]) -> None:
        # Called on the timer thread: never block it for long, never drop. The
        # local holds are forgotten before the put (once in the ring, a message may
        # run and be held again at once) and restored for what did not fit, which
        # waits in the wheel a little longer; only what went in gains its attempt.
        holds = [self.settler.take_local(m) for m in messages]
        for m, hold in zip(messages, holds, strict=True):
            if hold is not None and hold[1]:
                m.attempt += 1
        try:
            left = self.ring.put_many(messages, timeout=0.05, overflow=Overflow.BLOCK)
        except RingClosed:
            left = messages
        if not left:
            return
        waiting = {id(m) for m in left}
        retry_at = time.monotonic() + 0.05
        for m, hold in zip(messages, holds, strict=True):
            if id(m) not in waiting:
                continue
            if hold is not None:
                if hold[1]:
                    m.attempt -= 1
                self.settler.restore_local(m, hold)
            try:
                self.timer.schedule(retry_at, m)
            except Exception:  # the wheel is stopping: the broker takes it instead
                self.settler.return_local([m])

    # -- broker bookkeeping ----------------------------------------------------------

    def _track(self, messages: list[Message]) -> None:
        self.inflight.open(messages)
        if self.lease is not None:
            self.lease.track(messages)

    def _forget(self, messages: list[Message]) -> None:
        if self.lease is not None:
            self.lease.forget(messages)

    def _release(self, messages: list[Message]) -> None:
        """Hand messages that never started back at once; no attempt is used."""
        if messages:
            self._stats.add("released", len(messages))
            self.settler.nack(messages, 0.0)

    def snapshot(self) -> dict[str, int]:
        stats = self._stats.snapshot()
        stats["ring_length"] = len(self.ring)
        stats["waiting"] = self.dispatcher.waiting
        stats["active_runners"] = self.dispatcher.active_runners
        stats["timers"] = len(self.timer)
        stats["held"] = len(self.lease) if self.lease is not None else 0
        stats["in_flight"] = len(self.inflight)
        stats["claims_held"] = self.inflight.claims
        stats["ordering_keys_held"] = self.dispatcher.keys_held
        return stats
