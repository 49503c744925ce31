"""The worker runtime end to end on the in-memory transport."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from typing import Any, TypedDict

import msgspec
import pytest

import taskorbit as orbit
from tests.waiting import wait_for


class Email(msgspec.Struct):
    to: str
    subject: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Order(TypedDict):
    id: int


def dead_reasons(transport: orbit.MemoryTransport) -> dict[str, str]:
    return {m.topic: m.attributes["taskorbit-dlq-reason"] for m in transport.dead_letters}


def test_typed_handlers_receive_decoded_payloads(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    got: dict[str, Any] = {}
    app.handle("email", lambda e: got.__setitem__("email", e), max_retries=0)

    @app.task("point")
    def point(p: Point) -> None:
        got["point"] = p

    @app.task("order")
    def order(o: Order) -> None:
        got["order"] = o

    @app.task("raw")
    def raw(body: bytes) -> None:
        got["raw"] = body

    @app.task("email.typed")
    def email(e: Email) -> None:
        got["email.typed"] = e

    app.start()
    point.delay(Point(1, 2))
    order.delay({"id": 7})
    raw.delay(b"\x00\xffbytes")
    email.delay(Email(to="a@b.c", subject="hi"))
    assert transport.wait_idle(10)
    assert got["point"] == Point(1, 2)
    assert got["order"] == {"id": 7}
    assert got["raw"] == b"\x00\xffbytes"
    assert got["email.typed"] == Email(to="a@b.c", subject="hi")


def test_retries_reach_the_dlq_after_max_retries_with_attempt_numbers(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    attempts: list[int] = []

    @app.task("flaky", max_retries=3, base_delay=0.01)
    def flaky(n: int, ctx: orbit.Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("always fails")

    app.start()
    flaky.delay(1)
    assert transport.wait_idle(10)
    assert attempts == [1, 2, 3, 4]
    [dead] = transport.dead_letters
    assert dead.attributes["taskorbit-dlq-attempts"] == "4"
    assert "gave up after 4 attempts" in dead.attributes["taskorbit-dlq-reason"]
    assert "RuntimeError: always fails" in dead.attributes["taskorbit-dlq-reason"]
    assert app.stats()["retried"] == 3


def test_handler_that_fails_twice_then_succeeds_is_acked(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    @app.task("twice", base_delay=0.01)
    def twice(n: int, ctx: orbit.Context) -> None:
        if ctx.attempt < 3:
            raise ConnectionError("busy")

    app.start()
    twice.delay(1)
    assert transport.wait_idle(10)
    assert transport.dead_letters == []
    assert app.stats()["completed"] == 1
    assert transport.acked == 1


def test_explicit_results_retry_with_delay_and_dead_letter(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    runs: list[float] = []

    @app.task("later")
    def later(n: int, ctx: orbit.Context) -> orbit.Result | None:
        runs.append(time.monotonic())
        return orbit.retry(delay=0.3) if ctx.attempt == 1 else None

    @app.task("refuse")
    def refuse(n: int) -> orbit.Result:
        return orbit.dead_letter("not for us")

    app.start()
    later.delay(1)
    refuse.delay(2)
    assert transport.wait_idle(10)
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 0.29  # not before the delay; how much after is the machine's
    assert dead_reasons(transport) == {"refuse": "not for us"}


def test_malformed_json_wrong_schema_and_unknown_topic_go_to_the_dlq_and_work_goes_on(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    done: list[str] = []

    @app.task("email")
    def email(e: Email) -> None:
        done.append(e.to)

    app.start()
    transport.publish([orbit.Message(topic="email", body=b"{not json")])
    transport.publish([orbit.Message(topic="email", body=b'{"to":"x@y.z"}')])  # no subject
    app.publish("nobody.listens", {"a": 1})
    email.delay(Email(to="ok@y.z", subject="fine"))
    assert transport.wait_idle(10)
    assert done == ["ok@y.z"]
    reasons = [m.attributes["taskorbit-dlq-reason"] for m in transport.dead_letters]
    assert len(reasons) == 3
    assert any("malformed JSON" in r for r in reasons), reasons
    assert any("subject" in r and "decode failed" in r for r in reasons), reasons
    assert any("unknown topic 'nobody.listens'" in r for r in reasons), reasons
    # Decode failures are never retried.
    assert all(m.attributes["taskorbit-dlq-attempts"] == "1" for m in transport.dead_letters)


def test_countdown_delays_the_first_run(app: orbit.Orbit, transport: orbit.MemoryTransport) -> None:
    ran_at: list[float] = []

    @app.task("eta")
    def eta(n: int) -> None:
        ran_at.append(time.time())

    app.start()
    published = time.time()
    eta.delay(1, countdown=0.5)
    assert transport.wait_idle(10)
    assert len(ran_at) == 1
    # Not before the countdown; the upper bound only allows for a loaded machine.
    assert 0.49 <= ran_at[0] - published < 3.0


def test_retry_delay_is_held_in_the_timer_wheel_and_honoured(
    app: orbit.Orbit, transport: orbit.MemoryTransport
) -> None:
    runs: list[float] = []

    @app.task("wheel")
    def wheel(n: int, ctx: orbit.Context) -> orbit.Result | None:
        runs.append(time.monotonic())
        return orbit.retry(delay=0.2) if ctx.attempt < 3 else None

    app.start()
    wheel.delay(1)
    assert transport.wait_idle(10)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert len(gaps) == 2
    # Not before the delay; the upper bound only allows for a loaded machine.
    assert all(0.19 <= g < 2.0 for g in gaps), gaps


def test_a_duplicate_of_a_done_key_is_acked_without_running(
    transport: orbit.MemoryTransport,
) -> None:
    store = orbit.MemoryStore()
    app = orbit.Orbit(transport, concurrency=4, idempotency_store=store, ack_interval_s=0.01)
    runs: list[int] = []
    app.handle("pay", lambda n: runs.append(n))
    with app:
        app.publish("pay", 1, idempotency_key="order-42")
        assert transport.wait_idle(10)
        app.publish("pay", 1, idempotency_key="order-42")
        assert transport.wait_idle(10)
    assert runs == [1]
    assert app.stats()["duplicates"] == 1
    assert transport.acked == 2


def test_a_duplicate_of_a_running_key_is_not_acked_until_its_twin_settles(
    transport: orbit.MemoryTransport,
) -> None:
    store = orbit.MemoryStore()
    app = orbit.Orbit(
        transport,
        concurrency=4,
        idempotency_store=store,
        duplicate_delay_s=0.1,
        ack_interval_s=0.01,
    )
    first_running = threading.Event()
    release_first = threading.Event()
    runs: list[int] = []

    def pay(n: int, ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            first_running.set()
            release_first.wait(10)
            raise RuntimeError("first copy fails")

    app.handle("pay", pay, base_delay=0.05)
    with app:
        app.publish("pay", 1, idempotency_key="k")
        assert first_running.wait(10)
        app.publish("pay", 1, idempotency_key="k")
        # Seen twice: the duplicate came, went back for duplicate_delay_s, and came
        # again, all while the first still ran. How often it comes back in that time
        # depends on the machine, so the count is waited for, not asserted.
        wait_for(lambda: app.stats()["duplicates"] >= 2, 10.0, "the duplicate to come back")
        assert transport.acked == 0
        release_first.set()
        assert transport.wait_idle(10)
    # The first copy failed, so the work was not done: it ran again and succeeded,
    # and the duplicate, finding the key done, was acked without running.
    assert len(runs) == 2
    assert transport.acked == 2
    assert transport.dead_letters == []


def test_a_hook_that_raises_does_not_stop_processing(transport: orbit.MemoryTransport) -> None:
    class Broken(orbit.Hooks):
        def on_receive(self, message: orbit.Message) -> None:
            raise RuntimeError("hook bug")

        def on_complete(self, message: orbit.Message, result: Any, duration_s: float) -> None:
            raise RuntimeError("hook bug")

    app = orbit.Orbit(transport, concurrency=2, hooks=[Broken()], ack_interval_s=0.01)
    done: list[int] = []
    app.handle("n", done.append)
    with app:
        app.publish_many("n", list(range(20)))
        assert transport.wait_idle(10)
    assert sorted(done) == list(range(20))


def test_concurrency_bounds_the_handlers_running_at_once(transport: orbit.MemoryTransport) -> None:
    app = orbit.Orbit(transport, concurrency=4, buffer_size=16, ack_interval_s=0.01)
    lock = threading.Lock()
    running = 0
    peak = 0

    def work(n: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)  # the handler's work: long enough for the others to pile up
        with lock:
            running -= 1

    app.handle("w", work)
    with app:
        app.publish_many("w", list(range(200)))
        assert transport.wait_idle(20)
    assert peak == 4


def test_a_slow_message_does_not_hold_back_the_ones_after_it(
    transport: orbit.MemoryTransport,
) -> None:
    app = orbit.Orbit(transport, concurrency=4, ack_interval_s=0.01)
    release = threading.Event()
    done: list[int] = []

    def work(n: int) -> None:
        if n == 0:
            release.wait(10)
        done.append(n)

    app.handle("w", work)
    with app:
        app.publish_many("w", list(range(50)))
        wait_for(lambda: len(done) == 49, 10.0, "all but the slow message")
        assert sorted(done) == list(range(1, 50))  # all but the slow one, while it still runs
        release.set()
        assert transport.wait_idle(10)
    assert sorted(done) == list(range(50))


def test_the_dispatcher_does_not_spin_when_idle(app: orbit.Orbit) -> None:
    app.handle("n", lambda n: None)
    app.start()
    runtime = app._runtime
    assert runtime is not None
    calls = 0
    ring = runtime.ring

    class CountingRing:
        def __getattr__(self, name: str) -> Any:
            return getattr(ring, name)

        def get_many(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return ring.get_many(*args, **kwargs)

    runtime.dispatcher._ring = CountingRing()  # type: ignore[assignment]
    # Letting time pass is the point: an idle dispatcher must not poll meanwhile.
    time.sleep(1.0)
    # It waits inside the ring, 0.25 s per call: four or five calls in that second, as
    # the phase falls, and a few more on a loaded machine. A spinning one would make
    # thousands, so this is a bound, not an exact count.
    assert calls <= 8


def test_stop_returns_messages_not_started_to_the_broker(transport: orbit.MemoryTransport) -> None:
    app = orbit.Orbit(transport, concurrency=1, buffer_size=8, ack_interval_s=0.01)
    started = threading.Event()
    release = threading.Event()
    done: list[int] = []

    def work(n: int) -> None:
        started.set()
        release.wait(10)
        done.append(n)

    app.handle("w", work)
    app.start()
    app.publish_many("w", list(range(30)))
    assert started.wait(10)
    threading.Timer(0.3, release.set).start()
    assert app.stop(timeout=5.0) is True
    assert len(done) == 1  # the one in flight finished
    pending = transport.pending()
    assert pending["in_flight"] == 0
    assert pending["ready"] + pending["delayed"] == 29  # nothing lost


def test_retries_waiting_in_the_timer_wheel_go_back_to_the_broker_at_stop(
    transport: orbit.MemoryTransport,
) -> None:
    app = orbit.Orbit(transport, concurrency=2, ack_interval_s=0.01)
    app.handle("w", lambda n: orbit.retry(delay=5.0))
    app.start()
    app.publish("w", 1)
    wait_for(lambda: app.stats()["retried"] == 1, 5.0, "the retry to wait in the timer wheel")
    assert app.stop(timeout=5.0)
    assert transport.pending() == {"ready": 0, "delayed": 1, "in_flight": 0}


def test_bad_arguments_raise_with_a_message_that_says_what_to_do() -> None:
    with pytest.raises(orbit.ConfigurationError, match="concurrency must be greater than 0"):
        orbit.Orbit(concurrency=0)
    with pytest.raises(orbit.ConfigurationError, match="overflow must be one of"):
        orbit.Orbit(overflow="explode")
    app = orbit.Orbit()
    app.handle("t", lambda n: None)
    with pytest.raises(orbit.ConfigurationError, match="already has a handler"):
        app.handle("t", lambda n: None)
    with pytest.raises(orbit.ConfigurationError, match="timezone-aware"):
        import datetime as dt

        app.publish("t", 1, eta=dt.datetime(2030, 1, 1))
