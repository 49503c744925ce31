"""SQSTransport passes the shared transport contract against moto_server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from taskorbit.message import Message
from taskorbit.transports.sqs import SQSTransport
from tests.contract import BrokenEnvelope, TransportContract
from tests.servers.sqs import SQSFixture

pytestmark = pytest.mark.integration


def drain(transport: SQSTransport, timeout: float = 5.0) -> list[Message]:
    """Receive until the queue has nothing more (or ``timeout`` passed)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = transport.receive(10, timeout=1.0)
        if not page and got:
            break
        got += page
    return got


def raw_writer(sqs: SQSFixture, queue_url: str, body: str, **attributes: str) -> Callable[[], None]:
    """Send one message as a foreign or buggy producer would: straight through boto3."""

    def write() -> None:
        sqs.client.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        )

    return write


class TestSQSContract(TransportContract):
    @pytest.fixture
    def transport(
        self, sqs: SQSFixture, make_transport: Callable[..., SQSTransport]
    ) -> SQSTransport:
        dlq_url = sqs.create_queue("contract-dlq")
        return make_transport(sqs.create_queue("contract"), dlq_url=dlq_url)

    @pytest.fixture
    def read_dead_letters(
        self, transport: SQSTransport, make_transport: Callable[..., SQSTransport]
    ) -> Callable[[], list[Message]]:
        assert transport.dlq_url is not None
        dlq = make_transport(transport.dlq_url)
        return lambda: drain(dlq)

    @pytest.fixture
    def broken_envelopes(self, sqs: SQSFixture, transport: SQSTransport) -> list[BrokenEnvelope]:
        topic = {"taskorbit-topic": "contract.topic"}
        return [
            BrokenEnvelope(
                "an attempt that is not a number",
                raw_writer(sqs, transport.queue_url, "a", **topic, **{"taskorbit-attempt": "two"}),
                "taskorbit-attempt",
            ),
            BrokenEnvelope(
                "a base64 body that does not decode",
                raw_writer(
                    sqs,
                    transport.queue_url,
                    "not base64 at all!",
                    **topic,
                    **{"taskorbit-body-encoding": "base64"},
                ),
                "base64",
            ),
            BrokenEnvelope(
                "a not-before that is not a number",
                raw_writer(
                    sqs, transport.queue_url, "b", **topic, **{"taskorbit-not-before": "soon"}
                ),
                "taskorbit-not-before",
            ),
            BrokenEnvelope(
                "packed dead-letter facts that are not JSON",
                raw_writer(sqs, transport.queue_url, "c", **topic, **{"taskorbit-dlq": "{reason"}),
                "taskorbit-dlq",
            ),
        ]
