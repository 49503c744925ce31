"""An SQS outage while a worker runs: the endpoint resets every connection and
refuses new ones for a few seconds, then comes back with its queues as they were.
The poller backs off and resumes, and no message is lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

import taskorbit as orbit
from taskorbit.transports.sqs import SQSTransport
from tests.ledger import LedgerTransport, RunCounter
from tests.servers.outage import OutageProxy
from tests.servers.sqs import CREDENTIALS, REGION, SQSFixture

pytestmark = pytest.mark.integration

MESSAGES = 60  # moto slows down as a queue grows; this keeps every call fast


@pytest.fixture
def proxy(sqs: SQSFixture) -> Iterator[OutageProxy]:
    target = urlsplit(sqs.endpoint_url)
    assert target.hostname is not None and target.port is not None
    with OutageProxy(target.hostname, target.port) as proxy:
        yield proxy


def test_a_worker_rides_out_an_sqs_outage_and_loses_nothing(
    sqs: SQSFixture, proxy: OutageProxy
) -> None:
    queue_url = sqs.create_queue(f"outage-{uuid.uuid4().hex[:6]}")
    through_proxy = boto3.session.Session().client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        region_name=REGION,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=1),
        **CREDENTIALS,
    )
    transport = LedgerTransport(
        SQSTransport(queue_url, client=through_proxy, visibility_timeout=3, wait_time_s=1)
    )
    app = orbit.Orbit(transport, concurrency=4, poll_timeout=0.5, ack_interval_s=0.02)
    runs = RunCounter()

    @app.task("work")
    def work(n: int) -> None:
        runs.ran(n)
        time.sleep(0.01)

    orbit.Orbit(SQSTransport(queue_url, client=sqs.client)).publish_many(
        "work", list(range(MESSAGES))
    )
    try:
        app.start()
        deadline = time.monotonic() + 30
        while len(runs.counts()) < MESSAGES // 4:
            assert time.monotonic() < deadline, "the worker did not start consuming"
            time.sleep(0.01)
        proxy.cut()
        time.sleep(3.0)  # the outage itself
        proxy.restore()
        deadline = time.monotonic() + 60
        while len(runs.counts()) < MESSAGES or _left(sqs, queue_url) > 0:
            assert time.monotonic() < deadline, (
                f"{MESSAGES - len(runs.counts())} messages never ran, "
                f"{_left(sqs, queue_url)} still in the queue after the outage"
            )
            time.sleep(0.1)
    finally:
        app.stop(timeout=10)
        through_proxy.close()
    assert sorted(runs.counts()) == list(range(MESSAGES))
    assert app.stats()["errors"] >= 1  # the outage was seen, and counted
    transport.assert_clean(broker_outage=True)


def _left(sqs: SQSFixture, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return sum(int(got["Attributes"][n]) for n in names)
