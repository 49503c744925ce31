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
from tests.integration.pubsub.conftest import PubSubAdmin, Resources, drain

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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


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
    pubsub: PubSubAdmin, pubsub_emulator: Any, make_app: Callable[..., orbit.Orbit], policy: bool
) -> None:
    if policy and pubsub_emulator.kind != "emulator":
        pytest.skip("pstest has no dead-letter policies")
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
