"""SIGKILL a worker on SQS mid-run: after the visibility timeout a fresh worker
handles everything, and a message that kills every worker still reaches the DLQ,
because attempts come from SQS's ApproximateReceiveCount."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import taskorbit as orbit
from taskorbit.message import DLQ_ATTEMPTS_ATTR
from taskorbit.transports.sqs import SQSTransport
from tests.contract import receive_until
from tests.servers import start_process, stop_process
from tests.servers.sqs import CREDENTIALS, REGION, SQSFixture

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sqs_chaos_worker.py")
VISIBILITY_S = 3.0


def start_worker(
    sqs: SQSFixture, queue_url: str, record: Path, *flags: str
) -> subprocess.Popen[bytes]:
    env = {
        "PYTHONPATH": str(ROOT),
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
    }
    argv = [
        sys.executable, str(WORKER), "--endpoint", sqs.endpoint_url, "--queue-url", queue_url,
        "--record", str(record), "--visibility", str(VISIBILITY_S), *flags,
    ]  # fmt: skip
    return start_process(argv, record.with_suffix(".log"), env=env)


def records(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def queue_is_empty(sqs: SQSFixture, queue_url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return all(got["Attributes"][n] == "0" for n in names)


def producer(sqs: SQSFixture, queue_url: str) -> orbit.Orbit:
    return orbit.Orbit(SQSTransport(queue_url, client=sqs.client))


def test_after_a_sigkill_a_fresh_worker_handles_every_message(
    sqs: SQSFixture, tmp_path: Path
) -> None:
    queue_url = sqs.create_queue("chaos")
    record = tmp_path / "record.txt"
    producer(sqs, queue_url).publish_many("work", [{"n": n} for n in range(60)])

    first = start_worker(sqs, queue_url, record, "--sleep", "0.2")
    try:
        assert wait_for(lambda: len(records(record)) >= 15, 30.0), record.with_suffix(".log")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        stop_process(first)
    done_before_kill = len(records(record))
    assert done_before_kill < 60

    second = start_worker(sqs, queue_url, record)
    try:
        assert wait_for(lambda: len(set(records(record))) == 60, 45.0)
        assert wait_for(lambda: queue_is_empty(sqs, queue_url), 10.0)
    finally:
        stop_process(second)

    counts = Counter(records(record))
    assert set(counts) == {f"done {n}" for n in range(60)}
    # At least once: only what was running at the kill (4 handlers) or finished but
    # not yet acked (the acker flushes every 50 ms) may have run twice.
    assert sum(counts.values()) - 60 <= 10


def test_a_message_that_kills_every_worker_still_reaches_the_dlq(
    sqs: SQSFixture, tmp_path: Path
) -> None:
    dlq_url = sqs.create_queue("chaos-dlq")
    queue_url = sqs.create_queue("chaos-poison")
    record = tmp_path / "record.txt"
    producer(sqs, queue_url).publish("poison", {"n": 0})
    dlq = SQSTransport(dlq_url, client=sqs.client)

    dead: list[orbit.Message] = []
    deadline = time.monotonic() + 50.0
    while not dead and time.monotonic() < deadline:
        worker = start_worker(sqs, queue_url, record, "--dlq-url", dlq_url, "--max-retries", "1")
        try:
            worker.wait(VISIBILITY_S + 5.0)  # it dies on the poison, or lives on
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_process(worker)
        dead = receive_until(dlq, 1, timeout=1.0)

    # max_retries=1: two attempts ran (and killed their worker); the third receive
    # (ApproximateReceiveCount 3) dead-letters it without running it.
    assert records(record) == ["poison", "poison"]
    assert len(dead) == 1
    assert dead[0].attributes[DLQ_ATTEMPTS_ATTR] == "3"
    assert queue_is_empty(sqs, queue_url)
