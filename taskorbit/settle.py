"""Outcome → broker: ack (batched), retry (timer wheel or broker delay), dead letter.

Every path ends with the message either acked, back at the broker, in the DLQ or
held in the timer wheel under a lease: nothing is dropped on the floor. A broker
call that fails leaves the message un-acked, so the broker redelivers it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskorbit.acker import Acker
from taskorbit.errors import TimerWheelStopped
from taskorbit.hooks import HookSet
from taskorbit.idempotency import IdempotencyStore
from taskorbit.lease import LeaseKeeper
from taskorbit.message import Message
from taskorbit.pipeline import ACK, RETRY, Outcome
from taskorbit.stats import Stats
from taskorbit.timerwheel import TimerWheel
from taskorbit.transports.base import Transport

logger = logging.getLogger("taskorbit.settle")


class Settler:
    def __init__(
        self,
        transport: Transport,
        *,
        acker: Acker | None,
        lease: LeaseKeeper | None,
        timer: TimerWheel[Message],
        hooks: HookSet,
        stats: Stats,
        store: IdempotencyStore | None,
        idempotency_attr: str,
        done_ttl_s: float,
        local_delay_max: float,
        max_lease_s: float,
        finished: Callable[[Message], None],
    ) -> None:
        self._transport = transport
        self._acker = acker
        self._lease = lease
        self._timer = timer
        self._hooks = hooks
        self._stats = stats
        self._store = store
        self._attr = idempotency_attr
        self._done_ttl_s = done_ttl_s
        self._local_delay_max = local_delay_max
        self._max_lease_s = max_lease_s
        self._finished = finished  # releases the message's ordering key
        self._ordered = transport.ordered
        # Hooks are looked up once per worker start: the hot path asks a bool.
        self._on_complete = hooks.wants("on_complete")
        self._local_lock = threading.Lock()
        # id(message) -> (due, counts as a new attempt) for messages in the timer
        # wheel; guarded by self._local_lock
        self._local: dict[int, tuple[float, bool]] = {}

    def settle(self, outcome: Outcome, *, claimed: bool) -> None:
        message = outcome.message
        verdict = outcome.verdict
        if claimed:
            self._settle_claim(message, done=verdict is ACK)
        if verdict is ACK:
            self._stats.add("completed")
            if self._on_complete:
                self._hooks.fire("on_complete", message, outcome.result, outcome.duration_s)
            self.ack(message)
        elif verdict is RETRY:
            self._stats.add("retried")
            if outcome.error is not None:
                self._hooks.fire("on_error", message, outcome.error)
            self._hooks.fire("on_retry", message, outcome.delay, outcome.reason)
            self.delay(message, outcome.delay, next_attempt=True)
        else:
            if outcome.error is not None:
                self._hooks.fire("on_error", message, outcome.error)
            self.dead_letter(message, outcome.reason)

    def ack(self, message: Message) -> None:
        if self._acker is not None:
            self._acker.add(message)
        else:
            self.forget([message])
        if self._ordered:
            self._finished(message)

    def forget(self, messages: list[Message]) -> None:
        """The broker no longer expects anything of these messages."""
        if self._lease is not None:
            self._lease.forget(messages)

    def delay(self, message: Message, delay_s: float, *, next_attempt: bool) -> None:
        """Run ``message`` again in ``delay_s`` seconds: held locally under a lease
        when that is short and the lease can cover it, else handed to the broker."""
        if self._hold_locally(message, delay_s):
            due = time.monotonic() + delay_s
            with self._local_lock:
                self._local[id(message)] = (due, next_attempt)
            try:
                self._timer.schedule(due, message)
                return
            except TimerWheelStopped:
                self.take_local(message)
        self.nack([message], delay_s)

    def take_local(self, message: Message) -> tuple[float, bool]:
        """Forget a message the timer wheel gave back: (its due time, whether it
        counts as a new attempt). The attempt grows only when the message really
        runs again; one handed back to the broker is counted by the broker."""
        with self._local_lock:
            return self._local.pop(id(message), (time.monotonic(), False))

    def _hold_locally(self, message: Message, delay_s: float) -> bool:
        if not self._transport.acknowledges:
            return True  # nothing to hand back to: a broadcast message lives here only
        if delay_s > self._local_delay_max:
            return False
        if self._transport.needs_lease and message.received_at:
            held = time.monotonic() - message.received_at
            return held + delay_s < self._max_lease_s
        return True

    def nack(self, messages: list[Message], delay_s: float) -> None:
        if not messages:
            return
        if not self._transport.acknowledges:
            for m in messages:
                self._hooks.fire("on_drop", m, "shutdown: broadcast messages cannot be returned")
            self._stats.add("dropped", len(messages))
            return
        try:
            self._transport.nack(messages, delay=delay_s)
        except Exception as exc:
            # Not lost: still un-acked at the broker, which redelivers after the lease.
            logger.warning("returning %d messages to the broker failed: %s", len(messages), exc)
            self._hooks.fire("on_error", messages[0], exc)
        self.forget(messages)
        for m in messages:
            self._finished(m)

    def dead_letter(self, message: Message, reason: str) -> None:
        self._stats.add("dead_lettered")
        self._hooks.fire("on_dead_letter", message, reason)
        try:
            self._transport.dead_letter(message, reason)
        except Exception as exc:
            logger.error("dead-lettering %s failed (%s); retrying it later", message.id, exc)
            self._hooks.fire("on_error", message, exc)
            self.nack([message], 5.0)
            return
        self.forget([message])
        self._finished(message)

    def duplicate(self, message: Message, *, in_progress: bool, retry_delay_s: float) -> None:
        """A message whose idempotency key was already claimed."""
        self._stats.add("duplicates")
        self._hooks.fire("on_duplicate", message)
        if in_progress:
            # Its twin may still fail: acking now could lose the work. Look again later.
            self.delay(message, retry_delay_s, next_attempt=False)
        else:
            self.ack(message)

    def _settle_claim(self, message: Message, *, done: bool) -> None:
        key = message.attributes.get(self._attr)
        if not key or self._store is None:
            return
        try:
            if done:
                self._store.complete(key, self._done_ttl_s)
            else:
                self._store.release(key)
        except Exception as exc:
            # The claim expires by its TTL; a later duplicate then runs again.
            logger.warning("idempotency store update for %r failed: %s", key, exc)
            self._hooks.fire("on_error", message, exc)
