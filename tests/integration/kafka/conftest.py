"""Fixtures of the Kafka integration tests: one mock cluster per session (started by
tests.servers.kafka), and fresh topics and groups for every test (the mock has no
reset and no AdminClient)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from taskorbit.message import Message
from taskorbit.transports.kafka import KafkaTransport
from taskorbit.transports.kafka.dlq import dead_letter_queue
from tests.servers.kafka import TEST_CONSUMER_CONFIG

#: Short rungs, so that delayed tests take seconds, not minutes.
TEST_RETRY_DELAYS = (0.2, 1.0)


class KafkaKit:
    """Makes transports on unique topics and groups, and writes raw records."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.topic = f"t-{uuid.uuid4().hex[:10]}"
        self.made: list[KafkaTransport] = []
        self._raw: Producer | None = None

    def transport(self, **options: Any) -> KafkaTransport:
        options.setdefault("topic", self.topic)
        options.setdefault("group", f"g-{uuid.uuid4().hex[:8]}")
        options.setdefault("retry_delays", TEST_RETRY_DELAYS)
        options.setdefault("attempts_dir", str(self.workdir / "attempts"))
        options["consumer_config"] = {**TEST_CONSUMER_CONFIG, **options.get("consumer_config", {})}
        transport = KafkaTransport(self.bootstrap, **options)
        self.made.append(transport)
        return transport

    def produce_raw(
        self, value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = None
    ) -> None:
        """Write one record as a foreign or buggy producer would."""
        if self._raw is None:
            self._raw = Producer({"bootstrap.servers": self.bootstrap})
        self._raw.produce(self.topic, value, key, headers=headers)
        assert self._raw.flush(10) == 0

    def dead_letters(self, transport: KafkaTransport) -> list[Message]:
        return [letter.message for letter in dead_letter_queue(transport).list(limit=1000)]

    def close(self) -> None:
        for transport in self.made:
            transport.close()
        if self._raw is not None:
            self._raw.flush(5)


@pytest.fixture
def kafka(kafka_server: str, tmp_path: Path) -> Iterator[KafkaKit]:
    kit = KafkaKit(kafka_server, tmp_path)
    yield kit
    kit.close()


def wait_assigned(
    transport: KafkaTransport, count: int | None = None, timeout: float = 20.0
) -> None:
    """Join the group and wait until ``count`` partitions of the main topic are this
    transport's (any, when None). Never a fixed sleep: the mock's rebalances vary."""
    transport.subscribe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [tp for tp in transport.assignment() if tp[0] == transport.topic]
        if (count is None and mine) or (count is not None and len(mine) == count):
            return
        time.sleep(0.05)
    raise AssertionError(f"{transport!r} holds {transport.assignment()} after {timeout} s")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
