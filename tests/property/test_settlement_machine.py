"""A hypothesis state machine that drives a worker through random mixes of what
breaks settlement, and checks the invariant with the settlement ledger.

Each example builds a worker with a random shape (concurrency, a tiny or roomy
ring and its overflow policy, ordering, an idempotency store, local or broker
retries) and runs a random schedule of: messages whose handler returns, raises,
raises a BaseException, asks for a retry or the DLQ, is slow, or fails once;
undecodable payloads, broken envelopes and unknown topics; duplicate idempotency
keys and shared ordering keys; ETAs; and ``stop()`` with a restart at random
moments. At the end the worker drains and :meth:`LedgerTransport.assert_clean`
must hold. A failure shrinks to a short schedule.

``TASKORBIT_SETTLEMENT_EXAMPLES`` sets the number of examples (default 25, about
a minute); the nightly profile runs thousands.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import taskorbit as orbit
from taskorbit.idempotency import MemoryStore
from taskorbit.message import Message
from tests.ledger import LedgerTransport, RunCounter

MAX_RETRIES = 3
EXAMPLES = int(os.environ.get("TASKORBIT_SETTLEMENT_EXAMPLES", "25"))
KINDS = ("ok", "raise", "base_exception", "retry", "dead_letter", "slow", "flaky", "envelope")


class Job(msgspec.Struct):
    id: int
    kind: str


class BreakingTransport(LedgerTransport):
    """Marks the envelope of ``kind="envelope"`` jobs malformed on receive, the way a
    transport reports an entry it cannot read."""

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        got = super().receive(max_messages, timeout)
        for m in got:
            if b'"envelope"' in m.body:
                m.malformed = "field 'attempt' is 'abc', not a positive integer"
        return got


def handler(runs: RunCounter) -> Callable[[Job, orbit.Context], Any]:
    def handle(job: Job, ctx: orbit.Context) -> Any:
        runs.ran(job.id, ctx.attempt)
        if job.kind == "raise":
            raise RuntimeError("handler failed")
        if job.kind == "base_exception":
            raise KeyboardInterrupt
        if job.kind == "retry":
            return orbit.retry(delay=0.01)
        if job.kind == "dead_letter":
            return orbit.dead_letter("the handler gave up")
        if job.kind == "slow":
            time.sleep(0.03)
        if job.kind == "flaky" and ctx.attempt == 1:
            raise RuntimeError("fails once")
        return None

    return handle


class WorkerSettlesEverything(RuleBasedStateMachine):
    """Subclasses set ``make_transport`` (a fresh transport per example)."""

    make_transport: Callable[[bool], orbit.Transport] = staticmethod(  # type: ignore[assignment]
        lambda ordered: orbit.MemoryTransport(ordered=ordered)
    )

    @initialize(
        concurrency=st.sampled_from([1, 2, 8]),
        buffer_size=st.sampled_from([2, 8, 256]),
        overflow=st.sampled_from(list(orbit.Overflow)),
        ordered=st.booleans(),
        use_store=st.booleans(),
        local_delay_max=st.sampled_from([0.0, 30.0]),
    )
    def start_worker(
        self,
        concurrency: int,
        buffer_size: int,
        overflow: orbit.Overflow,
        ordered: bool,
        use_store: bool,
        local_delay_max: float,
    ) -> None:
        self.transport = BreakingTransport(self.make_transport(ordered))
        self.store = MemoryStore() if use_store else None
        self.runs = RunCounter()
        self.ids = itertools.count()
        self.options: dict[str, Any] = dict(
            concurrency=concurrency,
            buffer_size=buffer_size,
            overflow=overflow,
            idempotency_store=self.store,
            local_delay_max=local_delay_max,
            duplicate_delay_s=0.02,
            ack_interval_s=0.005,
            poll_timeout=0.05,
        )
        self.app = self._new_app()

    def _new_app(self) -> orbit.Orbit:
        app = orbit.Orbit(self.transport, **self.options)
        app.handle("job", handler(self.runs), max_retries=MAX_RETRIES, base_delay=0.005)
        app.start()
        return app

    @rule(
        kind=st.sampled_from(KINDS),
        ordering_key=st.sampled_from([None, "a", "b"]),
        idempotency_key=st.sampled_from([None, "k1", "k2"]),
        countdown=st.sampled_from([None, 0.02]),
        count=st.integers(1, 5),
    )
    def publish(
        self,
        kind: str,
        ordering_key: str | None,
        idempotency_key: str | None,
        countdown: float | None,
        count: int,
    ) -> None:
        for _ in range(count):
            self.app.publish(
                "job",
                Job(next(self.ids), kind),
                ordering_key=ordering_key,
                idempotency_key=idempotency_key,
                countdown=countdown,
            )

    @rule(body=st.sampled_from([b"not json", b'{"id": "x"}', b'{"a":' * 5000]))
    def publish_undecodable(self, body: bytes) -> None:
        self.app.publish("job", body)

    @rule()
    def publish_to_an_unknown_topic(self) -> None:
        self.app.publish("nobody.listens", Job(next(self.ids), "ok"))

    @rule(pause=st.sampled_from([0.0, 0.01, 0.05]))
    def let_it_work(self, pause: float) -> None:
        time.sleep(pause)

    @rule(timeout=st.sampled_from([0.0, 0.05, 5.0]))
    def stop_and_restart(self, timeout: float) -> None:
        self.app.stop(timeout=timeout)
        self.app = self._new_app()

    def teardown(self) -> None:
        app = getattr(self, "app", None)
        if app is None:
            return
        try:
            drained = self.transport.wait_idle(5)
            stats = app.stats()
            self.transport.assert_clean(
                app, store=self.store, runs=self.runs, max_runs=MAX_RETRIES + 1
            )
            assert drained, f"the queue did not drain: {self.transport.inner.pending()} {stats}"
        finally:
            app.stop(timeout=10)


def test_the_worker_settles_every_message_exactly_once_on_memory() -> None:
    run_state_machine_as_test(
        WorkerSettlesEverything,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
