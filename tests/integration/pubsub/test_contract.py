"""PubSubTransport passes the shared transport contract against the emulator, in both
of its ways of counting attempts: Pub/Sub's delivery_attempt (the subscription has a
dead-letter policy) and taskorbit's own attribute (it has none)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskorbit.message import ATTEMPT_ATTR, NOT_BEFORE_ATTR, TOPIC_ATTR
from taskorbit.transports.pubsub import PubSubTransport
from tests.contract import BrokenEnvelope, TransportContract
from tests.integration.pubsub.conftest import PubSubAdmin, ReadDeadLetters, Resources, read_all

pytestmark = pytest.mark.integration

# The dead-letter policy forwards only after this many deliveries, beyond anything
# the contract does, so that the transport's own DLQ topic is what is tested.
POLICY_ATTEMPTS = 20


class TestPubSubContract(TransportContract):
    @pytest.fixture(params=["delivery-attempt", "attribute-count"])
    def counting(self, request: pytest.FixtureRequest) -> str:
        if request.param == "delivery-attempt":
            request.getfixturevalue("needs_emulator")
        return str(request.param)

    @pytest.fixture
    def resources(self, pubsub: PubSubAdmin, counting: str) -> Resources:
        return pubsub.resources(
            dead_letter_policy=counting == "delivery-attempt", max_delivery_attempts=POLICY_ATTEMPTS
        )

    @pytest.fixture
    def transport(self, pubsub: PubSubAdmin, resources: Resources) -> PubSubTransport:
        return pubsub.transport(resources, dlq_topic=resources.dlq_topic)

    @pytest.fixture
    def read_dead_letters(self, pubsub: PubSubAdmin, resources: Resources) -> ReadDeadLetters:
        reader = pubsub.dead_letter_reader(resources)
        return lambda: read_all(reader)

    @pytest.fixture
    def broken_envelopes(self, pubsub: PubSubAdmin, resources: Resources) -> list[BrokenEnvelope]:
        def raw(**attributes: str) -> Callable[[], None]:
            attributes.setdefault(TOPIC_ATTR, "contract.topic")
            return lambda: pubsub.publish_raw(resources, b"broken", **attributes)

        return [
            BrokenEnvelope("not-before inf", raw(**{NOT_BEFORE_ATTR: "inf"}), NOT_BEFORE_ATTR),
            BrokenEnvelope("not-before nan", raw(**{NOT_BEFORE_ATTR: "nan"}), NOT_BEFORE_ATTR),
            BrokenEnvelope("not-before soon", raw(**{NOT_BEFORE_ATTR: "soon"}), NOT_BEFORE_ATTR),
            BrokenEnvelope("attempt two", raw(**{ATTEMPT_ATTR: "two"}), ATTEMPT_ATTR),
            BrokenEnvelope("attempt 0", raw(**{ATTEMPT_ATTR: "0"}), ATTEMPT_ATTR),
            BrokenEnvelope("attempt -1", raw(**{ATTEMPT_ATTR: "-1"}), ATTEMPT_ATTR),
        ]

    @pytest.fixture
    def second_subscriber(self, pubsub: PubSubAdmin, resources: Resources) -> PubSubTransport:
        return pubsub.transport(pubsub.second_subscription(resources))

    def test_extend_keeps_a_message_invisible_past_its_lease(  # type: ignore[override]
        self, transport: PubSubTransport, counting: str, pubsub: PubSubAdmin
    ) -> None:
        # 25 s at Pub/Sub's smallest ack deadline, and the same RPC in both modes.
        if counting != "delivery-attempt" and pubsub.server.kind == "emulator":
            pytest.skip("extend does not depend on how attempts are counted")
        super().test_extend_keeps_a_message_invisible_past_its_lease(transport)
