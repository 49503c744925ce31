"""A worker on Kafka end to end: commits never pass an unfinished message, retries
wait in the group's retry ladder, dead letters carry where they came from, redrive
and purge work on a log, and backpressure pauses partitions instead of rebalancing."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import taskorbit as orbit
from taskorbit.dlq import Selection
from taskorbit.transports.kafka import KafkaTransport
from taskorbit.transports.kafka.dlq import dead_letter_queue
from tests.integration.kafka.conftest import KafkaKit, wait_assigned, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def one_partition_of(transport: KafkaTransport, ids: list[str]) -> int:
    partitions = {int(i.split(":")[1]) for i in ids}
    assert len(partitions) == 1, partitions
    return partitions.pop()


def test_the_commit_never_passes_a_message_that_is_still_running(kafka: KafkaKit) -> None:
    transport = kafka.transport(ordered=False)
    release = threading.Event()
    done: list[int] = []
    app = orbit.Orbit(transport, concurrency=8, buffer_size=256, ack_interval_s=0.01)

    @app.task("work")
    def work(payload: dict[str, int]) -> None:
        if payload["n"] == 0:
            release.wait(30)
        done.append(payload["n"])

    # One key: every record lands in one partition, the slow one first.
    ids = app.publish_many("work", [{"n": n} for n in range(1001)], ordering_key="one")
    partition = one_partition_of(transport, ids)
    slow = int(ids[0].split(":")[2])
    tp = (transport.topic, partition)
    with app:
        wait_for(lambda: len(done) == 1000, 30, "the 1,000 fast messages")
        time.sleep(0.3)  # several ack flushes and commits after the last of them
        assert transport.committed([tp])[tp] == slow
        release.set()
        wait_for(lambda: transport.committed([tp])[tp] == slow + 1001, 10, "the commit")
    assert sorted(done) == list(range(1001))


def test_after_sigkill_behind_a_slow_message_every_message_is_handled(
    kafka: KafkaKit, tmp_path: Path
) -> None:
    """The uncommitted window (the 1,000 fast messages behind the slow one) runs
    again after the crash: duplicates, counted; nothing is lost."""
    producer = kafka.transport()
    ids = producer.publish(
        [orbit.Message("work", str(n).encode(), ordering_key="one") for n in range(1001)]
    )
    partition = one_partition_of(producer, ids)
    slow = int(ids[0].split(":")[2])
    log = tmp_path / "handled"
    group = "crashing"

    def worker(slow_s: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("slow_worker.py")), kafka.bootstrap,
             kafka.topic, group, str(log), str(slow_s), str(tmp_path / "attempts")],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        )  # fmt: skip

    def handled() -> list[int]:
        return [int(x) for x in log.read_text().split()] if log.exists() else []

    first = worker(slow_s=60)
    try:
        wait_for(lambda: len(handled()) >= 1000, 60, "the fast messages")
        tp = (kafka.topic, partition)
        probe = kafka.transport(group=group)
        assert probe.committed([tp])[tp] == slow
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    second = worker(slow_s=0)
    try:
        wait_for(lambda: set(handled()) == set(range(1001)), 60, "every message after restart")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    runs = handled()
    duplicates = len(runs) - 1001
    print(f"{duplicates} duplicates from the uncommitted window of 1,000")
    assert 0 < duplicates <= 1000


def test_retries_wait_in_the_ladder_for_their_delay(kafka: KafkaKit) -> None:
    transport = kafka.transport(retry_delays=(0.2, 1.0))
    runs: list[tuple[int, float]] = []
    app = orbit.Orbit(transport, local_delay_max=0.0, ack_interval_s=0.01)

    @app.task("work", max_retries=3)
    def work(payload: dict[str, int], ctx: orbit.Context) -> orbit.Result | None:
        runs.append((ctx.attempt, time.monotonic()))
        return orbit.retry(delay=1.5) if ctx.attempt < 3 else None

    with app:
        app.publish("work", {"n": 1})
        wait_for(lambda: len(runs) == 3, 30, "three runs")
    assert [a for a, _ in runs] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(runs)]
    assert all(1.45 <= g < 3.0 for g in gaps), gaps


def test_a_dead_letter_carries_reason_attempts_source_and_group(kafka: KafkaKit) -> None:
    transport = kafka.transport()
    app = orbit.Orbit(transport, ack_interval_s=0.01)
    app.handle("work", lambda p: orbit.dead_letter("no thanks"))
    with app:
        sent = app.publish("work", {"n": 1}, attributes={"color": "red"})
        wait_for(lambda: bool(dead_letter_queue(transport).list()), 20, "the dead letter")
    [letter] = dead_letter_queue(transport).list()
    topic, partition, offset = sent.split(":")
    attrs = letter.message.attributes
    assert (letter.id, letter.reason, letter.attempts) == (sent, "no thanks", 1)
    assert attrs["color"] == "red" and attrs["taskorbit-dlq-group"] == transport.group
    assert (attrs["taskorbit-source-topic"], attrs["taskorbit-source-partition"]) == (
        topic,
        partition,
    )
    assert attrs["taskorbit-source-offset"] == offset
    assert abs(float(attrs["taskorbit-dlq-time"]) - time.time()) < 30
    # Another group on the same topic and DLQ sees none of this group's letters.
    assert dead_letter_queue(kafka.transport()).list() == []


def test_redrive_runs_a_letter_again_in_this_group_and_purge_commits_past(
    kafka: KafkaKit,
) -> None:
    transport = kafka.transport()
    runs: list[tuple[int, int]] = []
    app = orbit.Orbit(transport, ack_interval_s=0.01)

    @app.task("work", max_retries=0)
    def work(payload: dict[str, int], ctx: orbit.Context) -> None:
        runs.append((payload["n"], ctx.attempt))
        if len(runs) <= 3:
            raise RuntimeError("fails the first time round")

    with app:
        for n in range(3):
            app.publish("work", {"n": n})
        dlq = dead_letter_queue(transport)
        wait_for(lambda: len(dlq.list()) == 3, 20, "three dead letters")
        first, second, third = dlq.list()
        redriven = dlq.redrive(Selection.of([second.id]))
        assert [x.id for x in redriven] == [second.id] and redriven[0].redriven_as
        wait_for(lambda: len(runs) == 4, 20, "the redriven run")
        assert runs[3][1] == 1  # a fresh first attempt
        assert [x.id for x in dlq.list()] == [first.id, third.id]
        assert [x.id for x in dlq.purge(Selection.of([third.id]))] == [third.id]
        assert [x.id for x in dlq.list()] == [first.id]
        assert [x.id for x in dlq.purge(Selection.of(), limit=None)] == [first.id]
        assert dlq.list() == []


def test_backpressure_pauses_partitions_and_never_rebalances(kafka: KafkaKit) -> None:
    """The small version of the benchmark's 50,000-message run (benchmarks/kafka_e2e.py
    --backpressure): 5,000 messages through a ring of 256, 10 ms handlers."""
    transport = kafka.transport(max_buffered=300)
    done = []
    app = orbit.Orbit(transport, concurrency=64, buffer_size=256, ack_interval_s=0.02)

    @app.task("work")
    def work(payload: bytes) -> None:
        time.sleep(0.01)
        done.append(1)

    app.publish_many("work", [b"x" * 100] * 5000)
    wait_assigned(transport, count=4)
    rss = psutil.Process().memory_info().rss
    with app:
        wait_for(lambda: len(done) == 5000, 60, "5,000 handled")
        grown = psutil.Process().memory_info().rss - rss
    counters = transport.counters
    assert counters.rebalances == 1 and counters.revoked == counters.lost == 0, counters
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"
