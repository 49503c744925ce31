"""A private Kafka-protocol server for the test session: librdkafka's mock cluster
in a process of its own (tests/servers/kafka_mock_server.py), on 127.0.0.1.

Use from a conftest or a test module::

    from tests.servers.kafka import kafka_server  # noqa: F401

``kafka_server`` (session) is the bootstrap list. The mock has no AdminClient and
no reset: tests make unique topic and group names, and topics come into being on
first use (``allow.auto.create.topics`` in :data:`TEST_CONSUMER_CONFIG`). The
group's first assignment is quick (``-d 100``); a member that leaves hands its
partitions over after ``session.timeout.ms`` - 1 s, so the tests' consumers use
2 s sessions. Never sleep for a rebalance: wait for the assignment.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import start_process, stop_process, unavailable, wait_until

INSTALL = ".venv/bin/python -m pip install confluent-kafka"
SCRIPT = Path(__file__).with_name("kafka_mock_server.py")
BROKERS = 3
#: What every test consumer adds to the transport's defaults.
TEST_CONSUMER_CONFIG: dict[str, Any] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
    "allow.auto.create.topics": True,
    "topic.metadata.refresh.interval.ms": 2000,
}


def start_kafka(
    workdir: Path, *, brokers: int = BROKERS, topics: list[str] | None = None
) -> tuple[str, Any]:
    """Start the mock cluster in ``workdir`` (``topics`` as ``name:partitions``, made
    before it answers); return its bootstrap list and process."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        unavailable("confluent-kafka (whose wheel brings librdkafka's mock cluster)", INSTALL)
    log = workdir / "kafka.log"
    proc = start_process(
        [
            sys.executable, str(SCRIPT), "-b", str(brokers), "-d", "100",
            *(arg for topic in topics or () for arg in ("-t", topic)),
        ],
        log,
    )  # fmt: skip

    def bootstrap() -> str | None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("BOOTSTRAP="):
                return line.partition("=")[2].strip()
        return None

    try:
        wait_until(lambda: bootstrap() is not None, 30.0, "kafka mock server", log)
    except BaseException:
        stop_process(proc)
        raise
    found = bootstrap()
    assert found is not None
    return found, proc


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a private mock Kafka cluster, started once per session."""
    bootstrap, proc = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield bootstrap
    finally:
        stop_process(proc)
