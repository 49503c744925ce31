"""The worker runtime end to end on Pub/Sub: leases, retries, the DLQ topic,
ordering keys and shutdown, against the emulator."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.transports.pubsub import PubSubTransport
from tests.contract import receive_until
from tests.integration.pubsub.conftest import (
    PubSubAdmin,
    Resources,
    drain,
    require_emulator,
)
from tests.servers.pubsub import PubSubServer
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def make_app() -> Iterator[Callable[..., orbit.Orbit]]:
    apps: list[orbit.Orbit] = []

    def make(transport: PubSubTransport, **options: Any) -> orbit.Orbit:
        options.setdefault("poll_timeout", 0.5)
        options.setdefault("shutdown_timeout", 10.0)
        apps.append(orbit.Orbit(transport, **options))
        return apps[-1]

    yield make
    for app in apps:
        app.stop(timeout=5.0)


def test_a_handler_longer_than_the_ack_deadline_runs_once(
    pubsub: PubSubAdmin, make_app: Callable[..., orbit.Orbit]
) -> None:
    res = pubsub.resources(ack_deadline_s=10)
    app = make_app(pubsub.transport(res, ack_deadline_s=10), concurrency=4)
    runs: list[str] = []

    @app.task("slow")
    def slow(n: int) -> None:
        runs.append(f"start {n}")
        time.sleep(25.0)  # two and a half ack deadlines of work

    app.start()
    slow.delay(1)
    wait_for(lambda: app.stats()["completed"] == 1, 40.0, "the slow handler")
    app.stop(timeout=10.0)
    assert runs == ["start 1"]
    # Acked, not merely extended: a fresh consumer finds nothing.
    assert receive_until(pubsub.transport(res), 1, timeout=2.0) == []


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
def test_a_poison_message_lands_in_the_dlq_topic_with_its_attempt_count(
    pubsub: PubSubAdmin,
    pubsub_emulator: PubSubServer,
    make_app: Callable[..., orbit.Orbit],
    policy: bool,
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=20)
    # local_delay_max=0 sends every retry back through Pub/Sub, so the count is the
    # broker's (or the attribute's), not the worker's memory.
    app = make_app(pubsub.transport(res, dlq_topic=res.dlq_topic), local_delay_max=0.0)
    runs: list[int] = []

    @app.task("poison", max_retries=2, base_delay=0.05)
    def poison(n: int, ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError("always fails")

    app.start()
    poison.delay(7)
    dead = drain(pubsub.dead_letter_reader(res), expect=1, timeout=30.0)
    assert [m.topic for m in dead] == ["poison"]
    assert dead[0].attributes["taskorbit-dlq-attempts"] == "3"
    assert "always fails" in dead[0].attributes["taskorbit-dlq-reason"]
    assert runs == [1, 2, 3]


def test_ordering_key_order_is_kept_under_concurrency_16(
    pubsub: PubSubAdmin, make_app: Callable[..., orbit.Orbit], needs_emulator: None
) -> None:
    res = pubsub.resources(ordering=True)
    app = make_app(pubsub.transport(res), concurrency=16)
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()

    @app.task("step")
    def step(payload: dict[str, Any]) -> None:
        time.sleep(random.uniform(0.0, 0.01))  # let later messages overtake, if allowed
        with lock:
            seen.setdefault(payload["key"], []).append(payload["seq"])

    keys = [f"account-{k}" for k in range(4)]
    for seq in range(25):
        for key in keys:
            step.delay({"key": key, "seq": seq}, ordering_key=key)
    app.start()
    wait_for(lambda: app.stats()["completed"] == 100, 60.0, "all 100 steps")
    assert seen == {key: list(range(25)) for key in keys}


def test_shutdown_hands_back_unstarted_messages_at_once(
    pubsub: PubSubAdmin, make_app: Callable[..., orbit.Orbit]
) -> None:
    res: Resources = pubsub.resources(ack_deadline_s=60)
    app = make_app(pubsub.transport(res, ack_deadline_s=60), concurrency=1)
    started = threading.Event()

    @app.task("blocking")
    def blocking(n: int, ctx: orbit.Context) -> None:
        started.set()
        wait_for(lambda: ctx.cancelled, 10.0, "shutdown to begin")
        # Still busy for a while after the signal, but within the shutdown deadline.
        time.sleep(3.0)

    for n in range(5):
        blocking.delay(n)
    app.start()
    assert started.wait(10.0)
    wait_for(lambda: app.stats()["received"] == 5, 10.0, "all five in the worker")
    app.stop(timeout=10.0)
    assert app.stats()["completed"] == 1
    # The four that never started are back now, not after the 60 s ack deadline.
    assert len(drain(pubsub.transport(res), expect=4, timeout=5.0)) == 4


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
def test_a_retry_on_one_subscription_runs_on_that_subscription_only(
    pubsub: PubSubAdmin,
    pubsub_emulator: PubSubServer,
    make_app: Callable[..., orbit.Orbit],
    policy: bool,
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res_a = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=20)
    res_b = pubsub.second_subscription(res_a)
    transport_a, transport_b = pubsub.transport(res_a), pubsub.transport(res_b)
    # local_delay_max=0: the retry goes back through Pub/Sub, where a copy on the
    # topic would reach subscription B as well.
    app_a = make_app(transport_a, local_delay_max=0.0)
    app_b = make_app(transport_b, local_delay_max=0.0)
    runs: dict[str, list[int]] = {"a": [], "b": []}

    @app_a.task("flaky", base_delay=0.05)
    def flaky_a(n: int, ctx: orbit.Context) -> None:
        runs["a"].append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("fails once")

    @app_b.task("flaky", base_delay=0.05)
    def flaky_b(n: int, ctx: orbit.Context) -> None:
        runs["b"].append(ctx.attempt)

    app_a.start()
    app_b.start()
    flaky_a.delay(1)
    wait_for(lambda: app_a.stats()["completed"] == 1, 30.0, "A's retry to succeed")
    wait_for(lambda: app_b.stats()["completed"] == 1, 30.0, "B's one run")
    # Without a policy the retry was a copy on the topic: wait until B has seen it
    # (and skipped it) before counting; with a policy it stayed in place.
    copies = 0 if policy else 1
    wait_for(lambda: transport_b.skipped_copies == copies, 30.0, "B to skip A's retry copy")
    app_a.stop(timeout=10.0)
    app_b.stop(timeout=10.0)
    assert runs == {"a": [1, 2], "b": [1]}


@pytest.mark.parametrize("policy", [False, True], ids=["attribute-count", "delivery-attempt"])
def test_a_handler_that_always_fails_runs_max_retries_plus_one_times(
    pubsub: PubSubAdmin,
    pubsub_emulator: PubSubServer,
    make_app: Callable[..., orbit.Orbit],
    policy: bool,
) -> None:
    if policy:
        require_emulator(pubsub_emulator, "dead-letter policies")
    res = pubsub.resources(dead_letter_policy=policy, max_delivery_attempts=20)
    # Backoff 0.2, 0.4, 0.8 s: the first retry waits in the worker's timer wheel
    # (raising the attempt in memory only), the later ones go back through Pub/Sub.
    app = make_app(pubsub.transport(res, dlq_topic=res.dlq_topic), local_delay_max=0.3)
    runs: list[int] = []
    policy_3 = orbit.ExponentialBackoff(max_retries=3, base_delay=0.2, jitter=0.0)

    @app.task("doomed", retry_policy=policy_3)
    def doomed(n: int, ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError("always fails")

    app.start()
    doomed.delay(1)
    dead = drain(pubsub.dead_letter_reader(res), expect=1, timeout=30.0)
    assert [m.topic for m in dead] == ["doomed"]
    assert dead[0].attributes["taskorbit-dlq-attempts"] == "4"
    wait_for(lambda: app.stats()["dead_lettered"] == 1, 10.0, "the dead letter to be counted")
    app.stop(timeout=10.0)
    assert runs == [1, 2, 3, 4]
