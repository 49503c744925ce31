"""Chaos on Kafka (librdkafka's mock cluster): two worker processes in one consumer
group; SIGKILL one at random moments and start a fresh one, so partitions move
between members mid-run. Nothing is lost, no side effect repeats, the group commits
everything. A message that crashes every worker (``os._exit``) still reaches the
DLQ topic after ``max_retries + 1`` runs: the crashed deliveries are counted in the
local attempt store. The full profile (100 kills) is ``benchmarks/chaos.py
--transport kafka``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from taskorbit.message import Message
from taskorbit.transports.kafka.dlq import dead_letter_queue
from tests.chaos.brokers import KafkaBroker
from tests.chaos.driver import Profile, markdown_table, run_chaos
from tests.chaos.worker import spawn
from tests.servers import stop_process

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

PROFILE = Profile(messages=1500, kills=3, concurrency=4, handler_s=0.02, timeout_s=120.0)


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(
    kafka_server: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(kafka_server, str(tmp_path))
    try:
        result = run_chaos(broker, redis_url, PROFILE, tmp_path)
    finally:
        broker.close()
    print(markdown_table([result]))  # shown with -s or -rP
    assert result.problems() == [], result
    assert result.kills == PROFILE.kills
    assert result.cut_runs > 0, "no kill caught a handler running: the test proved nothing"


def test_a_message_that_kills_every_worker_reaches_the_dlq_after_max_retries_plus_one_runs(
    kafka_server: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(kafka_server, str(tmp_path))
    transport = broker.producer()
    transport.publish([Message("poison", b'{"n": 13}')])
    raw = redis.Redis.from_url(redis_url)
    raw.delete("poison-runs")
    args = ["--redis", redis_url, *broker.worker_args(), "--lease", "2", "--poison-retries", "2"]
    crashes = 0
    dead = []
    try:
        while not dead and crashes < 6:
            worker = spawn(args, tmp_path / "worker.log")
            try:
                while worker.poll() is None and not dead:
                    dead = dead_letter_queue(transport).list()  # type: ignore[arg-type]
                if worker.poll() is not None:
                    crashes += 1
            finally:
                stop_process(worker)
        # max_retries=2: runs 1, 2 and 3 crash; the fourth delivery counts three
        # crashed deliveries, so attempt 4 > 3 goes to the DLQ without running.
        assert int(raw.get("poison-runs") or 0) == 3
        assert crashes == 3
        assert [(x.topic, x.attempts) for x in dead] == [("poison", 4)]
    finally:
        raw.close()
        broker.close()
