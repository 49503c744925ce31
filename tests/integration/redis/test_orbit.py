"""End to end: an Orbit worker on Redis Streams, in this process and in others."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskorbit as orbit
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.chaos.redis_chaos_worker import start_worker
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by a test; killed if still running at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("local_delay_max", [30.0, 0.0], ids=["local-timer", "delayed-set"])
def test_a_handler_that_always_fails_ends_in_the_dlq_with_its_attempts(
    make_streams: Callable[..., RedisStreamsTransport], local_delay_max: float
) -> None:
    transport = make_streams(lease_s=2.0)
    app = orbit.Orbit(transport, concurrency=4, poll_timeout=0.2, local_delay_max=local_delay_max)
    runs: list[int] = []

    @app.task("failing", max_retries=2, base_delay=0.05)
    def failing(payload: dict[str, int], ctx: orbit.Context) -> None:
        runs.append(ctx.attempt)
        raise RuntimeError("always")

    failing.delay({"n": 1})
    with app:
        dead = wait_for(transport.dead_letters, 15.0, "the dead letter")
    assert runs == [1, 2, 3]
    assert dead[0].topic == "failing"
    assert dead[0].attributes["taskorbit-dlq-attempts"] == "3"
    assert "always" in dead[0].attributes["taskorbit-dlq-reason"]


def test_a_message_that_kills_the_worker_every_time_ends_in_the_dlq(
    redis_url: str, raw_redis: Any, stream_name: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    producer = orbit.Orbit(RedisStreamsTransport(url=redis_url, stream=stream_name))
    producer.publish("poison", {"n": 0})
    producer.publish_many("work", [{"n": i} for i in range(20)])
    # Messages a crashing worker held are redelivered with a larger count too; give
    # them more retries than the three crashes cost, and the poison message two.
    flags = ("--lease", "0.5", "--poison-retries", "2", "--max-retries", "5")
    crashes = 0
    while not raw_redis.xlen(f"{stream_name}:dlq"):
        assert crashes <= 3, "the poison message was run more often than max_retries allows"
        worker = start_worker(redis_url, stream_name, *flags)
        workers.append(worker)
        wait_for(
            lambda: worker.poll() is not None or raw_redis.xlen(f"{stream_name}:dlq"),  # noqa: B023
            60.0,
            "a crash or the dead letter",
        )
        if worker.poll() is not None:
            assert worker.returncode == 3
            crashes += 1
    assert crashes == 3
    assert int(raw_redis.get("poison-runs")) == 3
    dead = producer.transport.dead_letters()  # type: ignore[attr-defined]
    assert [m.topic for m in dead] == ["poison"]
    assert dead[0].attributes["taskorbit-dlq-attempts"] == "4"
    # The surviving worker also finished the ordinary messages the crashes interrupted.
    wait_for(lambda: raw_redis.hlen("effects") == 20, 20.0, "the ordinary messages")


def test_two_workers_share_a_stream_and_never_both_complete_one_key(
    redis_url: str, raw_redis: Any, stream_name: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    producer = orbit.Orbit(RedisStreamsTransport(url=redis_url, stream=stream_name))
    keys = [f"order-{i}" for i in range(300)]
    # Small rings, so that neither worker can take the whole backlog for itself.
    flags = ("--store", "--sleep", "0.002", "--buffer-size", "32")
    for name in ("left", "right"):
        workers.append(start_worker(redis_url, stream_name, *flags, "--name", name))
    wait_for(
        lambda: sum(c["cmd"] == "xreadgroup" for c in raw_redis.client_list()) == 2,
        60.0,
        "both workers to be waiting for messages",
    )
    # Every key is published twice, so that the two workers race for it.
    for key in keys + keys:
        producer.publish("work", {"n": key}, idempotency_key=key)
    wait_for(lambda: raw_redis.hlen("effects") == len(keys), 120.0, "every key's effect")
    wait_for(
        lambda: (
            raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0
            and raw_redis.xlen(stream_name) == 0
            and raw_redis.zcard(f"{stream_name}:delayed") == 0
            # Duplicates handed back wait in the group's own retry stream and set.
            and raw_redis.xlen(f"{stream_name}:retry:taskorbit") == 0
            and raw_redis.zcard(f"{stream_name}:delayed:taskorbit") == 0
        ),
        60.0,
        "the duplicates to be settled",
    )
    effects = {k.decode(): int(v) for k, v in raw_redis.hgetall("effects").items()}
    assert effects == dict.fromkeys(keys, 1)
    shares = {k.decode(): int(v) for k, v in raw_redis.hgetall("workers").items()}
    assert set(shares) == {"left", "right"}
    for proc in workers:
        proc.terminate()
        assert proc.wait(20) == 0


def test_a_worker_dead_letters_broken_entries_naming_the_field_and_runs_their_neighbours(
    make_streams: Callable[..., RedisStreamsTransport], raw_redis: Any, stream_name: str
) -> None:
    transport = make_streams(lease_s=2.0)
    app = orbit.Orbit(transport, concurrency=4, poll_timeout=0.2)
    seen: list[int] = []
    app.handle("work", recorder(seen))
    app.publish_many("work", [{"n": i} for i in range(3)])
    raw_redis.xadd(stream_name, {"topic": "work", "body": '{"n": 9}', "attempt": "abc"})
    raw_redis.xadd(stream_name, {"foo": "bar"})
    app.publish_many("work", [{"n": i} for i in range(3, 6)])
    with app:
        dead = wait_for(
            lambda: len(transport.dead_letters()) == 2 and transport.dead_letters(), 15.0, "2 DLQ"
        )
        wait_for(lambda: len(seen) == 6, 15.0, "the neighbours to run")
    assert sorted(seen) == list(range(6))
    reasons = sorted(d.attributes["taskorbit-dlq-reason"] for d in dead)
    assert "field 'attempt' is 'abc'" in reasons[0], reasons
    assert "field 'topic' is missing" in reasons[1], reasons


def test_a_worker_dead_letters_the_report_of_an_entry_trimmed_while_pending(
    make_streams: Callable[..., RedisStreamsTransport], raw_redis: Any, stream_name: str
) -> None:
    raw_redis.xgroup_create(stream_name, "taskorbit", id="0", mkstream=True)
    transport = make_streams(lease_s=0.5)
    app = orbit.Orbit(transport, concurrency=2, poll_timeout=0.2)
    app.handle("work", recorder([]))
    [lost] = app.publish_many("work", [{"n": 1}])
    # A consumer takes it and dies; trimming then drops the entry it held.
    raw_redis.xreadgroup("taskorbit", "dead", {stream_name: ">"}, count=1)
    raw_redis.xtrim(stream_name, maxlen=0, approximate=False)
    with app:
        [dead] = wait_for(transport.dead_letters, 15.0, "the report in the DLQ")
    assert dead.id == lost
    assert "was trimmed" in dead.attributes["taskorbit-dlq-reason"]
    assert raw_redis.xpending(stream_name, "taskorbit")["pending"] == 0


def test_two_orbits_in_two_groups_run_a_retried_message_only_in_the_group_that_failed(
    make_streams: Callable[..., RedisStreamsTransport], raw_redis: Any, stream_name: str
) -> None:
    runs = {"a": 0, "b": 0}

    def counting(group: str) -> Callable[[dict[str, int]], None]:
        def handle(payload: dict[str, int]) -> None:
            runs[group] += 1
            if group == "a" and runs[group] == 1:
                raise RuntimeError("a fails its first run")

        return handle

    apps = []
    for group in runs:
        transport = make_streams(group=group, delete_acked=False, lease_s=2.0)
        # local_delay_max=0: the retry goes through the broker, not the timer wheel.
        app = orbit.Orbit(transport, concurrency=2, poll_timeout=0.2, local_delay_max=0.0)
        app.task("job", max_retries=3, base_delay=0.05)(counting(group))
        apps.append(app)
    apps[0].publish("job", {"n": 1})
    for app in apps:
        app.start()
    try:
        wait_for(lambda: runs == {"a": 2, "b": 1}, 15.0, "a's retry")
        wait_for(
            lambda: all(raw_redis.xpending(stream_name, g)["pending"] == 0 for g in runs),
            15.0,
            "both groups to settle",
        )
    finally:
        for app in apps:
            app.stop(timeout=5.0)
    # No copy of the message ever reached the shared stream that b reads.
    assert raw_redis.xlen(stream_name) == 1
    assert runs == {"a": 2, "b": 1}


def recorder(into: list[int]) -> Callable[[dict[str, int]], None]:
    def record(payload: dict[str, int]) -> None:
        into.append(payload["n"])

    return record


def test_two_orbits_on_redis_pubsub_both_run_every_message(redis_url: str) -> None:
    from taskorbit.transports.redis.pubsub import RedisPubSubTransport

    seen: dict[str, list[int]] = {"first": [], "second": []}
    apps = []
    for name in seen:
        transport = RedisPubSubTransport(url=redis_url, channel_prefix="orbit-ps:")
        transport.subscribe()
        app = orbit.Orbit(transport, concurrency=2, poll_timeout=0.2)
        app.handle("news", recorder(seen[name]))
        apps.append(app)
    producer = orbit.Orbit(RedisPubSubTransport(url=redis_url, channel_prefix="orbit-ps:"))
    for app in apps:
        app.start()
    try:
        producer.publish_many("news", [{"n": i} for i in range(20)])
        wait_for(lambda: all(len(v) == 20 for v in seen.values()), 20.0, "both subscribers")
    finally:
        for app in apps:
            app.stop(timeout=5.0)
    assert {name: sorted(v) for name, v in seen.items()} == {
        "first": list(range(20)),
        "second": list(range(20)),
    }
