"""Chaos on Pub/Sub (Google's emulator): SIGKILL workers at random moments, start a
fresh one after each kill; what the dead held comes back after the ack deadline,
and every message is handled with its side effect exactly once. A message that
crashes every worker still ends in the DLQ topic, because Pub/Sub counts its
deliveries. The full profile (100 kills) is ``make chaos``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from taskorbit.message import Message
from taskorbit.transports.pubsub import PubSubTransport
from tests.chaos.brokers import PubSubBroker
from tests.chaos.driver import Profile, markdown_table, run_chaos
from tests.chaos.worker import spawn
from tests.integration.pubsub.conftest import (  # noqa: F401
    PubSubAdmin,
    drain,
    pubsub,
    require_emulator,
)
from tests.servers import stop_process
from tests.servers.pubsub import PROJECT, PubSubServer

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# Handlers of 0.1 s: 600 messages outlast three worker start-ups, so kills find work.
PROFILE = Profile(messages=600, kills=3, concurrency=4, handler_s=0.1, timeout_s=90.0)


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(
    pubsub_emulator: PubSubServer, redis_url: str, tmp_path: Path
) -> None:
    broker = PubSubBroker(project=PROJECT, lease_s=10)
    try:
        result = run_chaos(broker, redis_url, PROFILE, tmp_path)
    finally:
        broker.close()
    print(markdown_table([result]))  # shown with -s or -rP
    assert result.problems() == [], result
    assert result.kills == PROFILE.kills
    assert result.cut_runs > 0, "no kill caught a handler running: the test proved nothing"


def test_a_message_that_kills_every_worker_reaches_the_dlq_topic(
    pubsub: PubSubAdmin,  # noqa: F811
    pubsub_emulator: PubSubServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    require_emulator(pubsub_emulator, "delivery_attempt")
    res = pubsub.resources(ack_deadline_s=10, dead_letter_policy=True, max_delivery_attempts=20)
    PubSubTransport(res.subscription, res.topic).publish([Message("poison", b'{"n": 13}')])
    raw = redis.Redis.from_url(redis_url)
    args = ["--redis", redis_url, "--transport", "pubsub", "--subscription", res.subscription]
    args += ["--topic", res.topic, "--dlq-topic", res.dlq_topic, "--lease", "10"]
    crashes = 0
    dead: list[Message] = []
    reader = pubsub.dead_letter_reader(res)
    try:
        # poison_retries=0: the first delivery crashes the worker; the second
        # (counted by Pub/Sub, not by the dead process) goes to the DLQ topic
        # without running.
        while not dead and crashes < 3:
            worker = spawn([*args, "--poison-retries", "0"], tmp_path / "worker.log")
            try:
                while worker.poll() is None and not dead:
                    dead = drain(reader, expect=1, timeout=1.0)
                if worker.poll() is not None:
                    crashes += 1
            finally:
                stop_process(worker)
        assert int(raw.get("poison-runs") or 0) == 1
        assert crashes == 1
        assert [(m.topic, m.attributes["taskorbit-dlq-attempts"]) for m in dead] == [
            ("poison", "2")
        ]
    finally:
        raw.close()
