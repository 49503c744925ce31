"""Run an app's messages in a test, without a broker and without threads.

Inside ``with TestRun(app) as run:`` the app publishes to a
:class:`~taskorbit.testing.transport.TestTransport` instead of its own transport,
and :meth:`TestRun.drain` runs what was published on the calling thread through
the same code a worker uses, one message at a time:

- admission as the dispatcher does it (an ETA that is not a point in time is
  dead-lettered; the idempotency key is claimed, and a duplicate is acked or
  deferred);
- :func:`taskorbit.worker.pipeline.process`: routing, the attempt limit,
  decoding into the handler's type, the handler, the task's retry policy;
- the worker's own :class:`~taskorbit.worker.settle.Settler` for the outcome: the
  same hooks in the same order, the idempotency claim completed or released, and
  exactly one of ack, retry (handed back with the next attempt number) or dead
  letter.

Why the real Settler rather than a copy of its rules: a test mode that drifts from
production tests nothing. It is built with no acker, no lease keeper and no local
retries (``local_delay_max`` below zero), so every retry goes back to the
transport, whose clock the test moves: a backoff of 4 s costs no time at all. A
retry that a worker would have kept in its timer wheel fires no second
``on_receive`` here either.

Idempotency: when the app has a store, a run claims keys in a fresh
``MemoryStore`` on the run's clock, so that no key outlives its test and
``advance()`` expires keys as the hours would (``idempotency_store=`` passes
another, the app's own included).

Leaving the ``with`` block puts the app's transport back; nothing else of the app
is touched (its hooks and tasks are used as they are, its store and its stats are
left alone: see :meth:`TestRun.stats`).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from taskorbit.app import Orbit
from taskorbit.context import Context
from taskorbit.dlq import DeadLetter
from taskorbit.errors import ConfigurationError, TaskorbitError
from taskorbit.idempotency import ClaimState, IdempotencyStore, MemoryStore
from taskorbit.message import Message
from taskorbit.testing.report import Delivery, Fate, Queued, Report
from taskorbit.testing.transport import TestTransport
from taskorbit.transports.base import Transport
from taskorbit.worker.inflight import InFlight
from taskorbit.worker.pipeline import Outcome, Verdict, process
from taskorbit.worker.settle import RETRY_LATER_S, Settler
from taskorbit.worker.stats import Stats
from taskorbit.worker.timerwheel import TimerWheel

logger = logging.getLogger("taskorbit.testing")

#: No delay is short enough to be held in a timer wheel: every retry and deferral
#: goes back to the test transport, on the run's clock.
_NEVER_LOCAL = -1.0
#: How long the dispatcher defers a batch whose idempotency claim failed.
_CLAIM_FAILED_DELAY_S = 1.0


class HasOrbit(Protocol):
    """A framework extension that wraps an app (``taskorbit.contrib.flask.TaskOrbit``)."""

    @property
    def orbit(self) -> Orbit: ...


class DrainLimitReached(TaskorbitError):
    """A drain ran ``max_deliveries`` deliveries and there was still more to run:
    most likely a handler that publishes (or defers) forever."""


class TestRun:
    """Run the messages an app publishes in this test, on this thread.

    >>> with TestRun(app) as run:                      # doctest: +SKIP
    ...     send_email.delay(Email(to="ada@example.com"))
    ...     report = run.drain()
    >>> report.fates == ["retried", "acked"]           # doctest: +SKIP
    True

    ``eager=True`` drains after every publish, so ``.delay()`` returns only once
    the handler (and its retries, and whatever it published) has run, like
    Celery's ``task_always_eager``. ``raise_errors=True`` makes the first
    exception a handler or the decoder raises propagate out of ``drain()`` (or
    ``.delay()`` when eager) instead of being retried; its message is
    dead-lettered, so that it is settled like any other.

    When the app has an idempotency store, keys are claimed in a fresh
    ``MemoryStore`` on the run's clock; ``idempotency_store=`` passes another.

    Retry delays come out as the policy's nominal values (1 s, 2 s, 4 s with the
    default backoff), so that a test can compare them exactly; ``jitter=True``
    draws the jitter as a worker does.

    ``max_deliveries`` bounds one drain: past it, :class:`DrainLimitReached` is
    raised instead of looping forever.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self,
        app: Orbit | HasOrbit,
        *,
        eager: bool = False,
        raise_errors: bool = False,
        jitter: bool = False,
        idempotency_store: IdempotencyStore | None = None,
        max_deliveries: int = 100_000,
    ) -> None:
        if not isinstance(app, Orbit):
            wrapped = getattr(app, "orbit", None)
            if not isinstance(wrapped, Orbit):
                raise ConfigurationError(f"TestRun needs a taskorbit.Orbit, got {app!r}")
            app = wrapped
        whole = isinstance(max_deliveries, int) and not isinstance(max_deliveries, bool)
        if not whole or max_deliveries < 1:
            raise ConfigurationError(
                f"max_deliveries must be a whole number >= 1, got {max_deliveries!r}"
            )
        self.app = app
        self.eager = eager
        self.raise_errors = raise_errors
        self.max_deliveries = max_deliveries
        # None: the policy's own shared generator, as in a worker.
        self._rng: random.Random | None = None if jitter else _Nominal()
        self._now = time.time()  # the run's clock: wall-clock seconds, standing still
        if idempotency_store is None and app.idempotency_store is not None:
            idempotency_store = MemoryStore(clock=lambda: self._now)
        #: Where this run claims idempotency keys (None: the app has no store).
        self.idempotency_store = idempotency_store
        self._draining = False  # a drain is on the stack; guarded by the GIL (one thread)
        self._deliveries: list[Delivery] = []
        # id() of queued messages that a worker would hold locally (see _note_if_local)
        self._local: set[int] = set()
        self._stats = Stats()
        self._inflight = InFlight()
        self._stopping = threading.Event()  # never set: Context.cancelled is False
        self._state = "new"  # new -> open -> closed
        self._saved: Transport | None = None
        self._settler: Settler | None = None
        self.transport = TestTransport(
            lambda: self._now, ordered=app.transport.ordered, on_publish=self._published
        )

    # -- entering and leaving ----------------------------------------------------------

    def __enter__(self) -> TestRun:
        app = self.app
        if self._state != "new":
            raise ConfigurationError("a TestRun is entered once; make a new one for each test")
        if app.running:
            raise ConfigurationError(
                "this app's worker is running; stop it (app.stop()) before a TestRun, which "
                "runs the messages itself"
            )
        if isinstance(app.transport, TestTransport):
            raise ConfigurationError("this app is inside another TestRun already; leave it first")
        # Built here rather than in __init__ for the reason a worker builds its own at
        # start: hooks and the store are read once, as they are now.
        self._settler = Settler(
            self.transport,
            inflight=self._inflight,
            acker=None,  # an ack has nothing to tell this transport
            lease=None,
            timer=TimerWheel(_never_due, name="taskorbit-testrun-timer"),  # never started
            hooks=app.hooks,
            stats=self._stats,
            store=self.idempotency_store,
            done_ttl_s=app.idempotency_ttl_s,
            local_delay_max=_NEVER_LOCAL,
            max_lease_s=_NEVER_LOCAL,
            release_order=_no_ordering_keys_held,
        )
        self._saved = app.transport
        app.transport = self.transport
        self._state = "open"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == "open":
            assert self._saved is not None
            self.app.transport = self._saved
            self._saved = None
            self._state = "closed"

    # -- running -----------------------------------------------------------------------

    def drain(self) -> Report:
        """Run everything queued, and everything that queues meanwhile (retries,
        messages handlers publish), until nothing is left; jump the clock to each
        next due time instead of waiting. Returns what this call did."""
        return self._run_until(math.inf)

    def advance(self, seconds: float) -> Report:
        """Move the clock ``seconds`` forward, running every message that falls due
        on the way, in due order. ``advance(0)`` runs only what is due now."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ConfigurationError(
                f"advance() takes a finite number of seconds >= 0, got {seconds!r}"
            )
        target = self._now + seconds
        report = self._run_until(target)
        self._now = max(self._now, target)
        return report

    # -- looking -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The run's clock, in epoch seconds: the wall clock when the run was made,
        plus every second ``advance()`` and ``drain()`` skipped."""
        return self._now

    @property
    def queued(self) -> list[Queued]:
        """Messages waiting to run, soonest first (published, or handed back for a
        retry or a deferral)."""
        return [
            Queued(_copy(m), self._payload(m), max(0.0, due - self._now))
            for due, m in self.transport.entries()
        ]

    @property
    def idle(self) -> bool:
        """Nothing is queued (a drain that returned always leaves the run idle)."""
        return len(self.transport) == 0

    @property
    def report(self) -> Report:
        """Every delivery since the run began, in order."""
        return Report(self._deliveries)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter queue: each message with its ``reason`` and ``attempts``."""
        return [DeadLetter.of(m) for m in list(self.transport.dead_letters)]

    def stats(self) -> dict[str, int]:
        """Counters of this run, as ``Orbit.stats()`` counts a worker's (the app's
        own counters are left alone)."""
        snapshot = self._stats.snapshot()
        snapshot["in_flight"] = len(self._inflight)
        snapshot["claims_held"] = self._inflight.claims
        return snapshot

    # -- the loop ----------------------------------------------------------------------

    def _published(self) -> None:
        # A message published by a handler during a drain is run by that drain.
        if self.eager and not self._draining:
            self.drain()

    def _run_until(self, until: float) -> Report:
        if self._state != "open":
            raise ConfigurationError(
                "use the TestRun as a context manager: with TestRun(app) as run: ..."
            )
        if self._draining:
            raise ConfigurationError(
                "drain() and advance() cannot be called while a drain is running (from a "
                "handler or a hook); what a handler publishes runs in the same drain"
            )
        if self.app.running:
            raise ConfigurationError("this app's worker was started inside the TestRun; stop it")
        self._draining = True
        first = len(self._deliveries)
        try:
            for _ in range(self.max_deliveries):
                item = self.transport.pop_due(until)
                if item is None:
                    break
                due, message = item
                self._now = max(self._now, due)
                self._deliver(message)
            else:
                if self.transport.has_due(until):
                    raise DrainLimitReached(
                        f"{self.max_deliveries} deliveries and still not idle "
                        f"({len(self.transport)} queued); a handler that publishes or "
                        "defers forever? Raise TestRun(max_deliveries=...) if not"
                    )
        finally:
            self._draining = False
        return Report(self._deliveries[first:])

    def _deliver(self, message: Message) -> None:
        """One delivery, as a poller, the dispatcher and a runner would make it."""
        settler = self._settler
        assert settler is not None
        as_delivered = _copy(message)
        payload = self._payload(message)
        message.received_at = time.monotonic()
        self._inflight.open([message])
        if id(message) in self._local:
            # A worker would have held this retry in its timer wheel: no new receive.
            self._local.discard(id(message))
        else:
            self._stats.add("received")
            self.app.hooks.fire("on_receive", message)
        try:
            delivery = self._run_one(message, settler, as_delivered, payload)
        except BaseException as exc:
            delivery = self._rescue(message, settler, exc, as_delivered, payload)
            self._deliveries.append(delivery)
            if self.raise_errors or not isinstance(exc, Exception):
                raise
            return
        self._deliveries.append(delivery)
        if self.raise_errors and delivery.error is not None:
            raise delivery.error

    def _run_one(
        self, message: Message, settler: Settler, as_delivered: Message, payload: Any
    ) -> Delivery:
        def record(
            fate: Fate, delay: float = 0.0, reason: str = "", error: BaseException | None = None
        ) -> Delivery:
            return Delivery(as_delivered, payload, fate, delay, reason, error, self._now)

        # Admission (the dispatcher's _admit and _claim).
        not_before = message.not_before
        if not_before is not None and not math.isfinite(not_before):
            reason = (
                f"cannot admit the message: its not-before {not_before!r} is not a point in time"
            )
            settler.dead_letter(message, reason)
            return record(Fate.DEAD_LETTERED, reason=reason)
        claim, why = self._claim(message)
        if why:
            self._stats.add("deferred")
            settler.delay(message, _CLAIM_FAILED_DELAY_S, next_attempt=False)
            self._note_if_local(message, _CLAIM_FAILED_DELAY_S)
            return record(Fate.DEFERRED, _CLAIM_FAILED_DELAY_S, why)
        # A runner (Runtime._run_one).
        if claim is not None and claim is not ClaimState.NEW:
            in_progress = claim is ClaimState.IN_PROGRESS
            delay = self.app.duplicate_delay_s
            settler.duplicate(message, in_progress=in_progress, retry_delay_s=delay)
            if in_progress:
                self._note_if_local(message, delay, prefer_local=True)
                return record(Fate.DEFERRED, delay, "its idempotency key is in progress")
            return record(Fate.DUPLICATE, reason="its idempotency key is done")
        self.app.hooks.fire("on_dispatch", message)
        outcome = process(message, self.app.tasks, make_context=self._context, rng=self._rng)
        if self.raise_errors and outcome.error is not None and outcome.verdict is Verdict.RETRY:
            # The exception goes to the test instead of a retry; the message still
            # leaves through one door.
            outcome = Outcome(
                Verdict.DEAD_LETTER,
                message,
                reason=f"raised to the test (raise_errors=True): {outcome.reason}",
                result=outcome.result,
                error=outcome.error,
                duration_s=outcome.duration_s,
            )
        settler.settle(outcome)
        if outcome.verdict is Verdict.RETRY:
            self._note_if_local(message, outcome.delay)
        fate = _FATES[outcome.verdict]
        return record(fate, outcome.delay, outcome.reason, outcome.error)

    def _note_if_local(
        self, message: Message, delay_s: float, *, prefer_local: bool = False
    ) -> None:
        """Remember a hand-back that a worker on the app's own transport would have
        held in its timer wheel instead (Settler._hold_locally), so that its next
        delivery fires no ``on_receive``, as there."""
        real = self._saved
        assert real is not None
        limit = self.app.max_lease_s if prefer_local else self.app.local_delay_max
        local = not real.acknowledges or (
            delay_s <= limit and (not real.needs_lease or delay_s < self.app.max_lease_s)
        )
        if local:
            self._local.add(id(message))

    def _claim(self, message: Message) -> tuple[ClaimState | None, str]:
        """Claim the message's idempotency key, as the dispatcher does: its state,
        or the reason the store failed."""
        store = self.idempotency_store
        key = message.attributes.get(self.app.idempotency_attr) if store is not None else None
        if store is None or not key:
            return None, ""
        try:
            [state] = store.claim_many([key], self.app.claim_ttl_s)
        except Exception as exc:
            logger.exception("idempotency store failed; deferring %s", message.id)
            return None, f"the idempotency store failed: {type(exc).__name__}: {exc}"
        if state is ClaimState.NEW:
            self._inflight.claimed(message, key)
        return state, ""

    def _rescue(
        self,
        message: Message,
        settler: Settler,
        exc: BaseException,
        as_delivered: Message,
        payload: Any,
    ) -> Delivery:
        """A failure outside the pipeline's own handling (a retry policy's bug):
        settle the message anyway, as Runtime._rescue does."""
        logger.error("unexpected failure while running %s: %r", message.id, exc, exc_info=exc)
        settler.error(message, exc)
        reason = f"unexpected failure: {type(exc).__name__}: {exc}"
        if not self._inflight.holds(message):  # settled before the failure (a hook's)
            fate = self.transport.fate_of(message)
            return Delivery(as_delivered, payload, fate, 0.0, reason, exc, self._now)
        if self.raise_errors:
            settler.dead_letter(message, f"raised to the test (raise_errors=True): {reason}")
            return Delivery(as_delivered, payload, Fate.DEAD_LETTERED, 0.0, reason, exc, self._now)
        message.attempt += 1  # the handler may have run: the attempt limit still holds
        settler.nack([message], RETRY_LATER_S)
        return Delivery(as_delivered, payload, Fate.RETRIED, RETRY_LATER_S, reason, exc, self._now)

    def _context(self, message: Message) -> Context:
        return Context(message, self._stopping, [None])

    def _payload(self, message: Message) -> Any:
        """The body decoded as the handler would get it; the body itself otherwise."""
        task = self.app.tasks.get(message.topic)
        try:
            if task is not None:
                return task.decode(message.body)
            return self.app.codec.decoder(Any)(message.body)
        except Exception:
            return message.body


def make_context(
    topic: str = "test",
    *,
    attempt: int = 1,
    attributes: Mapping[str, str] | None = None,
    message_id: str = "test-1",
    cancelled: bool = False,
) -> Context:
    """A :class:`~taskorbit.Context` for calling a handler directly in a unit test:
    ``send_email(Email(...), make_context(attempt=3))``."""
    message = Message(topic, b"", dict(attributes or {}), message_id, attempt)
    stopping = threading.Event()
    if cancelled:
        stopping.set()
    return Context(message, stopping, [time.monotonic() if cancelled else None])


_FATES = {
    Verdict.ACK: Fate.ACKED,
    Verdict.RETRY: Fate.RETRIED,
    Verdict.DEAD_LETTER: Fate.DEAD_LETTERED,
}


class _Nominal(random.Random):
    """``uniform(a, b)`` is the middle of the range. ExponentialBackoff multiplies
    its delay by ``uniform(1 - jitter, 1 + jitter)``, so its delays come out exact."""

    def uniform(self, a: float, b: float) -> float:
        # Rounded so that 1 - j and 1 + j give exactly 1.0 for any j, not 0.9999999999999999.
        return round((a + b) / 2, 12)


def _copy(message: Message) -> Message:
    return msgspec.structs.replace(message, attributes=dict(message.attributes))


def _never_due(messages: list[Message]) -> None:
    raise AssertionError("a TestRun holds no retry in a timer wheel")


def _no_ordering_keys_held(message: Message, *, to_broker: bool) -> list[Message]:
    # The dispatcher frees an ordering key here; a test run delivers one message at a
    # time, and its transport keeps each key's order itself.
    return []
