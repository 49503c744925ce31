"""The settlement invariant on the in-memory transport, case by case.

Each test is a way outside review broke "every message ends in exactly one
settlement" (issue 9); each runs under the settlement ledger (tests/ledger.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.codec import Codec
from taskorbit.idempotency import ClaimState, MemoryStore
from taskorbit.message import Message
from tests.ledger import LedgerTransport, RunCounter, claims_in_progress


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def dead_reasons(ledger: LedgerTransport) -> list[str]:
    return [m.attributes["taskorbit-dlq-reason"] for m in ledger.inner.dead_letters]


@pytest.fixture
def ledger() -> LedgerTransport:
    return LedgerTransport(orbit.MemoryTransport())


@pytest.fixture
def ordered_ledger() -> LedgerTransport:
    return LedgerTransport(orbit.MemoryTransport(ordered=True))


@pytest.fixture
def stop_after() -> Iterator[list[orbit.Orbit]]:
    apps: list[orbit.Orbit] = []
    yield apps
    for app in apps:
        app.stop(timeout=5.0)


def make_app(
    transport: orbit.Transport, stop_after: list[orbit.Orbit], **options: Any
) -> orbit.Orbit:
    options.setdefault("concurrency", 4)
    options.setdefault("ack_interval_s", 0.01)
    app = orbit.Orbit(transport, **options)
    stop_after.append(app)
    return app


# -- 1. ordering keys -------------------------------------------------------------


@pytest.mark.parametrize("local_delay_max", [30.0, 0.0], ids=["timer-wheel", "broker"])
def test_a_failed_ordered_message_runs_again_before_the_next_of_its_key(
    ordered_ledger: LedgerTransport, stop_after: list[orbit.Orbit], local_delay_max: float
) -> None:
    app = make_app(ordered_ledger, stop_after, local_delay_max=local_delay_max)
    runs: list[tuple[str, int]] = []

    def handle(name: str, ctx: orbit.Context) -> None:
        runs.append((name, ctx.attempt))
        if name == "a" and ctx.attempt == 1:
            raise RuntimeError("fails once")

    app.handle("t", handle, base_delay=0.05)
    app.start()
    app.publish("t", "a", ordering_key="k")
    app.publish("t", "b", ordering_key="k")
    assert ordered_ledger.wait_idle(10)
    assert runs == [("a", 1), ("a", 2), ("b", 1)]
    ordered_ledger.assert_clean(app)


def test_a_duplicate_waiting_for_its_twin_does_not_jam_its_ordering_key(
    ordered_ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    store = MemoryStore()
    app = make_app(ordered_ledger, stop_after, idempotency_store=store, duplicate_delay_s=0.05)
    twin_running, release_twin = threading.Event(), threading.Event()
    runs: list[str] = []

    def handle(name: str) -> None:
        runs.append(name)
        if name == "twin":
            twin_running.set()
            release_twin.wait(10)

    app.handle("t", handle)
    app.start()
    app.publish("t", "twin", ordering_key="a", idempotency_key="X")
    assert twin_running.wait(10)
    # Same idempotency key as the running twin, another ordering key: it waits
    # (holding key "b"), and the message behind it on "b" must still run.
    app.publish("t", "duplicate", ordering_key="b", idempotency_key="X")
    app.publish("t", "after", ordering_key="b")
    wait_for(lambda: app.stats()["duplicates"] >= 1)
    release_twin.set()
    assert ordered_ledger.wait_idle(10)
    assert runs == ["twin", "after"]
    ordered_ledger.assert_clean(app, store=store)


def test_messages_parked_behind_their_twin_are_claimed_when_they_run_not_before(
    ordered_ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    # Same idempotency key and same ordering key: each waits behind the one before
    # it, and must not bounce as a duplicate of it meanwhile (on SQS FIFO and ordered
    # Pub/Sub every bounce would count a delivery towards the broker's DLQ policy).
    store = MemoryStore()
    app = make_app(ordered_ledger, stop_after, idempotency_store=store, local_delay_max=0.0)
    runs: list[tuple[str, int]] = []

    def handle(name: str, ctx: orbit.Context) -> None:
        runs.append((name, ctx.attempt))
        raise RuntimeError("always")

    app.handle("t", handle, max_retries=1, base_delay=0.01)
    app.start()
    for name in ("first", "second", "third"):
        app.publish("t", name, ordering_key="k", idempotency_key="same")
    assert ordered_ledger.wait_idle(10)
    assert runs == [(n, a) for n in ("first", "second", "third") for a in (1, 2)]
    assert app.stats()["duplicates"] == 0
    ordered_ledger.assert_clean(app, store=store)


# -- 5 and 6. shutdown ------------------------------------------------------------


class SlowClaims(MemoryStore):
    """A store whose claim takes 20 ms: it widens the moment a runner holds a batch
    it took from the ring but has not placed yet."""

    def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
        time.sleep(0.02)
        return super().claim_many(keys, ttl_s)


@pytest.mark.parametrize("run", range(3))
def test_stop_while_runners_admit_batches_hands_every_message_back(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit], run: int
) -> None:
    store = SlowClaims()
    app = make_app(ledger, stop_after, concurrency=4, buffer_size=256, idempotency_store=store)
    app.handle("t", lambda n: time.sleep(0.001))
    app.start()
    for i in range(600):
        app.publish("t", i, idempotency_key=f"k{i}")
    wait_for(lambda: app.stats()["completed"] >= 20)
    assert app.stop(timeout=10.0)
    pending = ledger.inner.pending()
    assert pending["in_flight"] == 0
    assert ledger.inner.acked + pending["ready"] + pending["delayed"] == 600
    ledger.assert_clean(store=store)


def test_messages_handed_back_at_shutdown_keep_no_claim_and_no_attempt(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    store = MemoryStore()
    app = make_app(ledger, stop_after, concurrency=1, buffer_size=64, idempotency_store=store)
    started, release = threading.Event(), threading.Event()

    def work(n: int) -> None:
        started.set()
        release.wait(10)

    app.handle("t", work)
    app.start()
    for i in range(50):
        app.publish("t", i, idempotency_key=f"k{i}")
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    assert app.stop(timeout=5.0)
    assert claims_in_progress(store) == []
    ledger.assert_clean(store=store)
    # A restarted worker runs every one of them, none bounced as a duplicate, and
    # each at attempt 1: a hand-back uses no attempt.
    attempts: list[int] = []
    again = make_app(ledger, stop_after, idempotency_store=store)
    again.handle("t", lambda n, ctx: attempts.append(ctx.attempt))
    again.start()
    assert ledger.wait_idle(10)
    assert again.stats()["duplicates"] == 0
    assert len(attempts) == 49 and set(attempts) == {1}
    ledger.assert_clean(again, store=store)


def test_a_handler_that_finishes_after_the_shutdown_deadline_is_still_acked(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    app = make_app(ledger, stop_after)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(n: int) -> None:
        started.set()
        release.wait(10)
        finished.set()

    app.handle("t", slow)
    app.start()
    app.publish("t", 1)
    assert started.wait(10)
    assert app.stop(timeout=0.1) is False
    release.set()
    assert finished.wait(10)
    wait_for(lambda: ledger.inner.pending()["in_flight"] == 0)
    assert ledger.inner.acked == 1
    ledger.assert_clean()


def test_a_retry_waiting_in_the_timer_wheel_goes_back_owing_its_delay_and_next_attempt(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    app = make_app(ledger, stop_after)
    app.handle("t", lambda n: orbit.retry(delay=2.0))
    app.start()
    app.publish("t", 1)
    wait_for(lambda: app.stats()["retried"] == 1)
    stopped_at = time.time()
    assert app.stop(timeout=5.0)
    ledger.assert_clean()
    [(due, _, message)] = ledger.inner._delayed
    assert 1.5 < due - stopped_at <= 2.1
    assert message.attempt == 2


# -- 7. a message the dispatcher cannot admit ---------------------------------------


class Tampering(LedgerTransport):
    """Delivers what a buggy transport might: fields set on receive by ``tamper``."""

    def __init__(self, tamper: Callable[[Message], None]) -> None:
        super().__init__(orbit.MemoryTransport())
        self._tamper = tamper

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        got = super().receive(max_messages, timeout)
        for m in got:
            if m.body.startswith(b'"bad'):
                self._tamper(m)
        return got


@pytest.mark.parametrize("not_before", [float("inf"), float("nan"), float("-inf")])
def test_a_not_before_that_is_not_a_time_is_dead_lettered_and_the_worker_goes_on(
    stop_after: list[orbit.Orbit], not_before: float
) -> None:
    transport = Tampering(lambda m: setattr(m, "not_before", not_before))
    app = make_app(transport, stop_after)
    done: list[str] = []
    app.handle("t", done.append)
    app.start()
    app.publish("t", "bad")
    app.publish("t", "good")
    assert transport.wait_idle(10)
    app.publish("t", "later")
    assert transport.wait_idle(10)
    assert sorted(done) == ["good", "later"]
    [reason] = dead_reasons(transport)
    assert "is not a point in time" in reason
    transport.assert_clean(app)


def test_a_carried_attempt_below_one_is_dead_lettered(stop_after: list[orbit.Orbit]) -> None:
    transport = Tampering(lambda m: setattr(m, "attempt", 0))
    app = make_app(transport, stop_after)
    app.handle("t", lambda n: None)
    app.start()
    app.publish("t", "bad")
    assert transport.wait_idle(10)
    [reason] = dead_reasons(transport)
    assert reason == "malformed message: attempt 0 (attempts are numbered from 1)"
    transport.assert_clean(app)


def test_a_message_a_transport_marked_malformed_is_dead_lettered_with_its_reason(
    stop_after: list[orbit.Orbit],
) -> None:
    transport = Tampering(lambda m: setattr(m, "malformed", "field 'attempt' is 'abc'"))
    app = make_app(transport, stop_after)
    done: list[str] = []
    app.handle("t", done.append)
    app.start()
    app.publish_many("t", ["good", "bad", "good"])
    assert transport.wait_idle(10)
    assert done == ["good", "good"]
    assert dead_reasons(transport) == ["malformed message: field 'attempt' is 'abc'"]
    transport.assert_clean(app)


# -- 8. failures that used to escape the pipeline ------------------------------------


def test_deeply_nested_json_is_dead_lettered_with_the_reason(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    app = make_app(ledger, stop_after)
    app.handle("t", lambda payload: None)
    app.start()
    app.publish("t", b'{"a":' * 30_000 + b"1" + b"}" * 30_000)
    assert ledger.wait_idle(10)
    [reason] = dead_reasons(ledger)
    assert reason.startswith("decode failed: RecursionError")
    ledger.assert_clean(app)


def test_a_codec_that_raises_anything_dead_letters_the_message(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    class Broken:
        name = "broken"

        def encode(self, obj: Any) -> bytes:
            return repr(obj).encode()

        def decoder(self, tp: Any) -> Callable[[bytes], Any]:
            def decode(body: bytes) -> Any:
                raise KeyError("codec bug")

            return decode

    codec: Codec = Broken()
    app = make_app(ledger, stop_after)
    app.handle("t", lambda payload: None, codec=codec)
    app.start()
    app.publish("t", 1)
    assert ledger.wait_idle(10)
    assert dead_reasons(ledger) == ["decode failed: KeyError: 'codec bug'"]
    ledger.assert_clean(app)


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_handler_raising_a_base_exception_is_retried_then_dead_lettered(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit], error: BaseException
) -> None:
    store = MemoryStore()
    app = make_app(ledger, stop_after, idempotency_store=store)
    runs = RunCounter()

    def handle(n: int, ctx: orbit.Context) -> None:
        runs.ran(n, ctx.attempt)
        raise error

    app.handle("t", handle, max_retries=2, base_delay=0.01)
    app.start()
    app.publish("t", 1, idempotency_key="k", ordering_key="o")
    assert ledger.wait_idle(10)
    assert runs.attempts == {1: [1, 2, 3]}
    [reason] = dead_reasons(ledger)
    assert reason.startswith(f"gave up after 3 attempts (max_retries=2): {type(error).__name__}")
    assert app.stats()["errors"] == 3
    ledger.assert_clean(app, store=store, runs=runs, max_runs=3)


def test_a_retry_policy_that_raises_still_settles_the_message(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    class Broken(orbit.ExponentialBackoff):
        def delay(self, attempt: int, rng: Any = None) -> float:
            raise ZeroDivisionError("policy bug")

    app = make_app(ledger, stop_after)
    app.handle("t", lambda n: 1 / 0, retry_policy=Broken())
    app.start()
    app.publish("t", 1)
    wait_for(lambda: ledger.settlements()["nack"] == 1)
    assert ledger.inner.pending() == {"ready": 0, "delayed": 1, "in_flight": 0}
    assert ledger.inner._delayed[0][2].attempt == 2  # the failed run counts
    ledger.assert_clean(app)


# -- 11. async handlers --------------------------------------------------------------


def test_an_async_handler_is_refused_at_registration() -> None:
    app = orbit.Orbit()

    async def handler(n: int) -> None: ...

    class AsyncCallable:
        async def __call__(self, n: int) -> None: ...

    for fn in (handler, AsyncCallable()):
        with pytest.raises(orbit.ConfigurationError, match="is an async function"):
            app.handle("t", fn)
    assert app.tasks == {}


def test_a_sync_handler_that_returns_a_coroutine_is_dead_lettered_not_acked(
    ledger: LedgerTransport, stop_after: list[orbit.Orbit]
) -> None:
    async def work(n: int) -> None: ...

    app = make_app(ledger, stop_after)
    app.handle("t", lambda n: work(n))
    app.start()
    app.publish("t", 1)
    assert ledger.wait_idle(10)
    [reason] = dead_reasons(ledger)
    assert "returned coroutine instead of running" in reason
    ledger.assert_clean(app)


# -- smaller ones ---------------------------------------------------------------------


def test_errors_are_counted(ledger: LedgerTransport, stop_after: list[orbit.Orbit]) -> None:
    app = make_app(ledger, stop_after)
    app.handle("t", lambda n: 1 / 0, max_retries=1, base_delay=0.01)
    app.start()
    app.publish("t", 1)
    assert ledger.wait_idle(10)
    assert app.stats()["errors"] == 2
    ledger.assert_clean(app)
