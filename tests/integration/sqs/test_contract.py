"""SQSTransport passes the shared transport contract against moto_server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskorbit.message import Message
from taskorbit.transports.sqs import SQSTransport
from tests.contract import TransportContract, receive_until
from tests.servers.sqs import SQSFixture

pytestmark = pytest.mark.integration


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
        return lambda: receive_until(dlq, 1, timeout=5.0)
