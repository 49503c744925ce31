"""Outcome → broker: ack (batched), retry (timer wheel or broker delay), dead letter.

Every message the worker received leaves through exactly one of three doors here:
:meth:`Settler.ack`, :meth:`Settler.nack` (a hand-back, with or without a delay)
and :meth:`Settler.dead_letter`. Each door first closes the message in the
:class:`~taskorbit.worker.inflight.InFlight` registry (a second close is refused, so
nothing is settled twice), then completes or releases its idempotency claim,
frees its ordering key, and only then tells the broker: a broker that redelivers
at once finds the message claimable and its key free. A retry held in the timer
wheel is not a settlement: the message stays open, keeps its ordering key (so
the messages of its key wait behind it) and gives up its claim until it runs again.

A broker call that fails leaves the message un-acked at the broker, which
redelivers it after its lease: late, never lost.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from taskorbit.errors import TimerWheelStopped
from taskorbit.hooks import HookSet
from taskorbit.idempotency import IdempotencyStore
from taskorbit.message import Message
from taskorbit.transports.base import Transport
from taskorbit.worker.acker import Acker
from taskorbit.worker.inflight import InFlight
from taskorbit.worker.lease import LeaseKeeper
from taskorbit.worker.pipeline import ACK, RETRY, Outcome
from taskorbit.worker.stats import Stats
from taskorbit.worker.timerwheel import TimerWheel

logger = logging.getLogger("taskorbit.worker.settle")

#: A failed dead-letter or an unexpected failure hands the message back this much
#: later, so that a broken DLQ or a bug costs one redelivery per interval, not a spin.
RETRY_LATER_S = 5.0
#: Marking a key done is retried this often, this long apart, before the ack goes
#: out anyway: a done mark that is lost lets a later duplicate run again.
_COMPLETE_PAUSES_S = (0.05, 0.25, 1.0)

# (due on time.monotonic(), whether running it again counts as a new attempt)
LocalHold = tuple[float, bool]


class Settler:
    def __init__(
        self,
        transport: Transport,
        *,
        inflight: InFlight,
        acker: Acker | None,
        lease: LeaseKeeper | None,
        timer: TimerWheel[Message],
        hooks: HookSet,
        stats: Stats,
        store: IdempotencyStore | None,
        done_ttl_s: float,
        local_delay_max: float,
        max_lease_s: float,
        release_order: Callable[..., list[Message]],
    ) -> None:
        self._transport = transport
        self._inflight = inflight
        self._acker = acker
        self._lease = lease
        self._timer = timer
        self._hooks = hooks
        self._stats = stats
        self._store = store
        self._done_ttl_s = done_ttl_s
        self._local_delay_max = local_delay_max
        self._max_lease_s = max_lease_s
        self._release_order = release_order  # the dispatcher frees an ordering key
        self._ordered = transport.ordered
        # Hooks are looked up once per worker start: the hot path asks a bool.
        self._on_complete = hooks.wants("on_complete")
        self._local_lock = threading.Lock()
        # id(message) -> LocalHold for messages waiting in the timer wheel; guarded
        # by self._local_lock
        self._local: dict[int, LocalHold] = {}

    # -- what a handler run decided ------------------------------------------------

    def settle(self, outcome: Outcome) -> None:
        message = outcome.message
        verdict = outcome.verdict
        if verdict is ACK:
            self._stats.add("completed")
            if self._on_complete:
                self._hooks.fire("on_complete", message, outcome.result, outcome.duration_s)
            self.ack(message)
        elif verdict is RETRY:
            self._stats.add("retried")
            if outcome.error is not None:
                self.error(message, outcome.error)
            self._hooks.fire("on_retry", message, outcome.delay, outcome.reason)
            self.delay(message, outcome.delay, next_attempt=True)
        else:
            if outcome.error is not None:
                self.error(message, outcome.error)
            self.dead_letter(message, outcome.reason)

    def duplicate(self, message: Message, *, in_progress: bool, retry_delay_s: float) -> None:
        """A message whose idempotency key was already claimed."""
        self._stats.add("duplicates")
        self._hooks.fire("on_duplicate", message)
        if in_progress:
            # Its twin may still fail: acking now could lose the work. Look again later,
            # from the timer wheel whenever the lease can cover it: a broker hand-back
            # counts a delivery on SQS FIFO and ordered Pub/Sub, and a duplicate that
            # waits long enough for its twin must not be dead-lettered by the broker.
            self.delay(message, retry_delay_s, next_attempt=False, prefer_local=True)
        else:
            self.ack(message)

    def error(self, message: Message | None, exc: BaseException) -> None:
        """Count and report a failure (a handler's, or a broker call's)."""
        self._stats.add("errors")
        self._hooks.fire("on_error", message, exc)

    # -- the three doors -------------------------------------------------------------

    def ack(self, message: Message) -> None:
        if not self._close(message, done=True):
            return
        if self._acker is not None:
            self._acker.add(message)
        else:
            self.forget([message])
        if self._ordered:
            self._release_order(message, to_broker=False)

    def nack(self, messages: list[Message], delay_s: float) -> None:
        """Hand ``messages`` back to the broker, each carrying ``message.attempt``."""
        closed = [m for m in messages if self._close(m, done=False)]
        if closed:
            self._to_broker(closed, delay_s)

    def dead_letter(self, message: Message, reason: str) -> None:
        if not self._close(message, done=False):
            return
        self._stats.add("dead_lettered")
        self._hooks.fire("on_dead_letter", message, reason)
        try:
            self._transport.dead_letter(message, reason)
        except Exception as exc:
            logger.error(
                "dead-lettering %s failed (%s); handing it back to try again in %.0f s",
                message.id,
                exc,
                RETRY_LATER_S,
            )
            self.error(message, exc)
            # Counted as a run: whatever made it a dead letter may happen again, and
            # the attempt limit must still end it.
            message.attempt += 1
            self._to_broker([message], RETRY_LATER_S)
            return
        self.forget([message])
        if self._ordered:
            self._release_order(message, to_broker=False)

    def drop(self, message: Message, reason: str) -> None:
        """The ring's overflow policy refused ``message``."""
        self._stats.add("dropped")
        self._hooks.fire("on_drop", message, reason)
        if self._transport.acknowledges:
            # A broker that keeps it gets it back instead of losing it.
            self.nack([message], 0.0)
        elif self._close(message, done=False):
            self.forget([message])

    # -- retries ---------------------------------------------------------------------

    def delay(
        self, message: Message, delay_s: float, *, next_attempt: bool, prefer_local: bool = False
    ) -> None:
        """Run ``message`` again in ``delay_s`` seconds: held locally under a lease
        when that is short (``local_delay_max``, or any length with ``prefer_local``)
        and the lease can cover it, else handed to the broker."""
        limit = self._max_lease_s if prefer_local else self._local_delay_max
        if self._hold_locally(message, delay_s, limit):
            due = time.monotonic() + delay_s
            self._settle_claim(message, done=False)  # claimed again when it runs again
            with self._local_lock:
                self._local[id(message)] = (due, next_attempt)
            try:
                self._timer.schedule(due, message)
                return
            except (TimerWheelStopped, ValueError, OverflowError):
                self.take_local(message)
        if next_attempt:
            message.attempt += 1
        self.nack([message], delay_s)

    def take_local(self, message: Message) -> LocalHold | None:
        """Forget the local hold of a message the timer wheel gave back."""
        with self._local_lock:
            return self._local.pop(id(message), None)

    def restore_local(self, message: Message, hold: LocalHold) -> None:
        with self._local_lock:
            self._local[id(message)] = hold

    def is_local(self, message: Message) -> bool:
        return id(message) in self._local

    def return_local(self, messages: list[Message]) -> None:
        """Hand timer-wheel items back to the broker owing the rest of their delay
        (shutdown), so a backoff is not cut short by a restart."""
        now = time.monotonic()
        by_delay: dict[float, list[Message]] = {}
        for m in messages:
            hold = self.take_local(m)
            due, counts = hold if hold is not None else (now, False)
            if counts:
                m.attempt += 1
            # One broker call per tenth of a second of remaining delay, never earlier.
            by_delay.setdefault(math.ceil(max(0.0, due - now) * 10) / 10, []).append(m)
        for delay_s, group in by_delay.items():
            self.nack(group, delay_s)

    def _hold_locally(self, message: Message, delay_s: float, limit: float) -> bool:
        if not self._transport.acknowledges:
            return True  # nothing to hand back to: a broadcast message lives here only
        if delay_s > limit:
            return False
        if self._transport.needs_lease and message.received_at:
            held = time.monotonic() - message.received_at
            return held + delay_s < self._max_lease_s
        return True

    # -- bookkeeping -----------------------------------------------------------------

    def forget(self, messages: list[Message]) -> None:
        """The broker no longer expects anything of these messages."""
        if self._lease is not None:
            self._lease.forget(messages)

    def _close(self, message: Message, *, done: bool) -> bool:
        if not self._inflight.close(message):
            logger.error(
                "message %s (%s) was settled twice; ignoring the second settlement",
                message.id,
                message.topic,
            )
            return False
        self._settle_claim(message, done=done)
        return True

    def _to_broker(self, messages: list[Message], delay_s: float) -> None:
        followers: list[Message] = []
        if self._ordered:
            for m in messages:
                followers += self._release_order(m, to_broker=True)
        if not self._transport.acknowledges:
            for m in messages:
                self._hooks.fire("on_drop", m, "a broadcast message cannot be handed back")
            self._stats.add("dropped", len(messages))
        else:
            try:
                self._transport.nack(messages, delay=delay_s)
            except Exception as exc:
                # Not lost: still un-acked at the broker, which redelivers after the lease.
                logger.warning("returning %d messages to the broker failed: %s", len(messages), exc)
                self.error(messages[0], exc)
        self.forget(messages)
        if followers:
            # Behind a message that went back to the broker, the rest of its key goes
            # back too, unstarted, so the broker hands them out again in order.
            self.nack(followers, 0.0)

    def _settle_claim(self, message: Message, *, done: bool) -> None:
        key = self._inflight.take_claim(message) if self._store is not None else None
        if key is None:
            return
        assert self._store is not None
        if not done:
            try:
                self._store.release(key)
            except Exception as exc:
                # The claim expires by its TTL; until then a redelivery is deferred.
                logger.warning("releasing idempotency key %r failed: %s", key, exc)
                self.error(message, exc)
            return
        for pause in (*_COMPLETE_PAUSES_S, None):
            try:
                self._store.complete(key, self._done_ttl_s)
                return
            except Exception as exc:
                if pause is None:
                    logger.error(
                        "marking idempotency key %r done failed (%s); a duplicate that "
                        "arrives after its claim expires will run again",
                        key,
                        exc,
                    )
                    self.error(message, exc)
                    return
                time.sleep(pause)
