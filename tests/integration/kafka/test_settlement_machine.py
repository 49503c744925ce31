"""The settlement state machine (tests/settlement_machine.py) against librdkafka's
mock cluster: per-partition commits, retry topics, the DLQ topic, hand-backs kept
below the commit across stop and restart, and broken records from a raw producer."""

from __future__ import annotations

import pytest

import taskorbit as orbit
from taskorbit.message import ATTEMPT_ATTR, TOPIC_ATTR
from taskorbit.transports.kafka import KafkaTransport
from tests.integration.kafka.conftest import KafkaKit
from tests.settlement_machine import Backend, run_machine

pytestmark = pytest.mark.integration


def test_the_worker_settles_every_message_exactly_once_on_kafka(
    kafka_server: str, tmp_path: object
) -> None:
    kits: list[KafkaKit] = []

    def make_transport(ordered: bool) -> orbit.Transport:
        # The previous example is over (its teardown stopped its worker): close its
        # consumer, or every example and shrink step would leave one polling.
        while kits:
            kits.pop().close()
        kit = KafkaKit(kafka_server, tmp_path)  # type: ignore[arg-type]
        kits.append(kit)
        return kit.transport(ordered=ordered, retry_delays=(0.01, 1.0))

    def write_broken(transport: orbit.Transport) -> None:
        assert isinstance(transport, KafkaTransport)
        kit = next(k for k in kits if transport in k.made)  # the current example's
        kit.produce_raw(b"{}", [(TOPIC_ATTR, b"job"), (ATTEMPT_ATTR, b"abc")])

    try:
        run_machine(
            Backend(
                name="kafka",
                make_transport=make_transport,
                write_broken=write_broken,
                examples=5,
                drain_timeout_s=30.0,
                quiet_s=0.5,
            )
        )
    finally:
        for kit in kits:
            kit.close()
