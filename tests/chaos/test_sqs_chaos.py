"""Chaos on SQS (moto_server): SIGKILL workers at random moments, start a fresh one
after each kill; after the visibility timeout what the dead held comes back, and
every message is handled with its side effect exactly once. A message that kills
every worker still reaches the DLQ, because attempts come from SQS's
ApproximateReceiveCount. The full profile (100 kills) is ``make chaos``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

import taskorbit as orbit
from taskorbit.message import DLQ_ATTEMPTS_ATTR
from taskorbit.transports.sqs import SQSTransport
from tests.chaos.brokers import SQSBroker
from tests.chaos.driver import Profile, markdown_table, run_chaos
from tests.chaos.worker import spawn
from tests.contract import receive_until
from tests.servers import stop_process
from tests.servers.sqs import SQSFixture

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# Handlers of 0.2 s: 300 messages outlast three worker start-ups, so kills find
# work. moto_server slows down as a queue grows: the producer keeps it under ~100.
# A claim TTL of 2 s frees the keys of runs cut short before the visibility ends.
PROFILE = Profile(
    messages=300, kills=3, concurrency=4, handler_s=0.2, claim_ttl_s=2.0, max_backlog=60,
    timeout_s=90.0,
)  # fmt: skip


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(
    sqs: SQSFixture, redis_url: str, tmp_path: Path
) -> None:
    broker = SQSBroker(sqs.endpoint_url, lease_s=3.0)
    try:
        result = run_chaos(broker, redis_url, PROFILE, tmp_path)
    finally:
        broker.close()
    print(markdown_table([result]))  # shown with -s or -rP
    assert result.problems() == [], result
    assert result.kills == PROFILE.kills
    assert result.cut_runs > 0, "no kill caught a handler running: the test proved nothing"


def test_a_message_that_kills_every_worker_still_reaches_the_dlq(
    sqs: SQSFixture, redis_url: str, tmp_path: Path
) -> None:
    broker = SQSBroker(sqs.endpoint_url, lease_s=3.0)
    orbit.Orbit(broker.producer()).publish("poison", {"n": 0})
    dlq = SQSTransport(broker.dlq_url, client=sqs.client)
    raw = redis.Redis.from_url(redis_url)
    args = ["--redis", redis_url, *broker.worker_args(), "--lease", "3", "--poison-retries", "1"]
    dead: list[orbit.Message] = []
    deadline = time.monotonic() + 50.0
    try:
        while not dead and time.monotonic() < deadline:
            worker = spawn(args, tmp_path / "worker.log", env=broker.worker_env())
            try:
                worker.wait(broker.lease_s + 5.0)  # it dies on the poison, or lives on
            except subprocess.TimeoutExpired:
                pass
            finally:
                stop_process(worker)
            dead = receive_until(dlq, 1, timeout=1.0)
        # poison_retries=1: two attempts ran (and killed their worker); the third
        # receive (ApproximateReceiveCount 3) dead-letters it without running it.
        assert int(raw.get("poison-runs") or 0) == 2
        assert len(dead) == 1
        assert dead[0].attributes[DLQ_ATTEMPTS_ATTR] == "3"
        assert broker.backlog() == 0
    finally:
        raw.close()
        broker.close()
