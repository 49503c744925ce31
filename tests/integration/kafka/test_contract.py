"""KafkaTransport passes the shared transport contract against librdkafka's mock
cluster: broken records written by a raw producer, and a second consumer group on
the same topic that never sees this group's retries."""

from __future__ import annotations

import pytest

from taskorbit.message import ATTEMPT_ATTR, NOT_BEFORE_ATTR, TOPIC_ATTR
from taskorbit.transports.kafka import KafkaTransport
from tests.contract import BrokenEnvelope, TransportContract
from tests.integration.kafka.conftest import KafkaKit

pytestmark = pytest.mark.integration


class TestKafkaContract(TransportContract):
    @pytest.fixture
    def transport(self, kafka: KafkaKit) -> KafkaTransport:
        return kafka.transport()

    @pytest.fixture
    def read_dead_letters(self, kafka: KafkaKit, transport: KafkaTransport) -> object:
        return lambda: kafka.dead_letters(transport)

    @pytest.fixture
    def broken_envelopes(self, kafka: KafkaKit) -> list[BrokenEnvelope]:
        topic = (TOPIC_ATTR, b"contract.topic")

        def record(value: bytes | None, *headers: tuple[str, bytes]) -> object:
            return lambda: kafka.produce_raw(value, [topic, *headers])

        return [
            BrokenEnvelope(
                "not-before inf", record(b"x", (NOT_BEFORE_ATTR, b"inf")), NOT_BEFORE_ATTR
            ),
            BrokenEnvelope("attempt abc", record(b"x", (ATTEMPT_ATTR, b"abc")), ATTEMPT_ATTR),
            BrokenEnvelope("header not UTF-8", record(b"x", ("color", b"\xff\xfe")), "color"),
            BrokenEnvelope("null value", record(None), "tombstone"),
        ]

    @pytest.fixture
    def second_subscriber(self, kafka: KafkaKit) -> KafkaTransport:
        return kafka.transport()


def test_a_malformed_record_is_dead_lettered_with_its_headers_as_received(
    kafka: KafkaKit,
) -> None:
    transport = kafka.transport()
    kafka.produce_raw(b"payload", [(TOPIC_ATTR, b"t"), (ATTEMPT_ATTR, b"abc"), ("k", b"v")])
    from tests.contract import receive_until

    got = receive_until(transport, 1)
    assert got[0].malformed is not None and ATTEMPT_ATTR in got[0].malformed
    transport.dead_letter(got[0], f"malformed message: {got[0].malformed}")
    dead = kafka.dead_letters(transport)
    assert [m.body for m in dead] == [b"payload"]
    assert dead[0].attributes["k"] == "v"
    assert dead[0].attributes["taskorbit-source-offset"] == str(got[0].receipt.offset)
