"""Fixtures of the SQS integration tests: a private moto_server per session, reset
before every test, and transports on fresh queues."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskorbit.transports.sqs import SQSTransport
from tests.servers.sqs import SQSFixture

# A short visibility keeps lease tests fast; the contract's lease test holds a
# message for 2.5 visibilities.
VISIBILITY_S = 2.0


@pytest.fixture
def make_transport(sqs: SQSFixture) -> Iterator[Callable[..., SQSTransport]]:
    """Build transports on the emulator; closes them after the test."""
    clients: list[Any] = []

    def make(queue_url: str, **options: Any) -> SQSTransport:
        options.setdefault("visibility_timeout", VISIBILITY_S)
        clients.append(sqs.server.client())
        return SQSTransport(queue_url, client=clients[-1], **options)

    yield make
    for client in clients:
        client.close()
