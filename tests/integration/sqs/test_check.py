"""SQSTransport.check() and describe(): GetQueueAttributes of the queue (issue 11)."""

from __future__ import annotations

from collections.abc import Callable

import boto3
import pytest
from botocore.config import Config

from taskorbit.errors import TransportConnectionError, TransportError
from taskorbit.transports.sqs import SQSTransport
from tests.servers import free_port
from tests.servers.sqs import CREDENTIALS, REGION, SQSFixture

pytestmark = pytest.mark.integration


def test_check_answers_for_an_existing_queue(
    sqs: SQSFixture, make_transport: Callable[..., SQSTransport]
) -> None:
    url = sqs.create_queue("checked")
    transport = make_transport(url)
    transport.check(timeout=2.0)
    assert transport.describe() == f"SQS queue {url}"


def test_check_of_a_queue_that_does_not_exist_says_so(
    sqs: SQSFixture, make_transport: Callable[..., SQSTransport]
) -> None:
    url = sqs.create_queue("gone")
    transport = make_transport(url)
    sqs.client.delete_queue(QueueUrl=url)
    with pytest.raises(TransportError, match="does not exist"):
        transport.check(timeout=2.0)


def test_check_of_an_endpoint_nobody_listens_on_names_the_queue() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        **CREDENTIALS,
    )
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
    transport = SQSTransport(url, client=client)
    assert transport.describe() == f"SQS queue {url} via {endpoint}"
    with pytest.raises(TransportConnectionError) as caught:
        transport.check(timeout=2.0)
    assert str(caught.value).startswith(f"cannot connect to SQS queue {url} via {endpoint} (")
    assert "Could not connect to the endpoint URL" in str(caught.value)
    client.close()
