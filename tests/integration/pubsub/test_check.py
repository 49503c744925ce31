"""PubSubTransport.check() and describe(): get_subscription (issue 11)."""

from __future__ import annotations

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1

from taskorbit.errors import TransportConnectionError, TransportError
from taskorbit.transports.pubsub import PubSubTransport
from tests.integration.pubsub.conftest import PubSubAdmin
from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_check_answers_for_an_existing_subscription(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    transport.check(timeout=5.0)
    assert transport.describe() == f"Pub/Sub subscription {res.subscription} at {pubsub.server}"


def test_check_of_a_missing_subscription_says_to_create_it(pubsub: PubSubAdmin) -> None:
    res = pubsub.resources()
    transport = pubsub.transport(res)
    pubsub.subscriber.delete_subscription(subscription=res.subscription)
    with pytest.raises(TransportError, match="not found; create it"):
        transport.check(timeout=5.0)


def test_check_of_an_endpoint_nobody_listens_on_names_it_and_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)  # it would win over api_endpoint
    address = f"127.0.0.1:{free_port()}"
    subscriber = pubsub_v1.SubscriberClient(
        client_options=ClientOptions(api_endpoint=address),
        credentials=AnonymousCredentials(),
    )
    subscription = "projects/taskorbit-test/subscriptions/jobs"
    transport = PubSubTransport(
        subscription, "projects/taskorbit-test/topics/jobs", subscriber=subscriber
    )
    with pytest.raises(TransportConnectionError) as caught:
        transport.check(timeout=2.0)
    assert str(caught.value) == (
        f"cannot connect to Pub/Sub subscription {subscription} at {address} (Connection refused)"
    )
    transport.close()
    subscriber.close()
