"""Chaos: SIGKILL a Redis Streams worker three times while it holds thousands of
messages, then let a fresh worker finish. Every message must be handled at least
once, its side effect (guarded by the Redis idempotency store) must have happened
exactly once, and nothing may be left pending."""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import taskorbit as orbit
from taskorbit.transports.redis_streams import RedisStreamsTransport
from tests.chaos.redis_chaos_worker import start_worker

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

MESSAGES = 5000
KILLS = 3


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes the test started; SIGKILLed if still running at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_killed_workers_lose_nothing_and_repeat_no_side_effect(
    redis_url: str, raw: Any, tmp_path: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    stream = f"chaos-{uuid.uuid4().hex[:6]}"
    producer = orbit.Orbit(RedisStreamsTransport(url=redis_url, stream=stream))
    # The producer's task gives every message its idempotency key.
    producer.handle("work", lambda payload: None, idempotency_key=lambda p: f"m{p['n']}")
    for start in range(0, MESSAGES, 1000):
        producer.publish_many("work", [{"n": i} for i in range(start, start + 1000)])
    rng = random.Random()
    flags = ("--store", "--atomic-effect", "--lease", "1.0", "--concurrency", "16")
    log = open(tmp_path / "workers.log", "ab")  # noqa: SIM115 - closed below
    try:
        for kill in range(KILLS):
            worker = start_worker(redis_url, stream, *flags, "--name", f"doomed-{kill}", log=log)
            workers.append(worker)
            # Kill at a random point while it works: after a random number of runs.
            target = raw.hlen("runs") + rng.randrange(100, 1000)
            wait_for(
                lambda: raw.hlen("runs") >= target or worker.poll() is not None,  # noqa: B023
                60.0,
                f"worker {kill} to make progress",
            )
            assert worker.poll() is None, f"worker {kill} exited on its own: see {log.name}"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            # The dead worker left entries pending: only crash recovery can finish them.
            assert raw.xpending(stream, "taskorbit")["pending"] > 0
        finisher = start_worker(redis_url, stream, *flags, "--name", "finisher", log=log)
        workers.append(finisher)
        try:
            wait_for(lambda: raw.hlen("effects") == MESSAGES, 120.0, "every side effect")
            wait_for(
                lambda: (
                    raw.xpending(stream, "taskorbit")["pending"] == 0
                    and raw.xlen(stream) == 0
                    and raw.zcard(f"{stream}:delayed") == 0
                    # Hand-backs (retries, duplicates, shutdown) wait in the group's
                    # own retry stream and delayed set.
                    and raw.xpending(f"{stream}:retry:taskorbit", "taskorbit")["pending"] == 0
                    and raw.xlen(f"{stream}:retry:taskorbit") == 0
                    and raw.zcard(f"{stream}:delayed:taskorbit") == 0
                ),
                60.0,
                "nothing left pending",
            )
        finally:
            finisher.send_signal(signal.SIGTERM)
            finisher.wait(30)
    finally:
        log.close()
    assert finisher.returncode == 0
    runs = {int(k): int(v) for k, v in raw.hgetall("runs").items()}
    effects = {int(k): int(v) for k, v in raw.hgetall("effects").items()}
    assert set(runs) == set(range(MESSAGES))  # every message handled at least once
    assert effects == dict.fromkeys(range(MESSAGES), 1)  # its effect exactly once
    assert raw.xlen(f"{stream}:dlq") == 0
    assert raw.xpending(stream, "taskorbit")["pending"] == 0
    assert raw.xpending(f"{stream}:retry:taskorbit", "taskorbit")["pending"] == 0
