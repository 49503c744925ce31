"""Faults the worker must survive without losing or repeating a message: a broker
that refuses acks (in part or whole) and an idempotency store that fails while
claiming, completing or releasing.

The transport is the in-memory one with failures injected around it; the
settlement ledger checks the invariant after each run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.errors import TransportError
from taskorbit.idempotency import ClaimState, MemoryStore
from taskorbit.message import Message
from taskorbit.transports.base import AckFailure
from taskorbit.worker.acker import MAX_ACK_TRIES
from tests.ledger import LedgerTransport, RunCounter, claims_in_progress


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class FlakyAcks(LedgerTransport):
    """Acks fail ``failures`` times per message: raised, or refused in part."""

    def __init__(self, *, failures: int, mode: str, retryable: bool = True) -> None:
        super().__init__(orbit.MemoryTransport())
        self.needs_lease = True  # so that the lease keeper's bookkeeping is exercised
        self.lease_s = 60.0
        self._left: dict[str, int] = {}
        self._failures = failures
        self._mode = mode
        self._retryable = retryable
        self.calls = 0

    def extend(self, messages: Sequence[Message], seconds: float) -> None:
        pass

    def ack(self, messages: Sequence[Message]) -> list[AckFailure]:
        self.calls += 1
        failing = []
        for m in messages:
            left = self._left.setdefault(m.id, self._failures)
            if left > 0:
                self._left[m.id] = left - 1
                failing.append(m)
        if failing and self._mode == "raise":
            raise TransportError("broker down")
        good = [m for m in messages if m not in failing]
        refused = [AckFailure(m, "refused", self._retryable) for m in failing]
        return super().ack(good) + refused


@pytest.fixture
def apps() -> Iterator[list[orbit.Orbit]]:
    made: list[orbit.Orbit] = []
    yield made
    for app in made:
        app.stop(timeout=5)


def run(transport: orbit.Transport, apps: list[orbit.Orbit], **options: Any) -> orbit.Orbit:
    app = orbit.Orbit(transport, concurrency=2, ack_interval_s=0.01, **options)
    apps.append(app)
    return app


@pytest.mark.parametrize("mode", ["raise", "refuse"])
def test_acks_that_fail_a_few_times_are_retried_until_they_go_through(
    apps: list[orbit.Orbit], mode: str
) -> None:
    transport = FlakyAcks(failures=2, mode=mode)
    app = run(transport, apps)
    app.handle("t", lambda n: None)
    app.start()
    app.publish_many("t", [1, 2, 3])
    assert transport.inner.wait_idle(10)
    stats = app.stats()
    assert transport.inner.acked == 3
    assert stats["ack_failures"] == (0 if mode == "raise" else 6)
    assert stats["errors"] == (2 if mode == "raise" else 6)
    wait_for(lambda: app.stats()["held"] == 0)  # leases forgotten once acked
    transport.assert_clean(app)


def test_an_ack_that_keeps_failing_is_given_up_and_its_lease_forgotten(
    apps: list[orbit.Orbit],
) -> None:
    transport = FlakyAcks(failures=100, mode="refuse")
    app = run(transport, apps)
    app.handle("t", lambda n: None)
    app.start()
    app.publish("t", 1)
    wait_for(lambda: app.stats()["ack_failures"] == MAX_ACK_TRIES)
    assert transport.calls == MAX_ACK_TRIES
    wait_for(lambda: app.stats()["held"] == 0)
    # The broker still has it (it redelivers after the lease): not acked, not lost.
    assert transport.inner.pending()["in_flight"] == 1


def test_a_refusal_that_cannot_succeed_is_not_retried(apps: list[orbit.Orbit]) -> None:
    transport = FlakyAcks(failures=1, mode="refuse", retryable=False)
    app = run(transport, apps)
    app.handle("t", lambda n: None)
    app.start()
    app.publish("t", 1)
    wait_for(lambda: app.stats()["ack_failures"] == 1)
    time.sleep(0.1)  # the acker would retry within this time; it must not
    assert transport.calls == 1
    assert app.stats()["ack_failures"] == 1
    wait_for(lambda: app.stats()["held"] == 0)


class FailingStore(MemoryStore):
    """A memory store whose ``claim_many``/``complete``/``release`` fail the first
    ``n`` calls of the one named ``failing``."""

    def __init__(self, failing: str, n: int) -> None:
        super().__init__()
        self._failing = failing
        self._left = n
        self._guard = threading.Lock()

    def _maybe_fail(self, op: str) -> None:
        with self._guard:
            if op == self._failing and self._left > 0:
                self._left -= 1
                raise ConnectionError(f"store down during {op}")

    def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
        self._maybe_fail("claim")
        return super().claim_many(keys, ttl_s)

    def complete(self, key: str, ttl_s: float) -> None:
        self._maybe_fail("complete")
        super().complete(key, ttl_s)

    def release(self, key: str) -> None:
        self._maybe_fail("release")
        super().release(key)


@pytest.mark.parametrize("failing", ["claim", "complete", "release"])
def test_a_failing_idempotency_store_defers_work_and_never_runs_a_key_twice(
    apps: list[orbit.Orbit], failing: str
) -> None:
    store = FailingStore(failing, n=2)
    transport = LedgerTransport(orbit.MemoryTransport())
    app = run(transport, apps, idempotency_store=store, claim_ttl_s=1.0, duplicate_delay_s=0.05)
    runs = RunCounter()

    def pay(n: int, ctx: orbit.Context) -> None:
        runs.ran(n, ctx.attempt)
        if n == 0 and ctx.attempt == 1:
            raise RuntimeError("first run of 0 fails")  # so that a release happens

    app.handle("pay", pay, base_delay=0.01)
    app.start()
    for n in range(4):
        app.publish("pay", n, idempotency_key=f"order-{n}")
    assert transport.inner.wait_idle(15)
    # Duplicates of every key, after the fact: the done marks hold.
    for n in range(4):
        app.publish("pay", n, idempotency_key=f"order-{n}")
    assert transport.inner.wait_idle(15)
    assert runs.counts() == {0: 2, 1: 1, 2: 1, 3: 1}
    assert transport.inner.dead_letters == []
    assert app.stats()["errors"] >= 1
    assert claims_in_progress(store) == []
    transport.assert_clean(app, store=store)
