"""An Orbit worker on SQS, end to end against moto_server: lease heartbeats for
long handlers, dead-lettering with the attempt count, FIFO order under
concurrency, and the release of unstarted messages at shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.message import DLQ_ATTEMPTS_ATTR
from taskorbit.transports.sqs import SQSTransport
from tests.contract import receive_until
from tests.servers.sqs import SQSFixture
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

MakeTransport = Callable[..., SQSTransport]


@contextmanager
def running(app: orbit.Orbit) -> Iterator[orbit.Orbit]:
    app.start()
    try:
        yield app
    finally:
        app.stop(timeout=10.0)


def deleted_receipts(transport: SQSTransport) -> list[str]:
    """Every receipt handle the transport's client asks SQS to delete."""
    deleted: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        deleted.extend(e["ReceiptHandle"] for e in params.get("Entries", []))
        if "ReceiptHandle" in params:
            deleted.append(params["ReceiptHandle"])

    events = transport._client.meta.events
    events.register("provide-client-params.sqs.DeleteMessageBatch", record)
    events.register("provide-client-params.sqs.DeleteMessage", record)
    return deleted


def messages_in(sqs: SQSFixture, queue_url: str) -> int:
    """Messages in the queue: visible, in flight, or delayed (moto counts exactly)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    got = sqs.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return sum(int(got["Attributes"][n]) for n in names)


def queue_is_empty(sqs: SQSFixture, queue_url: str) -> bool:
    return messages_in(sqs, queue_url) == 0


def test_a_handler_three_times_longer_than_the_visibility_runs_once_and_is_deleted_once(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("long-handler")
    runs: list[int] = []
    finished = threading.Event()

    def slow(payload: dict[str, int], ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        time.sleep(6.0)  # the visibility timeout is 2 s
        finished.set()

    # Two workers on one queue: if a lease lapsed, the other would take the message.
    workers = []
    deletes: list[list[str]] = []
    for _ in range(2):
        transport = make_transport(queue_url, visibility_timeout=2.0)
        deletes.append(deleted_receipts(transport))
        app = orbit.Orbit(transport, concurrency=4, poll_timeout=0.5)
        app.handle("slow", slow)
        workers.append(app)
    workers[0].publish("slow", {"n": 1})

    with running(workers[0]), running(workers[1]):
        assert finished.wait(20.0)
        wait_for(lambda: sum(len(d) for d in deletes) >= 1, 5.0, "the delete")
        # Letting one more visibility timeout pass is the point: nothing may come back.
        time.sleep(3.0)

    assert runs == [1]
    assert sum(len(d) for d in deletes) == 1
    assert queue_is_empty(sqs, queue_url)


@pytest.mark.parametrize(
    "local_delay_max",
    [pytest.param(30.0, id="retries-held-locally"), pytest.param(0.0, id="retries-through-sqs")],
)
def test_a_poison_message_reaches_the_dlq_with_its_attempt_count(
    sqs: SQSFixture, make_transport: MakeTransport, local_delay_max: float
) -> None:
    dlq_url = sqs.create_queue("worker-dlq")
    queue_url = sqs.create_queue("worker-poison")
    app = orbit.Orbit(
        make_transport(queue_url, dlq_url=dlq_url),
        poll_timeout=0.5,
        local_delay_max=local_delay_max,
    )
    attempts: list[int] = []

    @app.task("poison", max_retries=2, base_delay=0.05)
    def poison(payload: dict[str, str], ctx: orbit.Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError("cannot handle this")

    poison.delay({"bad": "data"})
    with running(app):
        wait_for(lambda: app.stats().get("dead_lettered", 0) == 1, 20.0, "the dead letter")

    dead = receive_until(make_transport(dlq_url), 1)
    assert attempts == [1, 2, 3]
    assert dead[0].topic == "poison"
    assert dead[0].attributes[DLQ_ATTEMPTS_ATTR] == "3"
    assert "cannot handle this" in dead[0].attributes["taskorbit-dlq-reason"]
    assert queue_is_empty(sqs, queue_url)


def test_attempts_only_grow_when_some_retries_are_local_and_some_go_to_sqs(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    # Backoff 0.5, 1, 2, 4 s; the worker holds at most 1.5 s itself. So attempts 2
    # and 3 run from its timer wheel, attempt 4 goes to SQS as a copy carrying the
    # three attempts used (SQS had counted one receive), and attempt 5 by visibility.
    dlq_url = sqs.create_queue("mixed-dlq")
    queue_url = sqs.create_queue("mixed")
    app = orbit.Orbit(
        make_transport(queue_url, dlq_url=dlq_url), poll_timeout=0.5, local_delay_max=1.5
    )
    attempts: list[int] = []

    @app.task(
        "always-fails",
        retry_policy=orbit.ExponentialBackoff(max_retries=4, base_delay=0.5, jitter=0.0),
    )
    def always_fails(payload: dict[str, int], ctx: orbit.Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("still broken")

    always_fails.delay({"n": 1})
    with running(app):
        wait_for(lambda: app.stats().get("dead_lettered", 0) == 1, 30.0, "the fifth attempt")

    assert attempts == [1, 2, 3, 4, 5]
    dead = receive_until(make_transport(dlq_url), 1)
    assert dead[0].attributes[DLQ_ATTEMPTS_ATTR] == "5"
    assert queue_is_empty(sqs, queue_url)


def test_a_broken_envelope_is_dead_lettered_and_its_neighbours_run(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    dlq_url = sqs.create_queue("worker-broken-dlq")
    queue_url = sqs.create_queue("worker-broken")
    app = orbit.Orbit(make_transport(queue_url, dlq_url=dlq_url), poll_timeout=0.5)
    ran: list[int] = []

    @app.task("job")
    def job(payload: dict[str, int]) -> None:
        ran.append(payload["n"])

    job.delay({"n": 1})
    sqs.client.send_message(
        QueueUrl=queue_url,
        MessageBody='{"n": 99}',
        MessageAttributes={
            "taskorbit-topic": {"DataType": "String", "StringValue": "job"},
            "taskorbit-attempt": {"DataType": "String", "StringValue": "two"},
        },
    )
    job.delay({"n": 2})
    with running(app):
        wait_for(
            lambda: app.stats().get("dead_lettered", 0) == 1 and len(ran) == 2,
            20.0,
            "the dead letter and both neighbours",
        )

    assert sorted(ran) == [1, 2]
    [dead] = receive_until(make_transport(dlq_url), 1)
    assert dead.body == b'{"n": 99}'
    assert "taskorbit-attempt 'two'" in dead.attributes["taskorbit-dlq-reason"]
    assert queue_is_empty(sqs, queue_url)


def test_a_retry_longer_than_the_native_limit_runs_again_once_after_its_delay(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    # Scaled down: visibility carries at most 2 s here (12 h on SQS), the worker holds
    # at most 1 s locally, and the handler asks for 5 s.
    queue_url = sqs.create_queue("worker-long-retry")
    app = orbit.Orbit(
        make_transport(queue_url, max_delay_native=2.0), poll_timeout=0.5, local_delay_max=1.0
    )
    runs: list[tuple[int, float]] = []

    @app.task("later")
    def later(payload: dict[str, int], ctx: orbit.Context) -> orbit.Result | None:
        runs.append((ctx.attempt, time.time()))
        return orbit.retry(delay=5.0) if ctx.attempt == 1 else None

    later.delay({"n": 1})
    with running(app):
        wait_for(lambda: app.stats().get("completed", 0) == 1, 20.0, "the second run")
        # Letting a visibility timeout pass is the point: a duplicate would show up.
        time.sleep(2.5)

    assert [attempt for attempt, _ in runs] == [1, 2]
    # Not before the 5 s delay; the upper bound allows for receive waits and the hops.
    assert 5.0 <= runs[1][1] - runs[0][1] < 9.0
    assert queue_is_empty(sqs, queue_url)


def test_an_eta_longer_than_the_native_limit_runs_once_on_time_as_attempt_one(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("worker-long-eta")
    app = orbit.Orbit(
        make_transport(queue_url, max_delay_native=2.0), poll_timeout=0.5, local_delay_max=1.0
    )
    runs: list[tuple[int, float]] = []

    @app.task("reminder")
    def reminder(payload: dict[str, int], ctx: orbit.Context) -> None:
        runs.append((ctx.attempt, time.time()))

    eta = time.time() + 6.0
    reminder.delay({"n": 1}, eta=eta)
    with running(app):
        wait_for(lambda: app.stats().get("completed", 0) == 1, 20.0, "the run at the ETA")
        # Letting a visibility timeout pass is the point: a duplicate would show up.
        time.sleep(2.5)

    assert len(runs) == 1
    assert runs[0][0] == 1
    assert eta <= runs[0][1] < eta + 3.0  # never early; a little late on a loaded machine
    assert queue_is_empty(sqs, queue_url)


def test_fifo_groups_run_in_order_one_at_a_time_under_concurrency_16(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("worker-orders.fifo")
    app = orbit.Orbit(make_transport(queue_url, visibility_timeout=10.0), concurrency=16)
    lock = threading.Lock()
    seen: dict[str, list[int]] = defaultdict(list)
    in_flight: Counter[str] = Counter()
    overlaps: list[str] = []

    @app.task("step")
    def step(payload: dict[str, Any]) -> None:
        group = payload["group"]
        with lock:
            in_flight[group] += 1
            if in_flight[group] > 1:
                overlaps.append(group)
        time.sleep(0.02)  # the handler's work: long enough for a second run to overlap
        with lock:
            in_flight[group] -= 1
            seen[group].append(payload["seq"])

    groups = [f"account-{g}" for g in range(4)]
    for group in groups:
        app.publish_many(
            "step", [{"group": group, "seq": i} for i in range(20)], ordering_key=group
        )
    with running(app):
        wait_for(lambda: sum(len(s) for s in seen.values()) == 80, 40.0, "all 80 steps")

    assert {g: seen[g] for g in groups} == {g: list(range(20)) for g in groups}
    assert overlaps == []


def test_unstarted_messages_are_released_at_once_on_shutdown(
    sqs: SQSFixture, make_transport: MakeTransport
) -> None:
    queue_url = sqs.create_queue("worker-shutdown")
    # A visibility of 60 s: only the release can make them visible within the test.
    app = orbit.Orbit(make_transport(queue_url, visibility_timeout=60.0), concurrency=1)
    started = threading.Event()
    release = threading.Event()

    @app.task("job")
    def job(payload: dict[str, int]) -> None:
        started.set()
        release.wait(10.0)

    app.publish_many("job", [{"n": i} for i in range(5)])
    app.start()
    assert started.wait(10.0)
    wait_for(lambda: app.stats().get("received", 0) == 5, 10.0, "all five in the worker")
    threading.Timer(0.3, release.set).start()  # the running one finishes during the stop
    assert app.stop(timeout=5.0)

    assert app.stats()["completed"] == 1
    others = receive_until(make_transport(queue_url), 4, timeout=3.0)
    assert len(others) == 4
    # Handed back without running: no attempt was used.
    assert [m.attempt for m in others] == [1, 1, 1, 1]


def test_without_any_dlq_the_worker_logs_how_to_fix_it_and_keeps_the_message(
    sqs: SQSFixture, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url = sqs.create_queue("worker-no-dlq")
    app = orbit.Orbit(make_transport(queue_url), poll_timeout=0.5)

    @app.task("doomed")
    def doomed(payload: dict[str, int]) -> orbit.Result:
        return orbit.dead_letter("no good")

    doomed.delay({"n": 1})
    with running(app):
        wait_for(lambda: "RedrivePolicy" in caplog.text, 20.0, "the log saying how to fix it")

    assert "dlq_url= to SQSTransport" in caplog.text
    # Not lost: still in the queue, invisible until the hand-back's delay runs out.
    assert messages_in(sqs, queue_url) == 1
