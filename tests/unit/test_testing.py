"""The test mode for users' own tasks (taskorbit.testing): TestRun, eager mode and
the pytest plugin."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

import taskorbit as orbit
from taskorbit.errors import ConfigurationError, DecodeError, TransportError
from taskorbit.idempotency import ClaimState
from taskorbit.testing import DrainLimitReached, Fate, Report, TestRun, make_context

pytest_plugins = ["pytester"]

PLUGIN = "taskorbit.testing.pytest_plugin"


class Email(msgspec.Struct):
    to: str


class Recorder(orbit.Hooks):
    """Every hook event as (event, topic, attempt)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def _add(self, event: str, message: orbit.Message | None) -> None:
        if message is not None:
            self.events.append((event, message.topic, message.attempt))

    def on_publish(self, message: orbit.Message) -> None:
        self._add("on_publish", message)

    def on_receive(self, message: orbit.Message) -> None:
        self._add("on_receive", message)

    def on_duplicate(self, message: orbit.Message) -> None:
        self._add("on_duplicate", message)

    def on_dispatch(self, message: orbit.Message) -> None:
        self._add("on_dispatch", message)

    def on_complete(self, message: orbit.Message, result: Any, duration_s: float) -> None:
        self._add("on_complete", message)

    def on_error(self, message: orbit.Message | None, error: BaseException) -> None:
        self._add("on_error", message)

    def on_retry(self, message: orbit.Message, delay_s: float, reason: str) -> None:
        self._add("on_retry", message)

    def on_dead_letter(self, message: orbit.Message, reason: str) -> None:
        self._add("on_dead_letter", message)

    def of(self, topic: str) -> list[tuple[str, int]]:
        return [(event, attempt) for event, t, attempt in self.events if t == topic]


def flaky_app(
    *, fails: int, max_retries: int = 10, hooks: Sequence[orbit.Hooks] = ()
) -> tuple[orbit.Orbit, list[int]]:
    """An app whose "email.send" fails ``fails`` times, then succeeds."""
    app = orbit.Orbit(orbit.MemoryTransport(), hooks=hooks)
    runs: list[int] = []

    @app.task("email.send", max_retries=max_retries)
    def send(msg: Email, ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        if ctx.attempt <= fails:
            raise ConnectionError(f"smtp down on attempt {ctx.attempt}")

    return app, runs


# -- drain: the real pipeline, delays skipped ------------------------------------------


def test_publishing_only_queues_and_drain_runs_what_was_queued() -> None:
    app = orbit.Orbit()
    got: list[Any] = []
    app.handle("email.send", got.append)
    with TestRun(app) as run:
        app.publish("email.send", Email(to="ada@example.com"))
        assert got == []  # queued, not run
        report = run.drain()
    assert got == [{"to": "ada@example.com"}]  # list.append is untyped: a dict
    assert report.fates == ["acked"]
    assert report[0].payload == {"to": "ada@example.com"}


def test_a_typed_handler_gets_its_struct() -> None:
    app = orbit.Orbit()
    got: list[Email] = []

    @app.task("email.send")
    def send(msg: Email) -> None:
        got.append(msg)

    with TestRun(app) as run:
        send.delay(Email(to="ada@example.com"))
        run.drain()
    assert got == [Email(to="ada@example.com")]


def test_three_retries_take_no_time_and_report_their_backoff() -> None:
    app, runs = flaky_app(fails=3)
    with TestRun(app) as run:
        started, before = time.perf_counter(), run.now
        app.tasks["email.send"].delay(Email(to="ada@example.com"))
        report = run.drain()
        elapsed = time.perf_counter() - started
    assert runs == [1, 2, 3, 4]
    assert report.fates == ["retried", "retried", "retried", "acked"]
    assert [d.attempt for d in report] == [1, 2, 3, 4]
    assert [d.delay for d in report.retried] == [1.0, 2.0, 4.0]  # the default backoff
    assert report.retried[0].reason == "ConnectionError: smtp down on attempt 1"
    assert isinstance(report.retried[0].error, ConnectionError)
    assert run.now - before == pytest.approx(7.0)  # the clock jumped over the backoff
    assert [d.at - before for d in report] == pytest.approx([0.0, 1.0, 3.0, 7.0])
    assert elapsed < 0.5


def test_jitter_true_draws_the_jitter_as_a_worker_does() -> None:
    app, _ = flaky_app(fails=5)
    with TestRun(app, jitter=True) as run:
        app.tasks["email.send"].delay(Email(to="a@b.c"))
        delays = [d.delay for d in run.drain().retried]
    nominal = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays != nominal
    assert all(0.9 * n <= d <= 1.1 * n for d, n in zip(delays, nominal, strict=True))


def test_a_handler_runs_at_most_max_retries_plus_one_times_then_is_dead_lettered() -> None:
    app, runs = flaky_app(fails=100, max_retries=2)
    with TestRun(app) as run:
        app.tasks["email.send"].delay(Email(to="a@b.c"))
        report = run.drain()
    assert runs == [1, 2, 3]
    assert report.fates == ["retried", "retried", "dead_lettered"]
    [letter] = run.dead_letters
    assert letter.topic == "email.send"
    assert letter.attempts == 3
    assert letter.reason == (
        "gave up after 3 attempts (max_retries=2): ConnectionError: smtp down on attempt 3"
    )
    assert run.idle


def test_results_choose_their_own_retry_delay_and_dead_letter_reason() -> None:
    app = orbit.Orbit()

    @app.task("rate_limited")
    def rate_limited(n: int, ctx: orbit.Context) -> orbit.Result | None:
        return orbit.retry(delay=90, reason="429") if ctx.attempt == 1 else None

    @app.task("refund")
    def refund(n: int) -> orbit.Result:
        return orbit.dead_letter("refunds are paused")

    with TestRun(app) as run:
        rate_limited.delay(1)
        refund.delay(2)
        report = run.drain()
    assert [(d.topic, d.fate, d.delay) for d in report] == [
        ("rate_limited", "retried", 90.0),
        ("refund", "dead_lettered", 0.0),
        ("rate_limited", "acked", 0.0),
    ]
    assert [(dl.topic, dl.reason, dl.attempts) for dl in run.dead_letters] == [
        ("refund", "refunds are paused", 1)
    ]


def test_unknown_topics_and_undecodable_payloads_are_dead_lettered_with_the_reason() -> None:
    app = orbit.Orbit()

    @app.task("email.send")
    def send(msg: Email) -> None: ...

    with TestRun(app) as run:
        # Orbit.publish refuses a payload its handler cannot decode: this one comes
        # from a producer elsewhere, straight to the (test) broker.
        run.transport.publish([orbit.Message("email.send", b'{"to":42}')])
        app.publish("nobody.listens", {"x": 1})
        report = run.drain()
    assert report.fates == ["dead_lettered", "dead_lettered"]
    reasons = [dl.reason for dl in run.dead_letters]
    assert reasons[0].startswith("decode failed: payload does not match Email")
    assert reasons[1] == "unknown topic 'nobody.listens'; registered topics: email.send"
    assert report[0].payload == b'{"to":42}'  # not decodable: the raw body
    assert report[1].payload == {"x": 1}


def test_countdown_and_eta_wait_for_the_clock() -> None:
    app = orbit.Orbit()
    ran: list[str] = []
    app.handle("t", ran.append)
    with TestRun(app) as run:
        in_a_minute = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)
        app.publish("t", "in 30 s", countdown=30)
        app.publish("t", "at an eta 60 s away", eta=in_a_minute)
        app.publish("t", "now")
        assert [(q.payload, q.due_in) for q in run.queued] == [
            ("now", 0.0),
            ("in 30 s", 30.0),
            ("at an eta 60 s away", 60.0),
        ]
        assert run.advance(0).payloads == ["now"]
        assert run.advance(29.9).payloads == []
        assert [q.due_in for q in run.queued] == pytest.approx([0.1, 30.1])
        assert run.advance(0.1).payloads == ["in 30 s"]
        assert run.drain().payloads == ["at an eta 60 s away"]
    assert ran == ["now", "in 30 s", "at an eta 60 s away"]


def test_advance_runs_the_retries_that_fall_due_within_the_window() -> None:
    app, runs = flaky_app(fails=3)  # runs at 0 s, 1 s, 3 s and 7 s
    with TestRun(app) as run:
        start = run.now
        app.tasks["email.send"].delay(Email(to="a@b.c"))
        assert run.advance(2.5).fates == ["retried", "retried"]
        assert run.now == start + 2.5
        assert run.advance(0.5).fates == ["retried"]  # due exactly at the window's end
        assert run.advance(3.5).fates == []
        assert run.advance(0.5).fates == ["acked"]
    assert runs == [1, 2, 3, 4]


def test_messages_a_handler_publishes_run_in_the_same_drain_after_it() -> None:
    app = orbit.Orbit()
    order: list[str] = []

    @app.task("order.placed")
    def placed(n: int) -> None:
        order.append(f"placed {n}")
        receipt.delay(n)
        order.append(f"placed {n} returns")

    @app.task("order.receipt")
    def receipt(n: int) -> None:
        order.append(f"receipt {n}")

    with TestRun(app) as run:
        placed.delay(7)
        report = run.drain()
    assert order == ["placed 7", "placed 7 returns", "receipt 7"]
    assert [d.topic for d in report] == ["order.placed", "order.receipt"]


def test_a_malformed_eta_is_dead_lettered_as_the_dispatcher_does() -> None:
    app = orbit.Orbit()
    app.handle("t", lambda p: None)
    with TestRun(app) as run:
        app.publish("t", 1, eta=float("inf"))
        assert run.drain().fates == ["dead_lettered"]
    assert run.dead_letters[0].reason == (
        "cannot admit the message: its not-before inf is not a point in time"
    )


def test_a_handler_that_publishes_forever_ends_the_drain_with_an_error() -> None:
    app = orbit.Orbit()

    @app.task("loop")
    def loop(n: int) -> None:
        loop.delay(n + 1)

    with TestRun(app, max_deliveries=50) as run:
        loop.delay(0)
        with pytest.raises(DrainLimitReached, match="50 deliveries and still not idle"):
            run.drain()
        assert len(run.report) == 50
        assert len(run.queued) == 1


class BrokenPolicy:
    """A retry policy whose delay() has a bug."""

    max_retries = 2

    def should_retry(self, attempt: int) -> bool:
        return attempt <= self.max_retries

    def delay(self, attempt: int, rng: Any = None) -> float:
        raise ZeroDivisionError("a bug in the policy")


@pytest.mark.parametrize("raise_errors", [False, True])
def test_a_failure_outside_the_pipeline_still_settles_the_message(raise_errors: bool) -> None:
    app = orbit.Orbit()
    runs: list[int] = []

    @app.task("t", retry_policy=BrokenPolicy())
    def t(n: int, ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        raise ValueError("the handler fails")

    with TestRun(app, raise_errors=raise_errors) as run:
        t.delay(1)
        if raise_errors:
            with pytest.raises(ZeroDivisionError):
                run.drain()
            assert run.report.fates == ["dead_lettered"]
        else:  # as a worker does: handed back for 5 s, counted as an attempt
            report = run.drain()
            assert report.fates == ["retried", "retried", "dead_lettered"]
            assert [d.delay for d in report.retried] == [5.0, 5.0]
            assert report[0].reason == "unexpected failure: ZeroDivisionError: a bug in the policy"
        assert run.idle and run.stats()["in_flight"] == 0
    assert runs == ([1] if raise_errors else [1, 2, 3])


# -- the settlement invariant ---------------------------------------------------------


def test_every_message_ends_acked_or_dead_lettered_and_nothing_is_left_behind() -> None:
    store = orbit.MemoryStore()
    app = orbit.Orbit(idempotency_store=store)
    runs: dict[int, int] = {}

    @app.task("work", max_retries=3, base_delay=0.5)
    def work(n: int, ctx: orbit.Context) -> orbit.Result | None:
        runs[n] = runs.get(n, 0) + 1
        kind = n % 6
        if kind == 1:
            raise ValueError("always")
        if kind == 2 and ctx.attempt < 3:
            raise ValueError("twice")
        if kind == 3:
            return orbit.retry(delay=40)  # held by the broker, not a timer wheel
        if kind == 4:
            return orbit.dead_letter("no")
        if kind == 5:
            raise KeyboardInterrupt  # a handler's, not the test's
        return None

    with TestRun(app) as run:
        for n in range(60):
            work.delay(n, idempotency_key=f"k{n % 40}")  # 20 duplicates
        report = run.drain()
        assert run.idle and run.queued == []
        assert run.stats()["in_flight"] == 0 and run.stats()["claims_held"] == 0
    last: dict[str, Fate] = {}
    for d in report:
        last[d.id] = d.fate
    assert len(last) == 60
    assert set(last.values()) == {Fate.ACKED, Fate.DEAD_LETTERED, Fate.DUPLICATE}
    assert max(runs.values()) == 3 + 1  # max_retries + 1, never more
    ran = [d for d in report if d.fate not in (Fate.DUPLICATE, Fate.DEFERRED)]
    assert sum(runs.values()) == len(ran)


# -- hooks fire as in production -------------------------------------------------------


def scenario(app: orbit.Orbit) -> None:
    """Four topics, one message each: a flaky one, a hopeless one, an undecodable
    payload and an unknown topic."""

    @app.task("flaky", max_retries=5, base_delay=0.01)
    def flaky(n: int, ctx: orbit.Context) -> None:
        if ctx.attempt < 3:
            raise ConnectionError("down")

    @app.task("hopeless", max_retries=1, base_delay=0.01)
    def hopeless(n: int) -> None:
        raise ValueError("never")

    @app.task("typed")
    def typed(msg: Email) -> None: ...

    for topic in ("flaky", "hopeless", "unknown"):
        app.publish(topic, 1)
    app.transport.publish([orbit.Message("typed", b"1")])  # from a producer elsewhere


def test_hooks_fire_as_a_real_worker_fires_them() -> None:
    real, test = Recorder(), Recorder()
    transport = orbit.MemoryTransport()
    worker_app = orbit.Orbit(
        transport, hooks=[real], concurrency=2, ack_interval_s=0.01, poll_timeout=0.05
    )
    scenario(worker_app)
    with worker_app:
        assert transport.wait_idle(10)
    test_app = orbit.Orbit(hooks=[test])
    with TestRun(test_app) as run:
        scenario(test_app)
        run.drain()
    for topic in ("flaky", "hopeless", "typed", "unknown"):
        assert test.of(topic) == real.of(topic), topic
    assert test.of("flaky") == [
        ("on_publish", 1),
        ("on_receive", 1),  # once: a worker keeps a short retry in its timer wheel
        ("on_dispatch", 1),
        ("on_error", 1),
        ("on_retry", 1),
        ("on_dispatch", 2),
        ("on_error", 2),
        ("on_retry", 2),
        ("on_dispatch", 3),
        ("on_complete", 3),
    ]


def test_a_retry_a_worker_hands_to_the_broker_is_received_again() -> None:
    hooks = Recorder()
    app = orbit.Orbit(hooks=[hooks])  # local_delay_max is 30 s

    @app.task("t")
    def t(n: int, ctx: orbit.Context) -> orbit.Result | None:
        return orbit.retry(delay=31) if ctx.attempt == 1 else None

    with TestRun(app) as run:
        t.delay(1)
        run.drain()
    assert [e for e, _ in hooks.of("t")].count("on_receive") == 2
    assert run.stats()["received"] == 2


# -- idempotency ----------------------------------------------------------------------


def test_a_duplicate_of_a_done_key_is_acked_without_running() -> None:
    app = orbit.Orbit(idempotency_store=orbit.MemoryStore())
    charged: list[int] = []

    @app.task("charge", idempotency_key=lambda order: f"order-{order}")
    def charge(order: int) -> None:
        charged.append(order)

    with TestRun(app) as run:
        for order in (42, 42, 43):
            charge.delay(order)
        report = run.drain()
    assert charged == [42, 43]
    assert report.fates == ["acked", "duplicate", "acked"]


def test_a_failed_run_releases_its_claim_so_the_retry_runs() -> None:
    app = orbit.Orbit(idempotency_store=orbit.MemoryStore())
    app.handle("t", lambda p, ctx: orbit.retry(delay=1) if ctx.attempt == 1 else None)
    with TestRun(app) as run:
        app.publish("t", 1, idempotency_key="once")
        assert run.drain().fates == ["retried", "acked"]
    assert run.idempotency_store is not None
    assert run.idempotency_store.claim_many(["once"], 60) == [ClaimState.DONE]


def test_each_run_claims_in_a_fresh_store_and_leaves_the_apps_alone() -> None:
    store = orbit.MemoryStore()
    app = orbit.Orbit(idempotency_store=store)
    app.handle("t", lambda p: None)
    for _ in range(2):  # two tests in a row: the key of the first does not leak
        with TestRun(app) as run:
            app.publish("t", 1, idempotency_key="k")
            assert run.drain().fates == ["acked"]
    assert len(store) == 0
    with TestRun(orbit.Orbit()) as run:
        assert run.idempotency_store is None  # no store, no idempotency: as the app


def test_done_keys_expire_on_the_runs_clock() -> None:
    app = orbit.Orbit(idempotency_store=orbit.MemoryStore(), idempotency_ttl_s=3600)
    app.handle("t", lambda p: None)
    with TestRun(app) as run:
        app.publish("t", 1, idempotency_key="k")
        app.publish("t", 1, idempotency_key="k", countdown=3599)
        app.publish("t", 1, idempotency_key="k", countdown=3601)
        assert run.drain().fates == ["acked", "duplicate", "acked"]


def test_a_key_in_progress_elsewhere_is_deferred_without_using_an_attempt() -> None:
    store = orbit.MemoryStore()
    store.claim_many(["busy"], 600)  # another worker is running it
    app = orbit.Orbit(idempotency_store=store)
    app.handle("t", lambda p: None)
    with TestRun(app, idempotency_store=store) as run:
        app.publish("t", 1, idempotency_key="busy")
        report = run.advance(0)
        assert report.fates == ["deferred"]
        assert report[0].delay == app.duplicate_delay_s
        [queued] = run.queued
        assert (queued.attempt, queued.due_in) == (1, app.duplicate_delay_s)
        store.release("busy")  # the other worker failed
        assert run.drain().fates == ["acked"]


def test_a_failing_store_defers_the_message_without_using_an_attempt() -> None:
    class FlakyStore(orbit.MemoryStore):
        failures = 1

        def claim_many(self, keys: Sequence[str], ttl_s: float) -> list[ClaimState]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("store down")
            return super().claim_many(keys, ttl_s)

    app = orbit.Orbit(idempotency_store=orbit.MemoryStore())
    app.handle("t", lambda p: None)
    with TestRun(app, idempotency_store=FlakyStore()) as run:
        app.publish("t", 1, idempotency_key="k")
        report = run.drain()
    assert report.fates == ["deferred", "acked"]
    assert [d.attempt for d in report] == [1, 1]
    assert report[0].reason == "the idempotency store failed: ConnectionError: store down"


# -- eager mode and raise_errors ------------------------------------------------------


def test_eager_delay_runs_the_handler_and_its_retries_before_returning() -> None:
    app, runs = flaky_app(fails=2)
    with TestRun(app, eager=True) as run:
        app.tasks["email.send"].delay(Email(to="a@b.c"))
        assert runs == [1, 2, 3]
        assert run.report.fates == ["retried", "retried", "acked"]
        assert run.idle


def test_eager_runs_what_a_handler_publishes_after_that_handler_returns() -> None:
    app = orbit.Orbit()
    order: list[str] = []

    @app.task("parent")
    def parent(n: int) -> None:
        child.delay(n)
        order.append("parent returns")

    @app.task("child")
    def child(n: int) -> None:
        order.append("child")

    with TestRun(app, eager=True):
        parent.delay(1)
        assert order == ["parent returns", "child"]


def test_raise_errors_propagates_the_handlers_exception_from_delay_when_eager() -> None:
    app, runs = flaky_app(fails=1)
    with TestRun(app, eager=True, raise_errors=True) as run:
        with pytest.raises(ConnectionError, match="smtp down on attempt 1"):
            app.tasks["email.send"].delay(Email(to="a@b.c"))
        assert runs == [1]  # not retried
        assert run.idle  # settled all the same: dead-lettered
        [letter] = run.dead_letters
        assert letter.attempts == 1
        assert letter.reason.startswith("raised to the test (raise_errors=True): ConnectionError")


def test_raise_errors_propagates_from_drain_and_the_rest_stays_queued() -> None:
    app = orbit.Orbit()

    @app.task("typed")
    def typed(msg: Email) -> None: ...

    with TestRun(app, raise_errors=True) as run:
        run.transport.publish([orbit.Message("typed", b'{"to":1}')])
        typed.delay(Email(to="fine"))
        with pytest.raises(DecodeError, match="payload does not match Email"):
            run.drain()
        assert run.report.fates == ["dead_lettered"]
        assert len(run.queued) == 1
        assert run.drain().fates == ["acked"]


def test_raise_errors_does_not_raise_for_results() -> None:
    app = orbit.Orbit()
    app.handle("t", lambda p: orbit.dead_letter("by choice"))
    with TestRun(app, eager=True, raise_errors=True) as run:
        app.publish("t", 1)
    assert run.report.fates == ["dead_lettered"]


# -- entering and leaving -------------------------------------------------------------


def test_leaving_restores_the_app_exactly_even_after_an_exception() -> None:
    transport = orbit.MemoryTransport()
    hooks = Recorder()
    app = orbit.Orbit(transport, hooks=[hooks])
    app.handle("t", lambda p: None)
    hook_set, tasks = app.hooks, dict(app.tasks)
    with pytest.raises(RuntimeError, match="in the test"), TestRun(app):
        assert app.transport is not transport
        app.publish("t", 1)
        raise RuntimeError("in the test")
    assert app.transport is transport
    assert app.hooks is hook_set and len(app.hooks) == 1
    assert app.tasks == tasks
    assert transport.published == 0  # nothing leaked into the real transport
    app.publish("t", 2)
    assert transport.published == 1


def test_a_test_run_refuses_what_it_cannot_do() -> None:
    app = orbit.Orbit()
    run = TestRun(app)
    with pytest.raises(ConfigurationError, match="context manager"):
        run.drain()
    with run:
        with pytest.raises(ConfigurationError, match="inside another TestRun"), TestRun(app):
            pass
        with pytest.raises(ConfigurationError, match="entered once"), run:
            pass
    with pytest.raises(ConfigurationError, match="context manager"):
        run.drain()
    with pytest.raises(ConfigurationError, match="max_deliveries"):
        TestRun(app, max_deliveries=0)
    with pytest.raises(ConfigurationError, match=r"needs a taskorbit\.Orbit"):
        TestRun(object())  # type: ignore[arg-type]
    with TestRun(app) as run, pytest.raises(ConfigurationError, match="advance"):
        run.advance(-1)


def test_a_drain_from_inside_a_handler_is_refused_and_the_message_still_settles() -> None:
    app = orbit.Orbit()
    with TestRun(app) as run:
        app.handle("t", lambda p: run.drain(), max_retries=0)
        app.publish("t", 1)
        report = run.drain()
    assert report.fates == ["dead_lettered"]
    assert isinstance(report[0].error, ConfigurationError)


def test_a_running_worker_is_refused_and_the_test_transport_cannot_be_received_from() -> None:
    app = orbit.Orbit(orbit.MemoryTransport(), poll_timeout=0.05)
    with app, pytest.raises(ConfigurationError, match="worker is running"), TestRun(app):
        pass
    with TestRun(app) as run, pytest.raises(TransportError, match=r"run\.drain\(\)"):
        run.transport.receive(1, 0.0)


def test_a_framework_extension_with_an_orbit_attribute_is_accepted() -> None:
    class Extension:
        def __init__(self) -> None:
            self.orbit = orbit.Orbit()

    extension = Extension()
    with TestRun(extension) as run:
        assert run.app is extension.orbit


@pytest.mark.parametrize(
    ("ordered", "expected"), [(True, ["a1", "a2", "b1"]), (False, ["a1", "b1", "a2"])]
)
def test_an_ordered_app_keeps_each_keys_order_behind_a_retry(
    ordered: bool, expected: list[str]
) -> None:
    app = orbit.Orbit(orbit.MemoryTransport(ordered=ordered))
    runs: list[str] = []

    @app.task("t")
    def t(name: str, ctx: orbit.Context) -> orbit.Result | None:
        runs.append(f"{name}{ctx.attempt}")
        return orbit.retry(delay=5) if name == "a" and ctx.attempt == 1 else None

    with TestRun(app) as run:
        t.delay("a", ordering_key="k")
        t.delay("b", ordering_key="k")
        run.drain()
    assert runs == expected


# -- the report and the helpers -------------------------------------------------------


def test_a_report_filters_by_fate_and_topic() -> None:
    app = orbit.Orbit()
    app.handle("ok", lambda p: None)
    app.handle("no", lambda p: orbit.dead_letter("no"))
    with TestRun(app) as run:
        for topic in ("ok", "no", "ok"):
            app.publish(topic, topic)
        report = run.drain()
    assert len(report) == 3 and isinstance(report[1:], Report)
    assert report.for_topic("ok").payloads == ["ok", "ok"]
    assert [d.topic for d in report.dead_lettered] == ["no"]
    assert report.of("acked") == report.acked
    assert str(Fate.ACKED) == "acked"
    assert "no #1 dead_lettered" in repr(report)
    assert run.report.fates == report.fates


def test_make_context_lets_a_handler_be_called_directly() -> None:
    app = orbit.Orbit()

    @app.task("t")
    def t(n: int, ctx: orbit.Context) -> orbit.Result | None:
        return orbit.retry() if ctx.attempt < 3 and not ctx.cancelled else None

    assert t(1, make_context("t", attempt=1)) == orbit.retry()
    assert t(1, make_context("t", attempt=3)) is None
    ctx = make_context("t", attributes={"IdempotencyKey": "k"}, cancelled=True)
    assert (ctx.topic, ctx.attributes, ctx.cancelled) == ("t", {"IdempotencyKey": "k"}, True)
    assert ctx.deadline is not None


# -- the pytest plugin ----------------------------------------------------------------


def plugin_args() -> list[str]:
    """``-p`` for the plugin unless the ``pytest11`` entry point loads it already
    (both at once make pytest refuse the second registration); and without the
    plugins these runs do not need (hypothesis's alone costs 1.7 s per run)."""
    installed = any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))
    quiet = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark"]
    return quiet if installed else [*quiet, "-p", PLUGIN]


TASKS = """
import taskorbit as orbit

app = orbit.Orbit(orbit.MemoryTransport())

@app.task("email.send", max_retries=2)
def send(to: str, ctx: orbit.Context) -> None:
    if to.endswith("@down.example"):
        raise ConnectionError("smtp down")
"""


def test_the_fixture_runs_the_app_of_the_taskorbit_app_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS)
    pytester.makeconftest(
        """
        import pytest, tasks

        @pytest.fixture
        def taskorbit_app():
            return tasks.app
        """
    )
    pytester.makepyfile(
        test_it="""
        import pytest, tasks

        def test_drain(taskorbit_run):
            tasks.send.delay("ada@down.example")
            report = taskorbit_run.drain()
            assert report.fates == ["retried", "retried", "dead_lettered"]
            assert [d.delay for d in report.retried] == [1.0, 2.0]
            assert taskorbit_run.dead_letters[0].attempts == 3

        @pytest.mark.taskorbit(eager=True, raise_errors=True)
        def test_eager(taskorbit_run):
            with pytest.raises(ConnectionError):
                tasks.send.delay("ada@down.example")
            tasks.send.delay("ada@up.example")
            assert taskorbit_run.report.fates == ["dead_lettered", "acked"]

        def test_the_app_is_restored_between_tests():
            assert tasks.app.transport.name == "memory"
        """
    )
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=3)


def test_the_ini_option_names_the_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tasks=TASKS)
    pytester.makeini("[pytest]\ntaskorbit_app = tasks:app\n")
    pytester.makepyfile(
        test_it="""
        import tasks

        def test_it(taskorbit_run):
            assert taskorbit_run.app is tasks.app
        """
    )
    pytester.syspathinsert()
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)


def test_the_factory_runs_any_app_and_leaves_every_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_it="""
        import taskorbit as orbit

        first, second = orbit.Orbit(), orbit.Orbit()
        transports = (first.transport, second.transport)

        def test_two_apps(taskorbit_run_factory):
            a = taskorbit_run_factory(first, eager=True)
            b = taskorbit_run_factory(second)
            assert a.eager and not b.eager
            assert first.transport is a.transport and second.transport is b.transport

        def test_left():
            assert (first.transport, second.transport) == transports
        """
    )
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=2)


def test_without_an_app_or_with_a_bad_marker_the_fixture_says_what_to_do(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_no_app="""
        def test_no_app(taskorbit_run):
            pass
        """,
        test_bad_marker="""
        import pytest
        import taskorbit

        @pytest.fixture
        def taskorbit_app():
            return taskorbit.Orbit()

        @pytest.mark.taskorbit(True, eagerly=True)
        def test_bad_marker(taskorbit_run):
            pass
        """,
    )
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*define a fixture named taskorbit_app*",
            "*@pytest.mark.taskorbit takes keyword options among eager, raise_errors, jitter, "
            "idempotency_store, max_deliveries; got True, eagerly=",
        ]
    )
