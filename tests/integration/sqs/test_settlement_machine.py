"""The settlement state machine (tests/settlement_machine.py) against moto_server:
SQS with visibility delays, re-sent copies that carry attempts, and a DLQ queue."""

from __future__ import annotations

import uuid

import pytest

import taskorbit as orbit
from taskorbit.transports.sqs import SQSTransport
from tests.servers.sqs import SQSFixture
from tests.settlement_machine import Backend, run_machine

pytestmark = pytest.mark.integration


def test_the_worker_settles_every_message_exactly_once_on_sqs(sqs: SQSFixture) -> None:
    def make_transport(ordered: bool) -> orbit.Transport:
        name = f"machine-{uuid.uuid4().hex[:8]}"
        return SQSTransport(
            sqs.create_queue(name),
            dlq_url=sqs.create_queue(f"{name}-dlq"),
            client=sqs.client,
            visibility_timeout=2,
            wait_time_s=1,
        )

    def write_broken(transport: orbit.Transport) -> None:
        assert isinstance(transport, SQSTransport)
        sqs.client.send_message(
            QueueUrl=transport.queue_url,
            MessageBody="{}",
            MessageAttributes={
                "taskorbit-topic": {"DataType": "String", "StringValue": "job"},
                "taskorbit-attempt": {"DataType": "String", "StringValue": "two"},
            },
        )

    run_machine(
        Backend(
            name="sqs",
            make_transport=make_transport,
            write_broken=write_broken,
            examples=6,
            ordering=False,  # a standard queue; FIFO order has its own tests
            drain_timeout_s=60.0,
            quiet_s=1.0,
        )
    )
