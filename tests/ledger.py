"""The settlement ledger: the invariant of docs/semantics.md as a test helper.

:class:`LedgerTransport` wraps any transport and writes down every delivery
(each message ``receive`` hands to the worker) and every settlement the worker
makes of it (``ack``, ``nack``, ``dead_letter``). :meth:`LedgerTransport.assert_clean`
then checks what the invariant promises:

- every delivery was settled exactly once (an ack the broker refused and that
  was retried counts once, when it went through);
- nothing is in flight in the worker, no idempotency claim is left in progress,
  no ordering key is held;
- no message ran more often than ``max_retries + 1`` times (runs are counted by
  :class:`RunCounter`, keyed by something of the payload that survives copies).

Used against the memory transport in unit tests and against every durable
transport's real server in integration tests.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import taskorbit as orbit
from taskorbit.idempotency import ClaimState, MemoryStore
from taskorbit.message import Message
from taskorbit.transports.base import AckFailure, Transport

_CAPABILITIES = (
    "name",
    "durable",
    "acknowledges",
    "push",
    "max_batch",
    "max_delay",
    "needs_lease",
    "ordered",
    "lease_s",
    "pollers",
)


@dataclass
class Delivery:
    seq: int
    message: Message
    attempt: int
    settlements: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # settlements the broker call refused


class LedgerTransport(Transport):
    """A transport that records deliveries and settlements of the one it wraps."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        for name in _CAPABILITIES:
            setattr(self, name, getattr(inner, name))
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._open: dict[int, Delivery] = {}  # id(message) -> its current delivery
        self.stray: list[str] = []  # settlements of messages that were not open

    # -- recording -----------------------------------------------------------------

    def _settled(self, messages: Sequence[Message], how: str) -> None:
        with self._lock:
            for m in messages:
                delivery = self._open.pop(id(m), None)
                if delivery is None:
                    self.stray.append(f"{how} of {m.id!r} ({m.topic}), which was not open")
                else:
                    delivery.settlements.append(how)

    def _failed(self, messages: Sequence[Message], how: str) -> None:
        with self._lock:
            for m in messages:
                delivery = self._open.get(id(m))
                if delivery is not None:
                    delivery.failed.append(how)

    # -- the transport ---------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        got = self.inner.receive(max_messages, timeout)
        with self._lock:
            for m in got:
                if id(m) in self._open:
                    self.stray.append(f"{m.id!r} delivered again while still open")
                delivery = Delivery(len(self.deliveries), m, m.attempt)
                self.deliveries.append(delivery)
                self._open[id(m)] = delivery
        return got

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        try:
            failures = self.inner.ack(messages)
        except Exception:
            self._failed(messages, "ack")
            raise
        retried = {id(f.message) for f in failures if f.retryable}
        self._settled([m for m in messages if id(m) not in retried], "ack")
        return failures

    def nack(self, messages: Sequence[Message], delay: float = 0.0) -> None:
        # Recorded first: the inner transport may redeliver the same object at once.
        self._settled(messages, "nack")
        self.inner.nack(messages, delay)

    def dead_letter(self, message: Message, reason: str) -> None:
        self._settled([message], "dead_letter")
        self.inner.dead_letter(message, reason)

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        self.inner.extend(messages, seconds)

    def publish(self, messages: Sequence[Message]) -> list[str]:
        return self.inner.publish(messages)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Test helpers of the wrapped transport (dead_letters, wait_idle, ...).
        return getattr(self.inner, name)

    # -- the verdict -----------------------------------------------------------------

    def unsettled(self) -> list[Delivery]:
        with self._lock:
            return list(self._open.values())

    def assert_clean(
        self,
        app: orbit.Orbit | None = None,
        *,
        store: Any = None,
        runs: RunCounter | None = None,
        max_runs: int | None = None,
        broker_outage: bool = False,
    ) -> None:
        """``broker_outage``: a delivery whose settlement the broker refused (the
        worker tried and gave up) is left to the broker's lease, which redelivers it;
        it counts as settled by that redelivery."""
        problems = list(self.stray)
        for d in self.unsettled():
            if broker_outage and d.failed:
                continue
            problems.append(f"delivery {d.seq} of {d.message.id!r} ({d.message.topic}) unsettled")
        for d in self.deliveries:
            if len(d.settlements) > 1:
                problems.append(f"delivery {d.seq} of {d.message.id!r} settled {d.settlements}")
        if app is not None and app.running:
            stats = app.stats()
            for gauge in ("in_flight", "claims_held", "ordering_keys_held", "timers", "waiting"):
                if stats.get(gauge):
                    problems.append(f"the worker still has {gauge}={stats[gauge]}")
        if store is not None:
            problems += [f"claim {k!r} left in progress" for k in claims_in_progress(store)]
        if runs is not None and max_runs is not None:
            problems += [
                f"{key!r} ran {n} times (at most {max_runs})"
                for key, n in runs.counts().items()
                if n > max_runs
            ]
        assert not problems, "settlement invariant broken:\n  " + "\n  ".join(problems)

    def settlements(self) -> Counter[str]:
        return Counter(s for d in self.deliveries for s in d.settlements)


class RunCounter:
    """Counts handler runs per logical message (a key taken from the payload)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Hashable] = Counter()
        self.attempts: dict[Hashable, list[int]] = {}

    def ran(self, key: Hashable, attempt: int = 0) -> int:
        with self._lock:
            self._counts[key] += 1
            self.attempts.setdefault(key, []).append(attempt)
            return self._counts[key]

    def counts(self) -> dict[Hashable, int]:
        with self._lock:
            return dict(self._counts)


def claims_in_progress(store: Any) -> list[str]:
    """Keys a store holds in progress (the memory and Redis stores)."""
    if isinstance(store, MemoryStore):
        with store._lock:
            store._forget_expired(store._clock())
            return [k for k, e in store._entries.items() if e[0] is ClaimState.IN_PROGRESS]
    finder: Callable[[], list[str]] | None = getattr(store, "keys_in_progress", None)
    if finder is None:
        raise TypeError(f"cannot list the claims of {type(store).__name__}")
    return finder()
