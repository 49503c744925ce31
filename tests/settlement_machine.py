"""A hypothesis state machine that drives a worker through random mixes of what
breaks settlement, and checks the invariant with the settlement ledger.

Each example builds a worker with a random shape (concurrency, a tiny or roomy
ring and its overflow policy, ordering, an idempotency store, local or broker
retries) and runs a random schedule of: messages whose handler returns, raises,
raises a BaseException, asks for a retry or the DLQ, is slow, or fails once;
undecodable payloads, broken envelopes and unknown topics; duplicate idempotency
keys and shared ordering keys; ETAs; and ``stop()`` with a restart at random
moments. At the end the worker drains and the ledger must be clean: every
delivery settled once, every published message settled for good exactly once
(acked or dead-lettered), nothing in flight, no claim or ordering key held, no
message run more than ``max_retries + 1`` times. A failure shrinks to a short
schedule.

One machine, many brokers: a :class:`Backend` says how to make a fresh transport
per example and how to write a broken envelope to that broker. The memory run is
in tests/property/, the real servers' runs in tests/integration/<broker>/.
``TASKORBIT_SETTLEMENT_EXAMPLES`` multiplies the number of examples (the nightly
profile runs with 100).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import taskorbit as orbit
from taskorbit.idempotency import MemoryStore
from taskorbit.message import Message
from tests.ledger import LedgerTransport, RunCounter

MAX_RETRIES = 3
SCALE = float(os.environ.get("TASKORBIT_SETTLEMENT_EXAMPLES", "1"))
KINDS = ("ok", "raise", "base_exception", "retry", "dead_letter", "slow", "flaky")


class Job(msgspec.Struct):
    id: int
    kind: str


_decode_job = msgspec.json.Decoder(Job).decode

# By name, so that a failing schedule prints a word instead of 25 KB of JSON.
UNDECODABLE = {
    "not json": b"not json",
    "wrong shape": b'{"id": "x"}',
    "nested too deep": b'{"a":' * 5000,
}


@dataclass
class Backend:
    """How the machine meets one broker."""

    name: str
    #: A fresh transport (new queue, stream or subscription) per example; the flag
    #: asks for ordering-key semantics where the broker has them.
    make_transport: Callable[[bool], orbit.Transport]
    #: Writes one message with a broken envelope to the broker, as a foreign or
    #: buggy producer would; ``transport`` is the one the example consumes from.
    write_broken: Callable[[orbit.Transport], None]
    examples: int
    ordering: bool = True  # whether publishes may carry ordering keys
    ledger: type[LedgerTransport] = LedgerTransport
    drain_timeout_s: float = 30.0
    quiet_s: float = 0.3  # no new delivery for this long after the drain
    lease: dict[str, Any] | None = None  # extra Orbit options (poll_timeout, ...)


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


def machine_for(backend: Backend) -> type[RuleBasedStateMachine]:
    class WorkerSettlesEverything(RuleBasedStateMachine):
        @initialize(
            concurrency=st.sampled_from([1, 2, 8]),
            buffer_size=st.sampled_from([2, 8, 256]),
            overflow=st.sampled_from(list(orbit.Overflow)),
            ordered=st.booleans() if backend.ordering else st.just(False),
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
            self.transport = backend.ledger(backend.make_transport(ordered))
            self.ordered = ordered
            self.store = MemoryStore() if use_store else None
            self.runs = RunCounter()
            self.ids = itertools.count()
            self.expected: set[int] = set()  # Job ids published
            self.junk = 0  # messages published that can only end in the DLQ
            self.options: dict[str, Any] = dict(
                concurrency=concurrency,
                buffer_size=buffer_size,
                overflow=overflow,
                idempotency_store=self.store,
                local_delay_max=local_delay_max,
                duplicate_delay_s=0.02,
                ack_interval_s=0.005,
                poll_timeout=0.05,
                **(backend.lease or {}),
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
                job = Job(next(self.ids), kind)
                self.expected.add(job.id)
                self.app.publish(
                    "job",
                    job,
                    ordering_key=ordering_key if self.ordered else None,
                    idempotency_key=idempotency_key,
                    countdown=countdown,
                )

        @rule(body=st.sampled_from(sorted(UNDECODABLE)))
        def publish_undecodable(self, body: str) -> None:
            # Raw, as a producer that does not check would send it: .delay() and
            # app.publish refuse a payload the handler cannot decode.
            self.junk += 1
            self.transport.inner.publish([Message(topic="job", body=UNDECODABLE[body])])

        @rule()
        def publish_to_an_unknown_topic(self) -> None:
            self.junk += 1
            self.app.publish("nobody.listens", {"stray": True})

        @rule()
        def write_a_broken_envelope(self) -> None:
            self.junk += 1
            backend.write_broken(self.transport.inner)

        @rule(pause=st.sampled_from([0.0, 0.01, 0.05]))
        def let_it_work(self, pause: float) -> None:
            time.sleep(pause)

        @rule(timeout=st.sampled_from([0.0, 0.05, 5.0]))
        def stop_and_restart(self, timeout: float) -> None:
            self.app.stop(timeout=timeout)
            self.app = self._new_app()

        def _final(self) -> tuple[Counter[int], int]:
            """Settlements for good (ack or dead letter) per Job id, and how many
            messages that are not Jobs were dead-lettered."""
            final: Counter[int] = Counter()
            junk = 0
            for d in self.transport.deliveries:
                for how in d.settlements:
                    if how == "nack":
                        continue
                    job = _job_of(d.message)
                    if job is None:
                        junk += how == "dead_letter"
                    else:
                        final[job.id] += 1
            return final, junk

        def _reruns(self) -> dict[int, list[int]]:
            return {k: v for k, v in self.runs.attempts.items() if len(v) > 1}  # type: ignore[misc]

        def _drained(self) -> bool:
            final, junk = self._final()
            return (
                self.expected <= set(final) and junk >= self.junk and not self.transport.unsettled()
            )

        def teardown(self) -> None:
            app = getattr(self, "app", None)
            if app is None:
                return
            try:
                deadline = time.monotonic() + backend.drain_timeout_s
                while not self._drained() and time.monotonic() < deadline:
                    time.sleep(0.02)
                # Anything that would still arrive (a stray copy, a late redelivery)
                # arrives within a quiet period, and would break the counts below.
                seen = len(self.transport.deliveries)
                time.sleep(backend.quiet_s)
                while len(self.transport.deliveries) != seen and time.monotonic() < deadline:
                    seen = len(self.transport.deliveries)
                    time.sleep(backend.quiet_s)
                final, junk = self._final()
                note(
                    f"published {len(self.expected)} jobs and {self.junk} bad messages; "
                    f"settlements {dict(self.transport.settlements())}; stats {app.stats()}; "
                    f"attempts of jobs that ran more than once {self._reruns()}"
                )
                self.transport.assert_clean(
                    app, store=self.store, runs=self.runs, max_runs=MAX_RETRIES + 1
                )
                missing = sorted(self.expected - set(final))
                assert not missing, f"never settled for good: {missing} ({app.stats()})"
                twice = {i: n for i, n in final.items() if n > 1}
                assert not twice, f"settled for good more than once: {twice}"
                assert junk == self.junk, f"{junk} of {self.junk} bad messages dead-lettered"
            finally:
                app.stop(timeout=10)

    WorkerSettlesEverything.__name__ = f"WorkerSettlesEverythingOn{backend.name.title()}"
    return WorkerSettlesEverything


def _job_of(message: Message) -> Job | None:
    if message.malformed is not None or message.topic != "job":
        return None
    try:
        return _decode_job(message.body)
    except (msgspec.DecodeError, RecursionError):
        return None


def run_machine(backend: Backend) -> None:
    run_state_machine_as_test(
        machine_for(backend),
        settings=settings(
            max_examples=max(1, int(backend.examples * SCALE)),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
