"""Pub/Sub workers killed with SIGKILL lose nothing: what they held comes back
after the ack deadline, and a message that crashes every worker still ends in the
DLQ topic because Pub/Sub counts its deliveries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskorbit.message import Message
from taskorbit.transports.pubsub import PubSubTransport
from tests.integration.pubsub.conftest import (  # noqa: F401
    PubSubAdmin,
    Resources,
    drain,
    pubsub,
    require_emulator,
)
from tests.servers.pubsub import PubSubServer

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

WORKER = Path(__file__).with_name("pubsub_chaos_worker.py")
ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 300


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(res: Resources, out: Path, *extra: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(WORKER), "--subscription", res.subscription]
        argv += ["--topic", res.topic, "--out", str(out), *extra]
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )
        log.close()
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def handled(out: Path) -> list[str]:
    return out.read_text().split() if out.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_worker_killed_mid_run_loses_nothing(
    pubsub: PubSubAdmin,  # noqa: F811
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    res = pubsub.resources(ack_deadline_s=10)
    out = tmp_path / "handled.txt"
    pubsub.transport(res).publish([Message("work", str(n).encode()) for n in range(MESSAGES)])
    first = start_worker(res, out, "--sleep", "0.05")
    wait_for(lambda: len(handled(out)) >= MESSAGES // 4, 60.0, "the first worker to get going")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert len(set(handled(out))) < MESSAGES, "the first worker finished before it was killed"
    # A fresh worker: what the dead one held comes back once its ack deadline ends.
    second = start_worker(res, out)
    wait_for(lambda: len(set(handled(out))) == MESSAGES, 60.0, "every message to be handled")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30.0) == 0
    assert set(handled(out)) == {str(n) for n in range(MESSAGES)}


def test_a_message_that_kills_every_worker_reaches_the_dlq_topic(
    pubsub: PubSubAdmin,  # noqa: F811
    pubsub_emulator: PubSubServer,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    require_emulator(pubsub_emulator, "delivery_attempt")
    res = pubsub.resources(ack_deadline_s=10, dead_letter_policy=True, max_delivery_attempts=20)
    out = tmp_path / "handled.txt"
    PubSubTransport(res.subscription, res.topic).publish([Message("poison", b"13")])
    crashes = 0
    dead: list[Message] = []
    reader = pubsub.dead_letter_reader(res)
    # max_retries=0: the first delivery crashes the worker; the second (counted by
    # Pub/Sub, not by the dead process) goes to the DLQ topic without running.
    while not dead and crashes < 3:
        worker = start_worker(res, out, "--dlq-topic", res.dlq_topic, "--max-retries", "0")
        while worker.poll() is None and not dead:
            dead = drain(reader, expect=1, timeout=1.0)
        if worker.poll() is not None:
            crashes += 1
    assert handled(out) == ["poison", "13"]
    assert crashes == 1
    assert [(m.topic, m.attributes["taskorbit-dlq-attempts"]) for m in dead] == [("poison", "2")]
