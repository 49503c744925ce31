"""A Redis outage while a worker runs: every connection reset, new ones refused for
a few seconds, then the same server back. The poller backs off and resumes, acks
that failed are retried or left to the lease, and no message is lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import taskorbit as orbit
from taskorbit.transports.redis.streams import RedisStreamsTransport
from tests.ledger import LedgerTransport, RunCounter
from tests.servers.outage import OutageProxy

pytestmark = pytest.mark.integration

MESSAGES = 300


@pytest.fixture
def proxy(redis_url: str) -> Iterator[OutageProxy]:
    target = urlsplit(redis_url)
    assert target.hostname is not None and target.port is not None
    with OutageProxy(target.hostname, target.port) as proxy:
        yield proxy


def test_a_worker_rides_out_a_redis_outage_and_loses_nothing(
    redis_url: str, proxy: OutageProxy
) -> None:
    stream = f"outage-{uuid.uuid4().hex[:6]}"
    producer = RedisStreamsTransport(redis_url, stream=stream)
    transport = LedgerTransport(
        RedisStreamsTransport(f"redis://127.0.0.1:{proxy.port}/0", stream=stream, lease_s=2.0)
    )
    app = orbit.Orbit(transport, concurrency=4, poll_timeout=0.2, ack_interval_s=0.02)
    runs = RunCounter()

    @app.task("work")
    def work(n: int) -> None:
        runs.ran(n)
        time.sleep(0.002)

    publisher = orbit.Orbit(producer)
    publisher.publish_many("work", list(range(MESSAGES)))
    try:
        app.start()
        deadline = time.monotonic() + 20
        while len(runs.counts()) < MESSAGES // 3:
            assert time.monotonic() < deadline, "the worker did not start consuming"
            time.sleep(0.01)
        proxy.cut()
        time.sleep(3.0)  # the outage itself: what is measured is how the worker rides it
        proxy.restore()
        deadline = time.monotonic() + 60
        while len(runs.counts()) < MESSAGES or _pending(producer) > 0:
            assert time.monotonic() < deadline, (
                f"{MESSAGES - len(runs.counts())} messages never ran, "
                f"{_pending(producer)} still pending after the outage"
            )
            time.sleep(0.05)
    finally:
        app.stop(timeout=10)
        producer.close()
    assert sorted(runs.counts()) == list(range(MESSAGES))
    stats = app.stats()
    assert stats["errors"] >= 1  # the outage was seen, and counted
    assert stats["completed"] >= MESSAGES
    transport.assert_clean(broker_outage=True)


def _pending(transport: RedisStreamsTransport) -> int:
    info = transport.client.xpending(transport.stream, transport.group)
    return int(info["pending"]) + int(transport.client.xlen(transport.stream) > 0)
